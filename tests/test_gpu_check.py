"""The prepared GPU check: benchmarks/gpu_check.sh's smoke run end to end (tests/test_cuda.py on the
CPU, then benchmarks/gpu_check.py's speed table), the time budget, and the pieces of its report."""

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
WRAPPER = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_check"])
    return sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def report_module(gc):
    return sys.modules["gpu_report"]  # imported by gpu_check from beside it


def environ(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", **extra)


def run(*args, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=environ(),
                          timeout=timeout, cwd=REPO)


def only(out_dir: Path, pattern: str) -> Path:
    files = sorted(out_dir.glob(pattern))
    assert len(files) == 1, files
    return files[0]


def test_smoke_run_of_the_one_command_runs_the_tests_and_every_section(tmp_path):
    # Generous limits: on a loaded CI machine the smoke run must not be cut short (its CPU work is
    # about a minute); the cut-short path has its own test below.
    done = subprocess.run(["bash", str(WRAPPER), str(tmp_path)], capture_output=True, text=True, timeout=1200,
                          env=environ(SMOKE="1", CURVE="0", TESTS_S="900", GPU_CHECK_BUDGET_S="600"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    md, js = only(tmp_path, "gpu_check-*.md"), only(tmp_path, "gpu_check-*.json")
    assert "cpu-smoke" in md.name and "cpu-smoke" in js.name
    assert only(tmp_path, "test_cuda-*-cpu-smoke.xml") and only(tmp_path, "test_cuda-*-cpu-smoke.log")
    text = md.read_text()
    assert text.startswith("# attrrob GPU check — cpu-smoke (NOT a GPU result)")
    assert "none of its numbers is a GPU measurement" in text and text in done.stdout
    report = json.loads(js.read_text())
    env = report["environment"]
    assert env["mode"] == "cpu-smoke" and env["device"] == "cpu" and "gpu_name" not in env
    tests = report["cuda_tests"]
    assert tests["exit_code"] == 0 and tests["failed"] == tests["skipped"] == 0 and tests["passed"] == tests["tests"]
    names = {row[0].split("[")[0] for row in tests["rows"]}
    assert {"test_ig_saliency_matches_cpu", "test_one_training_step_matches_cpu", "test_evaluator_plan_fits_its_memory_budget",
            "test_topk_attack_keeps_the_same_iterate_or_tau", "test_device_auto_lock_makes_a_second_process_wait_or_move"} <= names
    assert tests["tests"] == 26  # 6 IG + 14 training steps + attack + lock + 3 plans + the measures
    assert set(report["sections"].values()) == {"done"}, report["sections"]
    modes = [r["mode"] for r in report["evaluator"]["runs"]]
    assert any(m.startswith("batched") for m in modes) and "per-image (--batch-images 1)" in modes
    assert report["evaluator"]["ratio_batched_vs_per_image"] > 0
    rows = report["training"]["rows"]
    assert len(rows) == 28 and all(r["examples_per_s"] > 0 for r in rows)
    grid = report["training"]["grid"]
    assert grid["complete"] and 0 < grid["hours_two_gpus"] <= grid["hours_one_gpu"]
    assert len(report["autocast"]["rows"]) == 7
    assert report["ok"] and report["verdict"].startswith("all 26 CUDA correctness tests passed")


def test_time_budget_cuts_sections_short_and_still_writes_the_report(tmp_path):
    done = run("--cpu-smoke", "--out-dir", str(tmp_path), "--budget-s", "1", "--sections", "training,autocast",
               timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(only(tmp_path, "*.json").read_text())
    assert all("cut short" in v for v in report["sections"].values()), report["sections"]
    assert "INCOMPLETE" in report["verdict"] and not report["ok"] and "cuda_tests" not in report
    assert "training (cut short by its time budget)" in only(tmp_path, "*.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_run_without_cuda_says_so(tmp_path):
    done = run("--out-dir", str(tmp_path), timeout=300)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "--cpu-smoke" in done.stderr
    assert not list(tmp_path.iterdir())
    done = subprocess.run(["bash", str(WRAPPER), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=environ())
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "SMOKE=1" in done.stderr
    assert not list(tmp_path.iterdir())


def test_two_gpu_schedule_is_longest_job_first(gc):
    assert gc.schedule_hours([3600.0 * h for h in (3, 3, 2, 2, 2)], 2) == 7.0  # LPT: {3,2,2} / {3,2}
    assert gc.schedule_hours([3600.0 * h for h in (5, 1, 1)], 2) == 5.0
    assert gc.schedule_hours([3600.0] * 4, 1) == 4.0 and gc.schedule_hours([], 2) == 0.0


def test_relative_difference(gc):
    assert gc.relative(1.0001, 1.0) == pytest.approx(1e-4)
    assert gc.relative(float("nan"), 1.0) == float("inf")


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.test_cuda" name="test_a[mnist]" time="0.5"><properties>
<property name="rel_diff" value="2e-07"/></properties></testcase>
<testcase classname="tests.test_cuda" name="test_b" time="1.0"><failure message="AssertionError: loss 1.0 vs 2.0&#10;more">x</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0"><skipped message="no GPU"/></testcase>
</testsuite></testsuites>"""


def test_junit_summary_counts_outcomes_and_keeps_measurements(report_module, tmp_path):
    path = tmp_path / "t.xml"
    path.write_text(JUNIT)
    tests = report_module.cuda_tests(path, 1)
    assert (tests["tests"], tests["passed"], tests["failed"], tests["skipped"]) == (3, 1, 1, 1)
    assert tests["failures"] == ["test_b: AssertionError: loss 1.0 vs 2.0"]
    assert tests["rows"][0] == ["test_a[mnist]", "passed", "0.5", "rel_diff 2e-07"]
    assert report_module.cuda_tests(tmp_path / "absent.xml", 2)["error"].startswith("unreadable")


def _report(tests=None, sections=None, rows=()):
    report = {"environment": {"mode": "gpu", "device": "cuda:0", "gpu_name": "NVIDIA H200"},
              "sections": sections or {"evaluator": "done", "training": "done"},
              "evaluator": {"runs": []}, "training": {"rows": list(rows)}, "autocast": {"rows": []}}
    if tests is not None:
        report["cuda_tests"] = {"file": "t.xml", "tests": 3, "skipped": 0, "failures": [], "rows": [], **tests}
    return report


def test_verdict_names_failures_and_what_did_not_run(report_module):
    verdict = report_module.verdict
    text, ok = verdict(_report({"exit_code": 0, "passed": 3, "failed": 0}))
    assert ok and text == "all 3 CUDA correctness tests passed (0 skipped). every speed section complete."
    text, ok = verdict(_report({"exit_code": 1, "passed": 2, "failed": 1, "failures": ["test_b: loss"]}))
    assert not ok and text.startswith("FAILED: test_b: loss")
    text, ok = verdict(_report({"exit_code": 1, "passed": 2, "failed": 0}))  # session time limit: fewer ran
    assert not ok and text.startswith("INCOMPLETE: 2 CUDA tests passed, none failed, but pytest exited 1")
    text, ok = verdict(_report({"exit_code": 2, "error": "unreadable: no such file"}))
    assert not ok and text.startswith("FAILED: CUDA tests' results t.xml unreadable")
    text, ok = verdict(_report(sections={"evaluator": "done", "training": "cut short by its time budget"}))
    assert not ok and "INCOMPLETE: not done or cut short: training (cut short by its time budget)" in text
    text, ok = verdict(_report(rows=[{"dataset": "flower", "method": "sarkar", "error": "out of memory: x"}]))
    assert not ok and "training flower/sarkar: out of memory: x" in text


def test_output_names_carry_date_and_device(report_module, tmp_path):
    env = {"mode": "gpu", "device": "cuda:0", "gpu_name": "NVIDIA H200 NVL", "date_utc": "2026-12-01 10:00"}
    md, js = report_module.output_paths(tmp_path, env)
    assert md.name == "gpu_check-2026-12-01-NVIDIA-H200-NVL.md" and js.suffix == ".json"
    md, _ = report_module.output_paths(tmp_path, {**env, "mode": "cpu-smoke"})
    assert md.name == "gpu_check-2026-12-01-cpu-smoke.md"
