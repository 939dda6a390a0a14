"""`attrrob study status` on a synthetic study and workflow folder: committed runs with their times,
a run in progress with its newest log's progress line (not its nested sweep run's), a sweep's main
run that will reuse the chosen point, the runner's lock, and the wall time left summed by hand."""

from __future__ import annotations

import json
import os

import pytest

from attrrob.cli import study as study_cli
from attrrob.locks import try_flock
from attrrob.study import status

RUNS = ["seed~0/mnist/madry", "seed~1/mnist/madry", "seed~0/mnist/sarkar", "seed~0/mnist/sarkar/sweep/lam~0.1",
        "seed~0/mnist/sarkar/sweep/lam~0.5", "seed~1/mnist/sarkar", "seed~0/mnist/ig_norm"]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _record(study, run, wall, cpu, threads, **extra):
    _write(study / "results" / run / "study_run.json",
           json.dumps({"run": run, "wall_s": wall, "cpu_s": cpu, "threads_per_run": threads, **extra}))


@pytest.fixture
def workflow(tmp_path):
    root, study = tmp_path, tmp_path / "studies/s"
    _write(study / "plan.json", json.dumps({"config": "config/c.yaml", "runs": RUNS}))
    _record(study, "seed~0/mnist/madry", 3000.0, 2400.0, 1)
    _record(study, "seed~1/mnist/madry", 1200.0, 1100.0, 2)
    _record(study, "seed~0/mnist/sarkar/sweep/lam~0.1", 6000.0, 11500.0, 2)
    _write(study / "results/sweeps/mnist/sarkar/sweep.json",
           json.dumps({"seeds": [0], "select": {"metric": "IN"}, "points": []}))
    line = "2026-12-06 19:40:40 INFO attrrob.train: mnist/sarkar step: {}/2000 steps ({}%), ce 5, 0.3 steps/s, ETA {}"
    _write(root / "logs/train/seed~0/mnist/sarkar/sweep/lam~0.5.log",
           "\n".join([line.format(200, 10, "1:55:10"), "2026-12-06 19:41:00 INFO attrrob.train: checkpoint written",
                      line.format(226, 11, "1:50:00")]) + "\n")
    # An older log of the same run, and a log of the main run that nests it: neither is its progress.
    older = root / "logs/evaluate_attack/seed~0/mnist/sarkar/sweep/lam~0.5/topk.log"
    _write(older, line.format(3, 1, "9:00:00") + "\n")
    os.utime(older, (1, 1))
    return root, study


def test_status_lists_each_run_and_the_time_left(workflow):
    root, study = workflow
    lines = status.report(root, study, threads_per_run=2, jobs=1)
    assert lines[0] == (f"study {study} (config/c.yaml): 3 of 7 runs committed; no runner runs in {root}")
    by_run = {line.split()[0]: line for line in lines[1:-1]}
    assert by_run["seed~0/mnist/madry"].endswith("committed: wall 50 min, CPU 40 min, 1 thread(s)")
    assert by_run["seed~0/mnist/sarkar"].endswith("to take the files of its sweep's chosen point (no training)")
    assert by_run["seed~0/mnist/sarkar/sweep/lam~0.5"].endswith(
        "last logged: train: mnist/sarkar step 226/2000 steps (11%) at 2026-12-06 19:40:40, ETA 1:50:00; "
        "expected 1.7 h at 2 thread(s)")
    assert status.progress(root, "seed~0/mnist/sarkar", set(RUNS)) is None  # its nested runs' logs are theirs
    assert by_run["seed~1/mnist/sarkar"].endswith("to run: expected 1.7 h at 2 thread(s)")
    assert by_run["seed~0/mnist/ig_norm"].endswith(
        "to run: no committed run of its method, or of one with a measured per-step cost, to estimate from")
    # A second committed run of a method: the median is expected, the longer one the bound, and the
    # line says how far they lie apart.
    _record(study, "seed~1/mnist/sarkar", 9000.0, 12000.0, 2)
    two = status.report(root, study, threads_per_run=2, jobs=1)
    assert {line.split()[0]: line for line in two[1:-1]}["seed~0/mnist/sarkar/sweep/lam~0.5"].endswith(
        "expected 2.1 h at 2 thread(s), at most 2.5 h (the median and longest of its method's 2 committed runs, "
        "which took 1.7 h to 2.5 h)")
    assert "about 2.1 h of wall time" in two[-1] and "at most about 2.5 h" in two[-1]
    (study / "results/seed~1/mnist/sarkar/study_run.json").unlink()
    # Left: lam~0.5 and seed~1 sarkar at 6000 s each (madry's 2-thread run is committed): 200 min.
    assert lines[-1].startswith("left: 4 run(s), about 3.3 h of wall time at 1 at a time and 2 thread(s) each")
    assert "at most about 3.3 h" in lines[-1]
    assert lines[-1].endswith("not counted: 1 run(s) with no estimate")
    # At one thread only the one-thread Madry record could estimate, and no Madry run is left.
    assert "about 0 min" in status.report(root, study, threads_per_run=1, jobs=1)[-1]


