"""The prepared GPU check (benchmarks/gpu_check.py): its CPU smoke run end to end, its time budget,
and the pieces its report is computed from."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_check"])
    module = sys.modules["gpu_check"]
    return module


def run(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def only(out_dir: Path, suffix: str) -> Path:
    files = sorted(out_dir.glob(f"gpu_check-*{suffix}"))
    assert len(files) == 1, files
    return files[0]


def test_cpu_smoke_runs_every_section_and_never_claims_a_gpu(tmp_path):
    # A generous budget: on a loaded CI machine the smoke run must not be cut short (its CPU work
    # is about half a minute); the cut-short path has its own test below.
    done = run("--cpu-smoke", "--out-dir", str(tmp_path), "--budget-s", "600")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    md, js = only(tmp_path, ".md"), only(tmp_path, ".json")
    assert "cpu-smoke" in md.name and "cpu-smoke" in js.name
    text = md.read_text()
    assert text.startswith("# attrrob GPU check — cpu-smoke (NOT a GPU result)")
    assert "none of its numbers is a GPU measurement" in text
    assert text in done.stdout  # the table is printed
    report = json.loads(js.read_text())
    env = report["environment"]
    assert env["mode"] == "cpu-smoke" and env["device"] == "cpu" and "gpu_name" not in env
    assert set(report["sections"].values()) == {"done"}, report["sections"]
    c = report["correctness"]
    assert len(c["ig"]) == 6 and all(r["pass"] for r in c["ig"])
    assert {r["method"] for r in c["train_step"]} == {"natural", "madry", "ig_norm", "ig_sum_norm", "sarkar",
                                                      "sarkar_cacr", "sarkar_wacr"}
    assert all(r["pass"] and r["finite"] for r in c["train_step"])
    assert c["topk_attack"]["pass"] and {r["verdict"] for r in c["topk_attack"]["images"]} == {"same kept iterate"}
    lock = c["device_auto_lock"]
    assert lock["pass"] and lock["second"].startswith("REFUSED") and lock["waiter"].startswith("TOOK"), lock
    assert [r["dataset"] for r in report["plan"]] == ["mnist", "gtsrb", "flower"] and all(r["ok"] for r in report["plan"])
    modes = [r["mode"] for r in report["evaluator"]["runs"]]
    assert any(m.startswith("batched") for m in modes) and "per-image (--batch-images 1)" in modes
    assert report["evaluator"]["ratio_batched_vs_per_image"] > 0
    rows = report["training"]["rows"]
    assert len(rows) == 28 and all(r["examples_per_s"] > 0 for r in rows)
    grid = report["training"]["grid"]
    assert grid["complete"] and 0 < grid["hours_two_gpus"] <= grid["hours_one_gpu"]
    assert len(report["autocast"]["rows"]) == 7
    assert report["ok"] and report["verdict"].startswith("all correctness checks passed")


def test_time_budget_cuts_sections_short_and_still_writes_the_report(tmp_path):
    done = run("--cpu-smoke", "--out-dir", str(tmp_path), "--budget-s", "1", "--sections", "correctness,training",
               timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(only(tmp_path, ".json").read_text())
    assert all("cut short" in v for v in report["sections"].values()), report["sections"]
    assert report["verdict"].startswith("INCOMPLETE") and not report["ok"]
    assert "Not done or cut short" in only(tmp_path, ".md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_run_without_cuda_says_so(tmp_path):
    done = run("--out-dir", str(tmp_path), timeout=300)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "--cpu-smoke" in done.stderr
    assert not list(tmp_path.iterdir())


def test_two_gpu_schedule_is_longest_job_first(gc):
    assert gc.schedule_hours([3600.0 * h for h in (3, 3, 2, 2, 2)], 2) == 7.0  # LPT: {3,2,2} / {3,2}
    assert gc.schedule_hours([3600.0 * h for h in (5, 1, 1)], 2) == 5.0
    assert gc.schedule_hours([3600.0] * 4, 1) == 4.0 and gc.schedule_hours([], 2) == 0.0


def test_relative_and_per_image_errors(gc):
    assert gc.relative(1.0001, 1.0) == pytest.approx(1e-4)
    assert gc.relative(float("nan"), 1.0) == float("inf")
    a = torch.tensor([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 2.0, 3.0], [0.0, 2.0, 1.0]])
    assert gc.per_image_error(a, b).tolist() == pytest.approx([1 / 3, 1 / 2])


def _report(train_pass=True, lock=True, sections=None):
    return {"environment": {"mode": "gpu", "device": "cuda:0", "gpu_name": "NVIDIA H200"},
            "sections": sections or {"correctness": "done"},
            "correctness": {"ig": [{"model": "mnist", "network": "real (ReLU)", "pass": True}],
                            "train_step": [{"dataset": "mnist", "method": "sarkar", "pass": train_pass}],
                            "topk_attack": {"pass": True, "images": [{"verdict": "tau within 1e-3"}]},
                            "device_auto_lock": {"pass": lock}},
            "plan": []}


def test_verdict_names_failures_and_what_did_not_run(gc):
    text, ok = gc.verdict(_report())
    assert ok and text.startswith("all correctness checks passed") and "tau within 1e-3" in text
    text, ok = gc.verdict(_report(train_pass=False, lock=False))
    assert not ok and "FAILED: train_step: mnist sarkar; device_auto_lock" in text
    broken = _report(sections={"correctness": "cut short by its time budget"})
    broken["correctness"]["topk_attack"] = {"cut_short": True}
    text, ok = gc.verdict(broken)
    assert not ok and text.startswith("INCOMPLETE") and "topk_attack not completed" in text


def test_output_names_carry_date_and_device(gc, tmp_path):
    env = {"mode": "gpu", "device": "cuda:0", "gpu_name": "NVIDIA H200 NVL", "date_utc": "2026-12-01 10:00"}
    md, js = gc.output_paths(tmp_path, env)
    assert md.name == "gpu_check-2026-12-01-NVIDIA-H200-NVL.md" and js.suffix == ".json"
    md, _ = gc.output_paths(tmp_path, {**env, "mode": "cpu-smoke"})
    assert md.name == "gpu_check-2026-12-01-cpu-smoke.md"


def test_tqdm_stub_stands_in_when_tqdm_is_missing(gc, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm then fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    gc._tqdm_stub()
    from tqdm.auto import tqdm

    with tqdm(total=3, disable=True) as bar:
        bar.update(1)
        bar.set_postfix(loss=1)
    assert sys.modules["tqdm"].__attrrob_stub__
