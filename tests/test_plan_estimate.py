"""The plan's training-time estimate (attrrob.plan_estimate) and the workflow's refusal of more
than a day of CPU training nobody asked for (issue 21)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from attrrob import config as attrrob_config
from attrrob import plan_estimate, registry
from attrrob.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_madry_on_mnist_at_the_paper_settings_scales_the_measured_step_by_pgd_iterations():
    # Measured at batch 50 with 10 PGD steps (11 passes of the batch); the paper: 40 (41 passes).
    settings = attrrob_config.train_settings("mnist", "madry")
    assert (settings["batch_size"], settings["pgd_steps"], settings["steps"]) == (50, 40, 100000)
    per_step, lower = plan_estimate.seconds_per_step("mnist", "madry", settings)
    measured = plan_estimate.step_costs()["cpu"]["mnist"]["seconds_per_step"]["madry"]
    assert per_step == pytest.approx(measured * 41 / 11) and not lower
    # Against the committed study's own runs (config/mnist_cpu.yaml: 2000 Madry steps at 10 PGD
    # steps): the estimate of their training lies within the least CPU time a one-thread run
    # recorded (training and evaluation), and above half of it (training is most of a Madry run).
    study = plan_estimate.seconds_per_step("mnist", "madry", {**settings, "pgd_steps": 10})[0] * 2000
    records = [json.loads(path.read_text())
               for path in (REPO / "studies/mnist_cpu/results").glob("seed~*/mnist/madry/study_run.json")]
    least = min(r["cpu_s"] for r in records if r["cpu_s"] < 1.05 * r["wall_s"])
    assert 0.5 * least < study < least


def test_attribution_objectives_count_inner_ig_points_and_the_outer_ig():
    settings = {"batch_size": 10, "pgd_steps": 4, "m": 12, "approx_factor": 5}
    # ceil(12 / 5) = 3 IG points per PGD iteration, 4 iterations, + 12 outer points + the CE pass.
    assert plan_estimate.gradient_rows("sarkar", settings) == 10 * (4 * 3 + 12 + 1)
    assert plan_estimate.gradient_rows("madry", settings) == 10 * 5
    assert plan_estimate.gradient_rows("natural", settings) == 10


def test_unmeasured_data_sets_are_a_lower_bound_or_a_stand_in():
    settings = attrrob_config.train_settings("gtsrb", "natural")
    assert plan_estimate.seconds_per_step("gtsrb", "natural", settings)[1] is True
    settings = attrrob_config.train_settings("fashion_mnist", "natural")
    assert plan_estimate.seconds_per_step("fashion_mnist", "natural", settings)[1] is False
    assert plan_estimate.seconds_per_step("mnist", "natural", settings, device="cuda") is None


def test_the_paper_grid_on_a_cpu_is_refused_unless_the_config_asks_for_the_cpu(monkeypatch):
    grid = yaml.safe_load((REPO / "config/config.yaml").read_text())
    pairs = [(d, m) for d in grid["datasets"] for m in grid["methods"]]
    monkeypatch.setattr(plan_estimate, "resolve_device", lambda setting: "cpu")
    with pytest.raises(ConfigError, match=r"at least \d+ days .* set `device: cpu` in the config"):
        plan_estimate.check_plan(None, pairs, None, "auto")
    line = plan_estimate.check_plan(None, pairs, None, "cpu")
    assert line.startswith("estimated training time on the CPU: at least") and "28 training job(s)" in line
    # The same plan on a GPU: no GPU costs are measured yet, so no line and no refusal.
    monkeypatch.setattr(plan_estimate, "resolve_device", lambda setting: "cuda")
    assert plan_estimate.check_plan(None, pairs, None, "auto") is None


def test_the_quickstart_fits_well_within_the_limit():
    line = plan_estimate.check_plan(REPO / "config/quickstart.yaml",
                                    [("digits", m) for m in registry.METHODS], None, "cpu")
    assert "7 training job(s)" in line and "min" in line
    assert plan_estimate.check_plan(None, [], None, "auto") is None
    assert plan_estimate.human(86400) == "1 day" and plan_estimate.human(3 * 3600) == "3.0 h"


needs_snakemake = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")


def _workflow(tmp_path: Path, device: str) -> Path:
    from test_workflow import copy_workflow

    work = copy_workflow(tmp_path / "w")
    body = yaml.safe_load((work / "config/quickstart.yaml").read_text())
    # 10^7 steps (the schema's maximum) of Sarkar training on digits: days of CPU at the measured cost.
    body.update(methods=["sarkar"], device=device, train_steps=10_000_000)
    (work / "config/long.yaml").write_text(yaml.safe_dump(body))
    return work


@needs_snakemake
def test_workflow_refuses_before_any_job_and_a_dry_run_does_not(tmp_path):
    from test_workflow import snakemake

    work = _workflow(tmp_path, "auto")
    dry = snakemake(work, "all", "-n", "--configfile", "config/long.yaml")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    import torch

    if torch.cuda.is_available():
        pytest.skip("device: auto resolves to a GPU here")
    result = snakemake(work, "all", "--cores", "1", "--configfile", "config/long.yaml")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "attrrob: error: estimated training time on the CPU:" in text and "set `device: cpu`" in text
    assert not (work / "data").exists() and not (work / "logs").exists(), "a job ran before the refusal"


@needs_snakemake
def test_workflow_with_device_cpu_prints_the_estimate_and_starts(tmp_path):
    from test_workflow import tool

    work = _workflow(tmp_path, "cpu")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    proc = subprocess.Popen([tool("snakemake"), "all", "--cores", "1", "--configfile", "config/long.yaml"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen, deadline = [], time.monotonic() + 240
    try:
        for line in proc.stdout:
            seen.append(line)
            if (work / "logs/download/digits.log").exists() or time.monotonic() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = "".join(seen)
    assert "attrrob: estimated training time on the CPU:" in text and "days" in text, text[-3000:]
    assert (work / "logs/download/digits.log").exists(), text[-3000:]