def test_a_run_in_training_counts_its_logged_eta_plus_its_methods_median_evaluation(workflow):
    root, study = workflow
    # Sarkar's committed runs: 6000 s (4000 s training) and 9000 s (6000 s training), 2000 s and
    # 3000 s of evaluation; Madry's evaluation (100 s) is another method's and does not count.
    _record(study, "seed~0/mnist/sarkar/sweep/lam~0.1", 6000.0, 11500.0, 2, jobs=_jobs(4000.0, [1500.0, 500.0]))
    _record(study, "seed~1/mnist/sarkar", 9000.0, 12000.0, 2, jobs=_jobs(6000.0, [3000.0]))
    _record(study, "seed~1/mnist/madry", 1200.0, 1100.0, 2, jobs=_jobs(1100.0, [100.0]))
    assert status.training_eta_s(root, "seed~0/mnist/sarkar/sweep/lam~0.5", set(RUNS)) == 6600.0
    assert status.evaluation_wall_s(status.records(study), "seed~0/mnist/sarkar/sweep/lam~0.5", 2) == (
        2500.0, "its method's")
    # A method without a committed run of its own takes the data set's median (here 100, 2000, 3000 s).
    assert status.evaluation_wall_s(status.records(study), "seed~0/mnist/ig_norm", 2) == (2000.0, "its data set's")
    lines = status.report(root, study, threads_per_run=2, jobs=1)
    line = next(line for line in lines if line.split()[0] == "seed~0/mnist/sarkar/sweep/lam~0.5")
    assert line.endswith("about 2.5 h left (the logged ETA plus its method's median evaluation, 42 min)")
    # Left: lam~0.5's 6600 + 2500 s (the bound counts it in full as the longest, 9000 s), and ig_norm
    # scaled from Sarkar's longer run (nearer in step_costs.yaml's per-step cost than Madry's).
    ig_norm = 3000.0 + 6000.0 * 1.5926 / 3.7988
    assert f"about {(9100.0 + ig_norm) / 3600:.1f} h of wall time" in lines[-1]
    assert f"at most about {(9000.0 + ig_norm) / 3600:.1f} h" in lines[-1]
    # Once the newest log is an evaluation's, its ETA is not the training's.
    evaluation = root / "logs/evaluate_attack/seed~0/mnist/sarkar/sweep/lam~0.5/topk.log"
    os.utime(evaluation, None)
    assert status.training_eta_s(root, "seed~0/mnist/sarkar/sweep/lam~0.5", set(RUNS)) is None


def test_status_names_the_runner_holding_the_lock(workflow):
    root, study = workflow
    (root / status.RUNNER_LOCK).parent.mkdir(parents=True)
    fd = try_flock(root / status.RUNNER_LOCK)
    try:
        assert f"a runner (PID {os.getpid()}) runs in {root}" in status.report(root, study)[0]
    finally:
        os.close(fd)
    assert "no runner runs" in status.report(root, study)[0]


def test_status_cli_prints_the_report_and_refuses_a_study_without_a_plan(workflow, monkeypatch, capsys):
    root, study = workflow
    monkeypatch.chdir(root)
    study_cli.main(["status", "--study", "studies/s", "--threads-per-run", "2"])
    assert "3 of 7 runs committed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        study_cli.main(["status", "--study", "studies/none"])
    assert stop.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "studies/none/plan.json: no plan yet" in error[0]


def _jobs(train_wall, other_walls):
    return [{"benchmark": "results/benchmarks/train/x.tsv", "wall_s": train_wall, "cpu_s": 1.0},
            *({"benchmark": f"results/benchmarks/evaluate_attack/x/{i}.tsv", "wall_s": w, "cpu_s": 1.0}
              for i, w in enumerate(other_walls))]


COSTS = {"cpu": {"mnist": {"seconds_per_step": {"natural": 0.05, "madry": 0.5, "ig_norm": 1.6,
                                                  "ig_sum_norm": 2.0, "sarkar": 4.0}}}}


