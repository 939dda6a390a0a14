"""The Slurm profile on a real one-node Slurm cluster: the quickstart, a cancelled job, the numbers.

tests/slurm_cluster.py starts munged, slurmctld and slurmd (no accounting, partitions `cpu` and
`gpu`, `gpu` the default). In two temporary copies of the workflow, the quickstart runs locally
(`--cores 2`) and, at the same time, through `--profile workflow/profiles/slurm` with exactly the
README's command. While the Slurm run goes, the training job that first writes a checkpoint is
cancelled with `scancel`; rerunning the same command must then run only that model and what
depends on it, resuming its training from the checkpoint. Checked: per-example results, models,
training logs and every untimed report table are identical to the local run's; every Slurm job
ran in the `cpu` partition (the quickstart sets resources.gpu: false) under a comment that names
its rule; every job's Slurm log is kept under logs/slurm/. Both copies run one seed of three
methods (natural, ig_sum_norm and sarkar, the pair the reports compare) and the topk attack only:
what is checked here is the profile, not the seeds or the methods (the end-to-end test runs the
whole quickstart), and a seventh of the quickstart keeps this test within CI's time.

Skips where Slurm cannot be started (not root, slurm-wlm or munge missing, a real Slurm
configured); with ATTRROB_REQUIRE_SLURM=1 (set by .ci/run) it fails instead. About 4.5 minutes on
2 cores.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from attrrob.training import CHECKPOINT_NAME

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the cluster helper beside this file

from slurm_cluster import ClusterUnavailable, OneNodeCluster  # noqa: E402
from test_workflow import REPO, copy_workflow, job_counts, tool  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(tool("snakemake")).exists() and shutil.which("snakemake") is None,
                                reason="snakemake is not installed (pip install -e '.[workflow]')")

CONFIG = "config/quickstart.yaml"
# The part of the quickstart both copies run (top-level keys of CONFIG, rewritten in place).
SUBSET = {"seeds": "[0]", "methods": "[natural, ig_sum_norm, sarkar]", "attacks": "[topk]"}
# The README's commands (section "On a Slurm cluster"; test_readme_gives_the_commands_this_test_runs).
SLURM_COMMAND = ["all", "--profile", "workflow/profiles/slurm", "--configfile", CONFIG]
SQUEUE_FORMAT = "%.10i %.9P %.8T %.10M %k"
LOCAL_COMMAND = ["all", "--cores", "2", "--configfile", CONFIG]
RUN_LIMIT_S = 45 * 60  # a guard against hangs: about 8 minutes on an idle 2-core machine
GPU_RULES = {"train", "evaluate_accuracy", "evaluate_attack"}
ALL_RULES = GPU_RULES | {"download", "prepare", "report_summary", "report_dataset", "collect_results", "all"}
# Timing columns and fields differ between any two runs; everything else must not.
TIMED = re.compile(r"per_s|time|wall", re.IGNORECASE)


def _env(extra: dict | None = None) -> dict:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", **(extra or {})}


def _start(args: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    # The jobs import the package copied with the workflow (PYTHONPATH goes before an editable
    # install's path), so both runs use the same code even while the checkout is being edited.
    pythonpath = os.pathsep.join(filter(None, [str(cwd / "src"), os.environ.get("PYTHONPATH")]))
    with open(log, "w") as out:
        return subprocess.Popen([tool("snakemake"), *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env=_env({"PYTHONPATH": pythonpath, **(env or {})}), stdin=subprocess.DEVNULL)


def _wait(proc: subprocess.Popen, deadline: float, what: str) -> int:
    try:
        return proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{what} did not finish within {RUN_LIMIT_S} s")


class JobWatch:
    """Every Slurm job seen so far: id -> (partition, state, comment), from `squeue --states=all`.

    Finished jobs stay listed for MinJobAge (300 s by default); polling every second sees each
    one in its final state before it is purged.
    """

    def __init__(self, cluster: OneNodeCluster):
        self.cluster, self.jobs = cluster, {}

    def poll(self) -> dict:
        out = self.cluster.command("squeue", "--states=all", "--noheader", "--format=%i|%P|%T|%k")
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                job_id, partition, state, comment = line.strip().split("|", 3)
                self.jobs[job_id] = (partition, state, comment)
        return self.jobs


def _train_method(comment: str) -> str | None:
    # The plugin's comment: rule, then wildcard values with / as _ (the run seed~0/digits/<method>).
    found = re.fullmatch(r"rule_train_wildcards_(?:(?:seed~)?\d+_)?digits_(?:\d+_)?([a-z_]+?)(?:_\d+)?", comment)
    return found.group(1) if found else None


def _run_slurm_and_cancel_one_training(repo: Path, log: Path, cluster: OneNodeCluster,
                                        tick, deadline: float) -> tuple[int, dict | None]:
    """The Slurm run, with `scancel` of the first training job seen running with a checkpoint."""
    proc = _start(SLURM_COMMAND, repo, log, cluster.env())
    cancelled = None
    while proc.poll() is None and time.monotonic() < deadline:
        for job_id, (_, state, comment) in tick().items():
            method = _train_method(comment)
            if cancelled or state != "RUNNING" or method is None:
                continue
            checkpoints = repo / "checkpoints/digits" / method  # settings~<digest>/latest.pt
            finished = repo / "results/seed~0/digits" / method / "model.pt"
            if any(checkpoints.glob(f"settings~*/{CHECKPOINT_NAME}")) and not finished.exists():
                result = cluster.command("scancel", job_id)
                assert result.returncode == 0, result.stderr
                cancelled = {"job_id": job_id, "method": method}
        time.sleep(0.5)
    return _wait(proc, deadline, "the Slurm run"), cancelled


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = OneNodeCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as error:
        if os.environ.get("ATTRROB_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm could not be started (ATTRROB_REQUIRE_SLURM=1): {error}")
        pytest.skip(f"Slurm could not be started: {error}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    local = copy_workflow(base / "local")
    config = local / CONFIG
    text = config.read_text()
    for key, value in SUBSET.items():
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text, count=1)
    config.write_text(text)
    assert {key: yaml.safe_load(config.read_text())[key] for key in SUBSET} == {
        key: yaml.safe_load(value) for key, value in SUBSET.items()}
    slurm = Path(shutil.copytree(local, base / "slurm", symlinks=True))
    watch = JobWatch(cluster)
    start = time.monotonic()
    deadline = start + RUN_LIMIT_S

    # The local reference runs alongside: the Slurm run spends most of its time waiting for polls.
    local_proc = _start(LOCAL_COMMAND, local, base / "local.log")
    local_s = None

    def tick() -> dict:
        nonlocal local_s
        if local_s is None and local_proc.poll() is not None:
            local_s = time.monotonic() - start
        return watch.poll()

    try:
        first_rc, cancelled = _run_slurm_and_cancel_one_training(slurm, base / "slurm-1.log", cluster,
                                                                 tick, deadline)
        first_s = time.monotonic() - start
        first_log = (base / "slurm-1.log").read_text()

        rerun_start = time.monotonic()
        rerun_proc = _start(SLURM_COMMAND, slurm, base / "slurm-2.log", cluster.env())
        while rerun_proc.poll() is None and time.monotonic() < deadline:
            tick()
            time.sleep(1)
        rerun_rc = _wait(rerun_proc, deadline, "the Slurm rerun")
        rerun_s = time.monotonic() - rerun_start
        local_rc = _wait(local_proc, deadline, "the local run")
        tick()
    finally:
        if local_proc.poll() is None:
            local_proc.kill()
            local_proc.wait()
    resumed = None
    if cancelled and (slurm / f"results/seed~0/digits/{cancelled['method']}/train_metrics.json").is_file():
        resumed = json.loads((slurm / f"results/seed~0/digits/{cancelled['method']}/train_metrics.json")
                             .read_text())["resumed_from_step"]
    print(f"\nquickstart on Slurm: {first_s:.0f} s with the local run alongside (local: {local_s:.0f} s); "
          f"scancel of {cancelled}; rerun: {rerun_s:.0f} s, training resumed from step {resumed}; "
          f"total {time.monotonic() - start:.0f} s")
    return {"local": local, "slurm": slurm, "config": yaml.safe_load((slurm / CONFIG).read_text()),
            "local_rc": local_rc, "local_log": (base / "local.log").read_text(),
            "first_rc": first_rc, "first_log": first_log, "cancelled": cancelled,
            "rerun_rc": rerun_rc, "rerun_log": (base / "slurm-2.log").read_text(), "jobs": watch.jobs}


@pytest.mark.slurm
@pytest.mark.slow
def test_local_reference_run_succeeds(runs):
    assert runs["local_rc"] == 0, runs["local_log"][-6000:]


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_fails_only_that_job_and_the_same_command_resumes_it(runs):
    cancelled = runs["cancelled"]
    assert cancelled, ("no training job was caught running with a checkpoint; "
                       "the quickstart's train.common.checkpoint_every must be below its steps")
    first, rerun = runs["first_log"], runs["rerun_log"]
    assert runs["first_rc"] != 0, first[-6000:]
    assert f"SLURM-job '{cancelled['job_id']}' failed" in first and "CANCELLED" in first, first[-6000:]
    assert runs["rerun_rc"] == 0, rerun[-6000:]
    # Only the cancelled model and what reads it run again.
    counts = job_counts(rerun)
    attacks = runs["config"]["attacks"]
    assert {rule: counts.get(rule, 0) for rule in ("download", "prepare", "train",
                                                   "evaluate_accuracy", "evaluate_attack")} == {
        "download": 0, "prepare": 0, "train": 1, "evaluate_accuracy": 1, "evaluate_attack": len(attacks)}
    # (Snakemake's log names the job by its outputs; its wildcards line is not printed here.)
    assert f"output: results/seed~0/digits/{cancelled['method']}/model.pt" in rerun, rerun[-6000:]
    metrics = json.loads((runs["slurm"] / "results/seed~0/digits" / cancelled["method"] /
                          "train_metrics.json").read_text())
    assert metrics["resumed_from_step"], f"training restarted instead of resuming: {metrics}"
    assert metrics["steps_this_run"] == metrics["steps"] - metrics["resumed_from_step"]


@pytest.mark.slurm
@pytest.mark.slow
def test_every_job_ran_in_the_cpu_partition_with_its_rule_in_the_comment(runs):
    jobs, cancelled = runs["jobs"], runs["cancelled"]
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", runs["first_log"] + runs["rerun_log"]))
    assert submitted and set(jobs) == submitted, (sorted(jobs), sorted(submitted))
    for job_id, (partition, state, comment) in jobs.items():
        assert partition == "cpu", f"job {job_id} ({comment}) ran in {partition!r}"
        want = "CANCELLED" if cancelled and job_id == cancelled["job_id"] else "COMPLETED"
        assert state == want, f"job {job_id} ({comment}): {state}"
        rule = re.fullmatch(r"rule_([a-z_]+?)(_wildcards_[\w~.]+)?", comment)
        assert rule and rule.group(1) in ALL_RULES - {"all"}, comment


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_logs_of_every_job_are_kept_under_logs_slurm(runs):
    logs = runs["slurm"] / "logs/slurm"
    kept = {path.stem: path.relative_to(logs).parts[0] for path in logs.rglob("*.log")}
    for job_id, (_, _, comment) in runs["jobs"].items():
        rule_folder = comment.split("_wildcards_")[0]  # rule_<name>
        assert kept.get(job_id) == rule_folder, f"no Slurm log of job {job_id} ({comment}) in {logs}"


def _csv_without_timings(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if not TIMED.search(k)} for row in csv.DictReader(handle)]


def _untimed_tables(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    tables = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", table)).split())
              for table in re.findall(r"<table.*?</table>", text, flags=re.S)]
    return [table for table in tables if not TIMED.search(table)]


@pytest.mark.slurm
@pytest.mark.slow
def test_results_and_reports_match_the_local_run(runs):
    import numpy as np
    import torch

    local, slurm, config = runs["local"], runs["slurm"], runs["config"]
    assert runs["rerun_rc"] == 0 and runs["local_rc"] == 0
    for method in config["methods"]:
        a, b = local / "results/seed~0/digits" / method, slurm / "results/seed~0/digits" / method
        names = ["accuracy/per_example.csv"] + [f"attack_{attack}/per_example.csv"
                                                for attack in config["attacks"]]
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{method}: {name} differs"
        assert _csv_without_timings(a / "train_log.csv") == _csv_without_timings(b / "train_log.csv"), method
        for attack in config["attacks"]:
            with np.load(a / f"attack_{attack}/examples.npz") as x, \
                    np.load(b / f"attack_{attack}/examples.npz") as y:
                assert sorted(x.files) == sorted(y.files)
                for key in x.files:
                    assert np.array_equal(x[key], y[key]), f"{method}: examples.npz[{key}] differs"
        model_a = torch.load(a / "model.pt", map_location="cpu", weights_only=True)["model"]
        model_b = torch.load(b / "model.pt", map_location="cpu", weights_only=True)["model"]
        assert model_a.keys() == model_b.keys()
        assert all(torch.equal(model_a[k], model_b[k]) for k in model_a), f"{method}: weights differ"
    for name in ("results/metrics.json", "results/table.md"):
        assert (local / name).read_bytes() == (slurm / name).read_bytes(), f"{name} differs"
    for report in ["summary"] + config["datasets"]:
        tables = _untimed_tables(local / f"reports/{report}.html")
        assert tables, f"reports/{report}.html has no untimed table"
        assert tables == _untimed_tables(slurm / f"reports/{report}.html"), f"reports/{report}.html differs"


def test_readme_gives_the_commands_this_test_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### On a Slurm cluster", 1)[1].split("\n## ", 1)[0]
    assert "snakemake " + " ".join(SLURM_COMMAND) in section
    assert f'squeue --me --format="{SQUEUE_FORMAT}"' in section
    assert "snakemake-executor-plugin-slurm==2.8.0" in (REPO / "envs/requirements-workflow.txt").read_text()


# --------------------------------------------------------------------------- without a cluster


def _partitions_by_rule(dry_run_output: str) -> dict[str, set[str]]:
    """{rule: the slurm_partition values of its jobs} from a dry run's job listing."""
    partitions, rule = {}, None
    for line in dry_run_output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line.strip()):
            rule = match.group(1)
        elif (match := re.search(r"\bresources: .*\bslurm_partition=([^,\s]*)", line)) and rule:
            partitions.setdefault(rule, set()).add(match.group(1))
    return partitions




@pytest.mark.parametrize("case", ["paper grid", "quickstart", "own names"])
def test_partition_follows_the_config(case, tmp_path):
    """Training and evaluation go to the GPU partition only when they ask for a GPU."""
    repo = copy_workflow(tmp_path / "repo")
    config = {"paper grid": "config/config.yaml", "quickstart": CONFIG, "own names": CONFIG}[case]
    if case == "own names":
        settings = yaml.safe_load((repo / CONFIG).read_text())
        settings["resources"].update(gpu=True, slurm_partitions={"cpu": None, "gpu": "a100"})
        config = "config/own.yaml"
        (repo / config).write_text(yaml.safe_dump(settings))
    result = subprocess.run([tool("snakemake"), "-n", "all", "--profile", "workflow/profiles/slurm",
                             "--configfile", config], cwd=repo, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    partitions = _partitions_by_rule(result.stdout + result.stderr)
    cpu, gpu = {"paper grid": ("cpu", "gpu"), "quickstart": ("cpu", "cpu"), "own names": ("", "a100")}[case]
    assert set(partitions) == ALL_RULES - {"all"}
    for rule, names in partitions.items():
        assert names == {gpu if rule in GPU_RULES else cpu}, (rule, names)
