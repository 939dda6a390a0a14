"""benchmarks/budget_search.py: the record of a workflow run and its rendering in docs/budgets.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("budget_search", REPO / "benchmarks" / "budget_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_run_sums_jobs_and_renders_a_table(tmp_path):
    budget = _module()
    workflow = tmp_path / "wf"
    bench = workflow / "results" / "benchmarks"
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, wall, cpu in (("train/mnist/madry.tsv", 600.0, 590.0), ("evaluate_attack/mnist/madry/topk.tsv", 300.0, 290.5)):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(header + f"{wall}\t0:10:00\t1\t1\t1\t1\t0\t0\t98.0\t{cpu}\n")
    folder = workflow / "results" / "mnist" / "madry"
    folder.mkdir(parents=True)
    (folder / "train_metrics.json").write_text(json.dumps({
        "dataset": "mnist", "method": "madry", "wall_time_s": 580.0,
        "settings": {"steps": 1000, "m": 5, "approx_factor": 5, "pgd_steps": 10}}))
    results = tmp_path / "results"
    budget.main(["record-run", "--workflow", str(workflow), "--config", "config/mnist_cpu.yaml", "--results",
                 str(results), "--started", "100", "1000", "--ended", "700", "1300", "--note", "Idle machine."])
    run = json.loads((results / "run.json").read_text())
    assert run["elapsed_wall_s"] == 900.0 and run["invocations_wall_s"] == [600.0, 300.0]
    assert run["jobs_cpu_s"] == 880.5 and {j["rule"] for j in run["jobs"]} == {"train", "evaluate_attack"}
    lines = budget._render_run(run)
    text = "\n".join(lines)
    assert "| train mnist/madry | 10.0 min | 9.8 min | 0.58 |" in text
    assert "| evaluate_attack mnist/madry/topk | 5.0 min | 4.8 min |  |" in text
    assert "0.24 CPU-hours" in text and "0.25 h of wall time" in text and "10 min + 5 min" in text
    assert "Idle machine." in text