def test_a_method_without_runs_is_scaled_from_the_nearest_in_per_step_cost():
    records = {
        # Madry: 1000 s of training + 500 s of evaluation; ig_sum_norm two runs, the longer counts.
        "seed~0/mnist/madry": {"run": "seed~0/mnist/madry", "wall_s": 1500.0, "threads_per_run": 2,
                               "jobs": _jobs(1000.0, [300.0, 200.0])},
        "seed~0/mnist/ig_sum_norm": {"run": "seed~0/mnist/ig_sum_norm", "wall_s": 4000.0, "threads_per_run": 2,
                                     "jobs": _jobs(3000.0, [600.0, 400.0])},
        # Resumed once: its training benchmark has the last call only; the record's wall has both.
        "seed~1/mnist/ig_sum_norm": {"run": "seed~1/mnist/ig_sum_norm", "wall_s": 5000.0, "threads_per_run": 2,
                                     "stopped_calls": [{"wall_s": 2500.0}], "jobs": _jobs(1500.0, [600.0, 400.0])},
        "seed~0/mnist/sarkar": {"run": "seed~0/mnist/sarkar", "wall_s": 9000.0, "threads_per_run": 1,
                                "jobs": _jobs(8000.0, [1000.0])},
    }
    # ig_norm's nearest costed method with a 2-thread run is ig_sum_norm (ratio 0.8, against madry's
    # 3.2); its longer run: 1000 s of evaluation + 4000 s of training x 0.8.
    assert status.scaled_estimate(records, "seed~2/mnist/ig_norm", 2, COSTS) == (1000.0 + 4000.0 * 0.8, "ig_sum_norm")
    # Sarkar's only run is at one thread: at two, the nearest is ig_sum_norm again (ratio 2).
    assert status.scaled_estimate(records, "seed~1/mnist/sarkar", 2, COSTS) == (1000.0 + 4000.0 * 2.0, "ig_sum_norm")
    # Nothing to scale from: another data set, or a method without a measured cost.
    assert status.scaled_estimate(records, "seed~0/fashion_mnist/ig_norm", 2, COSTS) is None
    assert status.scaled_estimate(records, "seed~0/mnist/sarkar_cacr", 2, COSTS) is None
    # A method with a run of its own is not scaled.
    assert status.estimate(records, "seed~1/mnist/sarkar", 1) == (9000.0, None)


def test_status_says_which_estimate_is_scaled(workflow):
    root, study = workflow
    _record(study, "seed~1/mnist/madry", 1200.0, 1100.0, 2, jobs=_jobs(1000.0, [200.0]))
    lines = status.report(root, study, threads_per_run=2, jobs=1)
    line = next(line for line in lines if line.split()[0] == "seed~0/mnist/ig_norm")
    # step_costs.yaml's MNIST costs: ig_norm 1.5926, madry 0.5337 s per step (sarkar has a run of
    # its own but no jobs, so only madry can be scaled from).
    expected = 200.0 + 1000.0 * 1.5926 / 0.5337
    assert line.endswith(f"to run: expected {expected / 60:.0f} min at 2 thread(s) (no committed run of its "
                         "method at that thread count: madry's, its training scaled by per-step cost)")
    assert "not counted" not in lines[-1]


@pytest.mark.parametrize("benchmark, label", [
    ("results/benchmarks/train/seed~0/mnist/sarkar/sweep/lam~0.5.tsv", "train"),
    ("results/benchmarks/evaluate_accuracy/seed~0/mnist/sarkar/sweep/lam~0.5.tsv", "accuracy"),
    ("results/benchmarks/evaluate_attack/seed~0/mnist/sarkar/sweep/lam~0.5/topk.tsv", "topk"),
    ("results/benchmarks/evaluate_attack/validation/seed~0/mnist/sarkar/sweep/lam~0.5/topk_select.tsv",
     "validation topk_select"),
    ("results/benchmarks/evaluate_accuracy/validation/seed~0/mnist/sarkar/sweep/lam~0.5.tsv", "validation accuracy"),
    ("logs/train/seed~0/mnist/sarkar/sweep/lam~0.5.log", ""),
])
def test_a_benchmark_path_names_its_job_for_the_cost_table_and_the_estimate(benchmark, label):
    from attrrob.study.plan import job_label

    assert job_label(benchmark, "seed~0/mnist/sarkar/sweep/lam~0.5") == label
