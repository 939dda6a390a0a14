"""Runs keyed by their settings: editing a hyper-parameter reruns exactly the affected jobs.

The issue's scenario on digits at tiny budgets: after a run, change one method's learning-rate
schedule in the config file; one `snakemake` invocation retrains that model (and reruns its
evaluations), exits 0, and leaves every other model alone; training state of the old settings
stays in its own folder. `--config key=value` counts like the same key in a config file.
About a minute on 2 cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from test_workflow import copy_workflow, job_counts, snakemake, tool

pytestmark = pytest.mark.skipif(not Path(tool("snakemake")).exists() and shutil.which("snakemake") is None,
                                reason="snakemake is not installed (pip install -e '.[workflow]')")

TINY = {
    "datasets": ["digits"], "methods": ["natural", "madry"], "attacks": ["topk"], "device": "cpu",
    "data": {"mirror": None},
    "hyperparameters": {"digits": {
        "train": {"common": {"steps": 6, "batch_size": 16, "pgd_steps": 2, "log_every": 3,
                             "checkpoint_every": 3}},
        "accuracy": {"num_examples": 8, "autoattack": False, "steps": 2},
        "attack": {"num_examples": 4, "iterations": 2, "ig_steps": 4, "random_restarts": 1},
    }},
}
TARGETS = [f"results/digits/{method}/{leaf}" for method in TINY["methods"]
           for leaf in ("accuracy/summary.json", "attack_topk/summary.json")]


def run_workflow(work: Path, *extra: str):
    result = snakemake(work, "--cores", "1", *TARGETS, "--configfile", "config/tiny.yaml", *extra, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-6000:]
    return job_counts(text)


def recorded_lr(work: Path, method: str):
    import json

    return json.loads((work / f"results/digits/{method}/train_metrics.json").read_text())["settings"]["lr_schedule"]


def test_editing_one_methods_setting_retrains_exactly_that_model(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    config = work / "config/tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert run_workflow(work)["train"] == 2
    madry_model = work / "results/digits/madry/model.pt"
    madry_time = madry_model.stat().st_mtime_ns

    assert "train" not in run_workflow(work)  # nothing changed: nothing reruns

    body = yaml.safe_load(config.read_text())
    body["hyperparameters"]["digits"]["train"]["natural"] = {"lr_schedule": [[0, 0.002]]}
    config.write_text(yaml.safe_dump(body))
    counts = run_workflow(work)  # one invocation after the edit
    assert counts.get("train") == 1 and counts.get("evaluate_accuracy") == 1 and counts.get("evaluate_attack") == 1
    assert "prepare" not in counts and "download" not in counts
    assert recorded_lr(work, "natural") == [[0, 0.002]]
    assert madry_model.stat().st_mtime_ns == madry_time
    # The old settings' resumable state stays in its own folder; the new run has its own.
    assert len(list((work / "checkpoints/digits/natural").glob("settings~*/latest.pt"))) == 2

    assert not {"train", "evaluate_accuracy", "evaluate_attack"} & set(run_workflow(work))

    # --config on the command line is the same as the key in the config file.
    same = "hyperparameters={digits: {train: {natural: {lr_schedule: [[0, 0.002]]}}}}"
    dry = snakemake(work, "-n", *TARGETS, "--configfile", "config/tiny.yaml", "--config", same)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "train" not in job_counts(dry.stdout + dry.stderr)
    other = "hyperparameters={digits: {train: {madry: {lr_schedule: [[0, 0.0005]]}}}}"
    counts = run_workflow(work, "--config", other)
    assert counts.get("train") == 1 and recorded_lr(work, "madry") == [[0, 0.0005]]
