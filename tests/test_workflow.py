"""The Snakemake workflow's configuration, schema, lint and dry runs (fast: no job runs).

Every Snakemake call runs in a temporary copy of the workflow files, so the repository's
working tree gets no .snakemake/, logs or results from the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("config/config.yaml", "config/quickstart.yaml", "config/mnist_mirror.yaml", "config/mnist_cpu.yaml",
           "config/flower_rar_sarkar.yaml", "config/sweep_digits.yaml")
# What a copy of the workflow needs besides the installed package.
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs", "dvc.yaml", "params.yaml",
                  ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "pyproject.toml",
                  "src/attrrob")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None,
                                reason="snakemake is not installed (pip install -e '.[workflow]')")


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow's files (not data, results or caches) into `dest`; return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=_IGNORED)
        else:
            shutil.copy2(source, target)
    return dest


def tool(name: str) -> str:
    """The executable beside this Python (the project's virtualenv), else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name) or name


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    # Jobs call `attrrob`, `papermill`, `snakemake` by name: find them beside this Python even
    # when its virtualenv is not activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    full_env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", **(env or {})}
    # Its own process group, killed whole on a timeout: `dvc repro` or `snakemake` killed alone
    # would leave their jobs running and slowing every later test.
    with subprocess.Popen(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def snakemake(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run([tool("snakemake"), *args], cwd, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run, as {rule: count}."""
    counts = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def validated(config: dict) -> dict:
    from snakemake.utils import validate

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_are_valid(path):
    config = validated(yaml.safe_load((REPO / path).read_text()))
    assert config["datasets"] and config["methods"] and config["attacks"][0] == "topk"
    from attrrob import config as package_config

    package_config.check_all_settings(REPO / path, config["datasets"], config["methods"], config["attacks"])


def test_paper_grid_is_four_datasets_by_seven_methods_on_gpus():
    config = validated(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    from attrrob.registry import METHODS

    assert config["datasets"] == ["mnist", "fashion_mnist", "gtsrb", "flower"]
    assert tuple(config["methods"]) == METHODS
    assert config["resources"]["gpu"] is True
    assert config["hyperparameters"] == {}  # the spec's settings are the package defaults


def test_quickstart_hyperparameters_pass_the_package_checks():
    from attrrob.registry import METHODS
    from attrrob.config import attack_settings, read_user_config, train_settings

    path = REPO / "config/quickstart.yaml"
    assert set(read_user_config(path)) == {"digits"}
    for method in METHODS:
        settings = train_settings("digits", method, path)
        assert settings["steps"] <= 500  # small budgets: the quickstart must stay quick
    assert attack_settings("digits", path)["iterations"] <= 50


def test_schema_fills_every_default():
    config = validated({})
    assert config["attacks"] == ["topk"]
    assert config["data"] == {"mirror": None}
    assert config["device"] == "auto" and config["train_steps"] is None
    assert config["evaluation"] == {"num_examples": None, "save_examples": 8}
    assert config["resources"]["gpu"] is False
    assert set(config["resources"]["train"]) == {"threads", "mem_mb", "runtime"}
    assert config["hyperparameters"] == {}


BAD_CONFIGS = {
    "unknown top-level key": ({"datsets": ["digits"]}, "bad.yaml: unknown top-level key 'datsets'"),
    "unknown nested key": ({"evaluation": {"num_exemples": 5}}, "evaluation: Additional properties are not allowed ('num_exemples' was unexpected)"),
    "wrong type": ({"train_steps": "many"}, "train_steps: 'many' is not of type"),
    "unknown data set": ({"datasets": ["cifar10"]}, "datasets.0: unknown data set 'cifar10' (known: mnist,"),
    "unknown method": ({"methods": ["natural", "trades"]}, "methods.1: unknown method 'trades' (known: natural, madry"),
    "bad device": ({"device": "tpu"}, "device: 'tpu' does not match"),
    "negative train_steps": ({"train_steps": 0}, "train_steps: 0 is less than the minimum of 1"),
    "swept value out of range": ({"sweeps": {"mnist": {"sarkar": {"train": {"lam": [0.1, -2.0]}}}}},
                                 "sweeps.mnist.sarkar.train.lam: must be ≥ 0, got -2.0"),
    "swept value not a list": ({"sweeps": {"mnist": {"sarkar": {"train": {"lam": 0.1}}}}},
                               "sweeps.mnist.sarkar.train.lam: 0.1 is not of type 'array'"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_is_refused_naming_the_key(workdir, tmp_path, case):
    """One line naming the file or key path, not Snakemake's dump of the whole schema."""
    body, expected = BAD_CONFIGS[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    result = snakemake(workdir, "-n", "--configfile", str(bad))
    text = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in text.splitlines() if line.startswith("attrrob: error:")]
    assert len(errors) == 1 and expected in errors[0], text
    assert "Failed validating" not in text and "Traceback" not in text


def test_hyperparameters_from_the_command_line_count_like_a_config_file(workdir):
    import json

    result = snakemake(workdir, "-n", "--configfile", "config/quickstart.yaml",
                       "--config", "hyperparameters={digits: {attack: {iterations: 3, eps: 0.05}}}")
    assert result.returncode == 0, result.stdout + result.stderr
    settings = json.loads((workdir / "results/seed~0/digits/sarkar/attack_topk/settings.json").read_text())
    assert settings["iterations"] == 3 and settings["eps"] == 0.05 and settings["ig_steps"] == 20
    # `attrrob prepare` still reads one config file: its settings given elsewhere are refused.
    refused = snakemake(workdir, "-n", "--configfile", "config/quickstart.yaml",
                        "--config", "hyperparameters={digits: {prepare: {test_fraction: 0.3}}}")
    assert refused.returncode != 0
    assert "'hyperparameters.digits.prepare' must come from one config file" in refused.stdout + refused.stderr


def test_env_pins_agree():
    """envs/attrrob.yaml (conda) pins exactly what envs/requirements.txt (pip) pins."""
    pip_lines = [line.strip() for line in (REPO / "envs/requirements.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    env = yaml.safe_load((REPO / "envs/attrrob.yaml").read_text())
    conda_pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert conda_pip == pip_lines
    assert all("==" in line for line in pip_lines)


# --------------------------------------------------------------------------- Snakemake


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint", "--configfile", "config/quickstart.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_is_clean():
    result = run([tool("snakefmt"), "--check", "."], REPO)
    assert result.returncode == 0, result.stdout + result.stderr


EXPECTED_JOBS = {
    # config: (data sets, methods, attacks)
    "config/config.yaml": (4, 7, 1),
    "config/quickstart.yaml": (1, 7, 2),  # top-k and the noise control
    "config/mnist_mirror.yaml": (1, 7, 1),
    "config/mnist_cpu.yaml": (1, 5, 3),  # the paper's top-k attack, its topk_k75 variant, the noise control
    "config/flower_rar_sarkar.yaml": (1, 7, 1),
    "config/sweep_digits.yaml": (1, 2, 1),
}
# Jobs a config's sweeps add: 3 values of Sarkar's λ, each trained and evaluated on test, and on
# validation for the selection.
SWEEP_JOBS = {"config/sweep_digits.yaml": {"train": 3, "evaluate_accuracy": 3, "evaluate_attack": 3,
                                           "evaluate_validation_accuracy": 3, "evaluate_validation_attack": 3,
                                           "select": 1},
              # λ ∈ {0.1, 0.5, 2.5} at seed 0, each attacked by the 3 test attacks for the sensitivity table.
              "config/mnist_cpu.yaml": {"train": 3, "evaluate_accuracy": 3, "evaluate_attack": 9,
                                        "evaluate_validation_accuracy": 3, "evaluate_validation_attack": 3,
                                        "select": 1}}


@pytest.mark.parametrize("path", CONFIGS)
def test_dry_run_schedules_the_whole_pipeline(workdir, path):
    result = snakemake(workdir, "-n", "--configfile", path)
    assert result.returncode == 0, result.stdout + result.stderr
    datasets, methods, attacks = EXPECTED_JOBS[path]
    runs = datasets * methods * len(yaml.safe_load((REPO / path).read_text()).get("seeds", [0]))
    expected = {
        "download": datasets, "prepare": datasets, "train": runs,
        "evaluate_accuracy": runs, "evaluate_attack": runs * attacks,
        "report_summary": 1, "report_dataset": datasets, "collect_results": 1, "all": 1,
    }
    for rule, count in SWEEP_JOBS.get(path, {}).items():
        expected[rule] = expected.get(rule, 0) + count
    assert job_counts(result.stdout + result.stderr) == expected


def test_commands_carry_config_mirror_and_gpu_requests(workdir):
    mirror = snakemake(workdir, "-n", "-p", "--configfile", "config/mnist_mirror.yaml")
    text = mirror.stdout + mirror.stderr
    assert "--mirror ../shared/data/mnist" in text
    assert "attrrob train --settings results/seed~0/mnist/sarkar/settings.json --dataset mnist --method sarkar" in text
    assert "--checkpoint-dir checkpoints/mnist/sarkar" in text
    assert "gpu=1" not in text

    paper = snakemake(workdir, "-n", "-p")  # config/config.yaml: GPUs requested
    text = paper.stdout + paper.stderr
    assert "--mirror" not in text
    train_jobs = [block for block in text.split("\n\n") if "rule train:" in block]
    assert len(train_jobs) == 28 and all("gpu=1" in block for block in train_jobs)


def test_mirror_mapping_applies_per_dataset(workdir, tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump({"datasets": ["mnist", "digits"], "methods": ["natural"],
                                      "data": {"mirror": {"mnist": "/mirrors/mnist"}}}))
    result = snakemake(workdir, "-n", "-p", "--configfile", str(config))
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "--dataset mnist --out data/raw/mnist --mirror /mirrors/mnist" in text
    assert re.search(r"--dataset digits --out data/raw/digits\s+>", text)


def test_download_without_network_or_mirror_says_how_to_set_the_mirror(workdir, tmp_path):
    """No network (a proxy that refuses connections) and no mirror: the job fails saying how to fix it."""
    dead_proxy = "http://127.0.0.1:9"
    config = tmp_path / "no_mirror.yaml"
    config.write_text(yaml.safe_dump({"datasets": ["mnist"], "data": {"mirror": None}}))
    result = run([tool("snakemake"), "--cores", "1", "--show-failed-logs", "data/raw/mnist",
                  "--configfile", str(config)],
                 workdir, env={"http_proxy": dead_proxy, "https_proxy": dead_proxy, "no_proxy": ""},
                 timeout=180)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "set data.mirror in the workflow config" in text
    assert not (workdir / "data/raw/mnist").exists()


def _collect_results_module():
    from attrrob.cli import collect_results

    return collect_results


def test_readme_results_section_is_filled_between_markers(tmp_path):
    collect = _collect_results_module()
    readme = tmp_path / "README.md"
    shipped = (REPO / "README.md").read_text(encoding="utf-8")
    readme.write_text(shipped, encoding="utf-8")
    for table in ("| a | b |\n|---|---|\n| 1 | 2 |\n", "| a | b |\n|---|---|\n| 3 | 4 |\n"):
        collect.fill_readme(readme, table)  # twice: refilling replaces, never appends
        text = readme.read_text(encoding="utf-8")
        start, end = text.index(collect.README_START), text.index(collect.README_END)
        assert text[start:end] == f"{collect.README_START}\n{table}"
        assert text[:start] == shipped[:shipped.index(collect.README_START)]
        assert text[end:] == shipped[shipped.index(collect.README_END):]


def test_readme_without_markers_is_an_error(tmp_path):
    from attrrob.errors import AttrrobError

    collect = _collect_results_module()
    readme = tmp_path / "README.md"
    readme.write_text("# no section\n")
    with pytest.raises(AttrrobError, match="results-table:start"):
        collect.fill_readme(readme, "| x |\n")
