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
TARGETS = [f"results/seed~0/digits/{method}/{leaf}" for method in TINY["methods"]
           for leaf in ("accuracy/summary.json", "attack_topk/summary.json")]


def run_workflow(work: Path, *extra: str):
    result = snakemake(work, "--cores", "1", *TARGETS, "--configfile", "config/tiny.yaml", *extra, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-6000:]
    return job_counts(text)


def recorded_lr(work: Path, method: str):
    import json

    return json.loads((work / f"results/seed~0/digits/{method}/train_metrics.json").read_text())["settings"]["lr_schedule"]


def test_editing_one_methods_setting_retrains_exactly_that_model(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    config = work / "config/tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert run_workflow(work)["train"] == 2
    madry_model = work / "results/seed~0/digits/madry/model.pt"
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


def test_two_seeds_train_two_models_and_the_tables_state_intervals_over_seeds(tmp_path):
    """`seeds: [0, 1]`: one model per seed and method; seed 0 is the one-seed run; evaluation images
    do not depend on the seed (paired); collect-results states 2 seeds with t intervals over seeds."""
    import json

    import torch

    from attrrob.intervals import mean_ci

    work = copy_workflow(tmp_path / "wf")
    config = json.loads(json.dumps(TINY))
    config.update(seeds=[0, 1], methods=["natural", "ig_sum_norm"])  # a pair the tables compare
    config["hyperparameters"]["digits"]["train"]["common"].update(steps=60, m=4, approx_factor=2, lr_schedule=[[0, 0.005]])
    config["hyperparameters"]["digits"]["accuracy"]["num_examples"] = 16
    config["hyperparameters"]["digits"]["attack"]["num_examples"] = 6
    (work / "config/tiny.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "1", "results/metrics.json", "--configfile", "config/tiny.yaml",
                       timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert job_counts(result.stdout + result.stderr)["train"] == 4
    seeds = [work / f"results/seed~{s}/digits" for s in (0, 1)]
    trained = [json.loads((s / "natural/train_metrics.json").read_text())["settings"] for s in seeds]
    assert trained[0]["seed"] != trained[1]["seed"]
    assert {k for k in trained[0] if trained[0][k] != trained[1][k]} == {"seed"}
    state = [torch.load(s / "natural/model.pt", weights_only=True)["model"] for s in seeds]
    assert any(not torch.equal(state[0][key], state[1][key]) for key in state[0])
    # The same test images are attacked under both seeds (comparisons stay paired image by image).
    import pandas as pd

    frames = [pd.read_csv(s / "ig_sum_norm/attack_topk/per_example.csv") for s in seeds]
    assert list(frames[0]["index"]) == list(frames[1]["index"])
    # metrics.json: the mean over seeds with a t interval over seeds (independent: scipy via mean_ci
    # on the two seeds' own summaries), each seed's value beside it.
    metrics = json.loads((work / "results/metrics.json").read_text())["digits"]["natural"]
    per_seed = [json.loads((s / "natural/accuracy/summary.json").read_text())["natural_accuracy"] for s in seeds]
    expected = mean_ci([p["mean"] for p in per_seed], bounds=(0.0, 1.0))  # clipped to accuracy's range
    assert metrics["NA"] == pytest.approx(expected["mean"])
    across = metrics["across_seeds"]
    assert across["seeds"] == [0, 1] and across["NA"]["n_seeds"] == 2
    assert across["NA"]["per_seed"]["1"]["mean"] == pytest.approx(per_seed[1]["mean"])
    if per_seed[0]["mean"] != per_seed[1]["mean"]:
        assert across["NA"]["ci_low"] == pytest.approx(expected["ci_low"])
    table = (work / "results/table.md").read_text()
    assert "2 seeds (0, 1): each cell is the mean over seeds with a 95% t interval over seeds" in table
    assert "seed 0:" in table and "seed 1:" in table
    assert "then their mean over 2 seeds with its 95% t interval over seeds" in table  # the paired Δ
    assert "ΔIN (points) seed 0: " in table


def test_runs_of_the_layout_before_seeds_are_named_not_silently_ignored(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "config/tiny.yaml").write_text(yaml.safe_dump(TINY))
    (work / "results/digits/natural").mkdir(parents=True)
    (work / "results/digits/natural/train_metrics.json").write_text("{}")
    dry = snakemake(work, "results/seed~0/digits/natural/model.pt", "-n", "--configfile", "config/tiny.yaml")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert ("attrrob: note: 1 run(s) in the layout before seeds (results/digits/natural, ...) are not read; "
            "to reuse them, move results/<dataset> to results/seed~0/<dataset>") in dry.stdout + dry.stderr
