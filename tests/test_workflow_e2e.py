"""End to end: the offline quickstart through `dvc repro`, its HTML reports, and the DVC promise.

In a temporary git repository holding a copy of the workflow: `dvc repro` runs the quickstart
(digits, all 7 methods) from download to reports; the reports hold the tables; `dvc commit` +
`dvc push` store data, models and checkpoints in the local remote; a fresh clone that runs only
`dvc pull` gets a dry run that schedules no download, preparation, training or evaluation, and
regenerates the reports from the pulled results. Finally a report whose notebook fails leaves
no HTML behind. Nothing is written into the repository itself. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import copy_workflow, job_counts, run, snakemake, tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(not Path(tool("snakemake")).exists() and shutil.which("snakemake") is None,
                       reason="snakemake is not installed (pip install -e '.[workflow]')"),
    pytest.mark.skipif(not Path(tool("dvc")).exists() and shutil.which("dvc") is None,
                       reason="dvc is not installed (pip install -e '.[workflow]')"),
]

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "attrrob test", "GIT_AUTHOR_EMAIL": "test@attrrob.invalid",
                "GIT_COMMITTER_NAME": "attrrob test", "GIT_COMMITTER_EMAIL": "test@attrrob.invalid"}
QUICKSTART_LIMIT_S = 15 * 60  # the target is 10 minutes on 2 cores; this bound catches regressions


def checked(args: list[str], cwd: Path, timeout: float = 600) -> str:
    result = run(args, cwd, env=GIT_IDENTITY, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-6000:]}"
    return output


def git(cwd: Path, *args: str) -> str:
    return checked(["git", *args], cwd)


def dvc(cwd: Path, *args: str, timeout: float = 600) -> str:
    return checked([tool("dvc"), *args], cwd, timeout=timeout)


def report_text(path: Path) -> str:
    assert path.is_file(), f"{path} was not written"
    return html.unescape(path.read_text(encoding="utf-8"))


def assert_reports_hold_the_tables(root: Path, methods: list[str]) -> None:
    from attrrob.report import METRICS, method_name

    for name in ("summary", "digits"):
        text = report_text(root / "reports" / f"{name}.html")
        for metric in METRICS.values():
            assert metric.label in text, f"{name}.html lacks the column {metric.label!r}"
        for method in methods:
            assert method_name(method) in text, f"{name}.html lacks the method {method!r}"
        assert "<table" in text
        assert "Traceback" not in text
        assert (root / "reports" / f"{name}.ipynb").is_file()


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """A git + DVC repository with the quickstart run by `dvc repro` and pushed to its remote."""
    base = tmp_path_factory.mktemp("e2e")
    repo = copy_workflow(base / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["workflow"].update(configfile="config/quickstart.yaml", cores=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "workflow")

    start = time.monotonic()
    dvc(repo, "repro", timeout=QUICKSTART_LIMIT_S)
    wall_s = time.monotonic() - start
    return {"base": base, "repo": repo, "wall_s": wall_s,
            "config": yaml.safe_load((repo / "config/quickstart.yaml").read_text())}


def test_quickstart_runs_within_budget_and_writes_every_result(quickstart):
    repo, config = quickstart["repo"], quickstart["config"]
    print(f"quickstart wall time (dvc repro, 2 cores): {quickstart['wall_s']:.0f} s")
    assert quickstart["wall_s"] < QUICKSTART_LIMIT_S
    for method in config["methods"]:
        run_dir = repo / "results/digits" / method
        for name in ("model.pt", "train_log.csv", "train_metrics.json", "accuracy/summary.json",
                     "attack_topk/summary.json", "attack_topk/per_example.csv", "attack_topk/examples.npz"):
            assert (run_dir / name).is_file(), f"{run_dir / name} missing"
        assert any((repo / "checkpoints/digits" / method).iterdir())
        for rule in ("train", "evaluate_accuracy"):
            assert (repo / f"results/benchmarks/{rule}/digits/{method}.tsv").is_file()


def test_reports_hold_the_tables(quickstart):
    assert_reports_hold_the_tables(quickstart["repo"], quickstart["config"]["methods"])


def test_dvc_metrics_and_plots_show_the_results(quickstart):
    repo, methods = quickstart["repo"], quickstart["config"]["methods"]
    metrics = json.loads((repo / "results/metrics.json").read_text())
    assert set(metrics["digits"]) == set(methods)
    for method in methods:
        assert 0.0 <= metrics["digits"][method]["NA"] <= 1.0
        assert set(metrics["digits"][method]["topk"]) == {"IN", "CO", "rho"}
    shown = json.loads(run([tool("dvc"), "metrics", "show", "--json"], repo).stdout)
    (workspace,) = shown.values()
    assert workspace["data"]["results/metrics.json"]["data"] == metrics
    dvc(repo, "plots", "show", "-o", str(quickstart["base"] / "plots"))
    assert (quickstart["base"] / "plots/index.html").is_file()


def test_prepared_data_match_data_dvc(quickstart):
    """data.dvc in the repository records exactly the bytes the quickstart's data steps produce."""
    repo = quickstart["repo"]
    dvc(repo, "commit", "-f")
    git(repo, "diff", "--exit-code", "data.dvc")


def test_fresh_clone_pulls_instead_of_recomputing(quickstart):
    base, repo = quickstart["base"], quickstart["repo"]
    dvc(repo, "commit", "-f")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "results")
    dvc(repo, "push")

    clone = base / "clone"
    git(base, "clone", "-q", str(repo), str(clone))
    dvc(clone, "pull")
    assert (clone / "results/digits/sarkar/model.pt").is_file()
    assert (clone / "checkpoints/digits/sarkar").is_dir()

    dry = snakemake(clone, "-n", "all", "--configfile", "config/quickstart.yaml")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    scheduled = job_counts(dry.stdout + dry.stderr)
    recomputed = {"download", "prepare", "train", "evaluate_accuracy", "evaluate_attack"} & set(scheduled)
    assert not recomputed, f"a fresh clone after dvc pull would rerun {sorted(recomputed)}"

    # The tables regenerate from the pulled results alone.
    result = snakemake(clone, "--cores", "2", "all", "--configfile", "config/quickstart.yaml", timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert_reports_hold_the_tables(clone, quickstart["config"]["methods"])

    # Snakemake's self-contained report bundles both HTML reports.
    bundle = snakemake(clone, "all", "--report", "report.html", "--configfile", "config/quickstart.yaml")
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    text = (clone / "report.html").read_text(encoding="utf-8")
    assert "summary.html" in text and "digits.html" in text

    # A failing notebook (an unreadable result file) fails its rule and leaves no HTML.
    (clone / "results/digits/natural/accuracy/summary.json").write_text("{not json")
    failed = snakemake(clone, "--cores", "1", "reports/digits.html", "--forcerun", "report_dataset",
                       "--configfile", "config/quickstart.yaml", timeout=600)
    assert failed.returncode != 0
    assert not (clone / "reports/digits.html").exists()
    assert not (clone / "reports/digits.ipynb").exists()
    assert (clone / "logs/report/digits.ipynb").is_file()  # the executed notebook, for debugging
