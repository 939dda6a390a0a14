"""`attrrob study`: the plan read from Snakemake's summary, and a real study on digits at tiny settings
(2 seeds x 2 methods) in a temporary git repository holding a copy of the workflow: a run is
committed only when complete, a runner killed mid-way and started again skips the committed runs
and finishes the rest, a changed setting is refused in one line, and the reports (README section,
HTML pages) are rebuilt from the committed folder alone. Nothing is committed into this repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attrrob.errors import AttrrobError
from attrrob.study import plan as study_plan
from attrrob.study import regenerate, store

# --------------------------------------------------------------------------- the plan (no Snakemake)

SWEEP_FILES = [
    "reports/summary.html", "data/prepared/mnist.npz", "data/raw/mnist",
    "results/seed~0/mnist/natural/model.pt", "results/seed~0/mnist/natural/train_metrics.json",
    "results/seed~0/mnist/natural/attack_topk/summary.json", "results/seed~0/mnist/natural/attack_noise/summary.json",
    "results/seed~0/mnist/sarkar/train_metrics.json", "results/seed~0/mnist/sarkar/accuracy/summary.json",
    "results/seed~0/mnist/sarkar/sweep/lam~0.3/train_metrics.json",
    "results/seed~0/mnist/sarkar/sweep/lam~0.3/attack_topk/summary.json",
    "results/seed~0/mnist/sarkar/sweep/lam~0.3/validation/attack_topk_select/summary.json",
    "results/seed~0/mnist/sarkar/sweep/lam~1/train_metrics.json",
    "results/sweeps/mnist/sarkar/selection.json", "results/plots/figures",
    "results/seed~1/mnist/natural/train_metrics.json", "results/metrics.json", "results/table.md",
]


def test_runs_are_the_folders_of_trainings_and_nested_sweep_runs_are_runs_of_their_own():
    plan = study_plan.group(SWEEP_FILES)
    runs = {run.name: set(run.outputs) for run in plan.runs}
    assert list(runs) == ["seed~0/mnist/natural", "seed~0/mnist/sarkar", "seed~0/mnist/sarkar/sweep/lam~0.3",
                          "seed~0/mnist/sarkar/sweep/lam~1", "seed~1/mnist/natural"]
    assert runs["seed~0/mnist/sarkar"] == {"results/seed~0/mnist/sarkar/train_metrics.json",
                                           "results/seed~0/mnist/sarkar/accuracy/summary.json"}
    assert "results/seed~0/mnist/sarkar/sweep/lam~0.3/attack_topk/summary.json" in runs[
        "seed~0/mnist/sarkar/sweep/lam~0.3"]
    assert plan.upstream == ("data/prepared/mnist.npz", "data/raw/mnist")
    # The selection depends on the sweep's runs: built after them, in no run's folder; what
    # collect-results writes is rebuilt from the committed runs instead.
    assert plan.study_files == ("results/sweeps/mnist/sarkar/selection.json",)
    natural = next(run for run in plan.runs if run.name == "seed~0/mnist/natural")
    assert "results/seed~0/mnist/natural/model.pt" not in natural.kept


def test_the_plan_order_does_not_depend_on_whether_snakemake_lists_a_sweep_before_its_main_run():
    """Snakemake lists a main run's files before or after its sweep's as the files on disk decide;
    the plan (and the README's tables, which follow it) must not change order with them."""
    sweep = [f for f in SWEEP_FILES if "/sweep/" in f]
    rest = [f for f in SWEEP_FILES if "/sweep/" not in f]
    at = rest.index("results/seed~0/mnist/sarkar/train_metrics.json")
    sweep_first = rest[:at] + sweep + rest[at:]
    names = [run.name for run in study_plan.group(SWEEP_FILES).runs]
    assert [run.name for run in study_plan.group(sweep_first).runs] == names
    assert names.index("seed~0/mnist/sarkar") + 1 == names.index("seed~0/mnist/sarkar/sweep/lam~0.3")


def test_order_puts_named_runs_first_and_a_methods_sweep_before_its_main_runs():
    plan = study_plan.group(SWEEP_FILES)
    names = [run.name for run in study_plan.ordered(plan.runs, ["natural"])]
    assert names == ["seed~0/mnist/natural", "seed~1/mnist/natural", "seed~0/mnist/sarkar/sweep/lam~0.3",
                     "seed~0/mnist/sarkar/sweep/lam~1", "seed~0/mnist/sarkar"]


def test_a_main_run_waits_for_the_sweep_runs_in_progress(tmp_path):
    """Two workers: the second takes the main sarkar run while the first still trains a sweep run;
    it must not start before that sweep run ends (its selection needs it; Snakemake runs --nolock)."""
    import threading

    from attrrob.study.runner import Options, Pending, Runner

    plan = study_plan.group(SWEEP_FILES)
    todo = [run for run in study_plan.ordered(plan.runs, ["natural"]) if "sarkar" in run.name]
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    runner = Runner(Options(root=tmp_path, config="c.yaml", study=tmp_path / "s", jobs=2), log=lambda _: None)

    def fake_run(run, names):
        with lock:
            events.append(("start", run.name))
        time.sleep(0.3 if run.name.endswith("lam~1") else 0.05)
        with lock:
            events.append(("end", run.name))

    runner.run_one = fake_run
    runs = Pending(todo)
    workers = [threading.Thread(target=runner._worker, args=(runs, set())) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert events.index(("start", "seed~0/mnist/sarkar")) > events.index(("end", "seed~0/mnist/sarkar/sweep/lam~1"))
    assert len(events) == 2 * len(todo) and not runner.failed


def test_start_within_lets_the_runs_in_progress_finish_and_starts_no_other(tmp_path):
    """--start-within: two workers start two runs; once the limit has passed, they finish and are
    committed, the third run is left for the next invocation, and the runner says so (exit 0)."""
    from attrrob.study.runner import Options, Runner

    plan = study_plan.group(SWEEP_FILES)
    todo = [run for run in plan.runs if not study_plan.is_sweep(run)]
    lines: list[str] = []
    runner = Runner(Options(root=tmp_path, config="c.yaml", study=tmp_path / "s", jobs=2, start_within_s=0.1),
                    log=lines.append)
    runner.prepare = lambda: (study_plan.Plan((), plan.runs, ()), todo)
    finished: list[str] = []

    def fake_run(run, names):
        time.sleep(0.5)
        finished.append(run.name)

    runner.run_one = fake_run
    assert runner.run() == 0
    assert sorted(finished) == sorted(run.name for run in todo[:2]) and runner.left == [todo[2].name]
    assert any(line.startswith(f"drained: 1 run(s) not started ({todo[2].name})") for line in lines)


def test_finish_within_passes_over_a_run_expected_to_end_too_late(tmp_path):
    """--finish-within: a run whose method's longest committed run (at the same threads per run)
    would end past the limit is passed over for later ones that fit; a run with no committed run
    of its method starts; a method's main runs wait with its sweep runs (one estimate); the runs
    left over are named (exit 0)."""
    from attrrob.study.runner import Options, Runner

    files = SWEEP_FILES + ["results/seed~0/mnist/madry/train_metrics.json",
                           "results/seed~1/mnist/sarkar/train_metrics.json"]
    plan = study_plan.group(files)
    study = tmp_path / "s"
    # Committed: one natural run (2 threads, 20 s), one sweep run of sarkar (2 threads, 1 h) and one
    # madry run at 1 thread (its time says nothing about a 2-thread run).
    for name, wall, threads in (("seed~0/mnist/natural", 20.0, 2), ("seed~0/mnist/sarkar/sweep/lam~1", 3600.0, 2),
                                ("seed~0/mnist/madry", 1.0, 1)):
        (study / "results" / name).mkdir(parents=True)
        (study / "results" / name / store.RECORD).write_text(json.dumps(
            {"run": name, "wall_s": wall, "cpu_s": wall, "threads_per_run": threads}))
    todo = [run for run in study_plan.ordered(plan.runs, ["sarkar"])
            if run.name not in ("seed~0/mnist/natural", "seed~0/mnist/sarkar/sweep/lam~1")]
    assert [run.name for run in todo][:2] == ["seed~0/mnist/sarkar/sweep/lam~0.3", "seed~0/mnist/sarkar"]
    lines: list[str] = []
    runner = Runner(Options(root=tmp_path, config="c.yaml", study=study, jobs=1, threads_per_run=2,
                            finish_within_s=600), log=lines.append)
    assert runner.expected_wall_s(todo[0]) == 3600.0 and runner.expected_wall_s(todo[-1]) is None
    runner.prepare = lambda: (study_plan.Plan((), plan.runs, ()), todo)
    started: list[str] = []
    runner.run_one = lambda run, names: started.append(run.name)
    assert runner.run() == 0
    # The sarkar sweep run (1 h expected) and so sarkar's main runs wait; natural (20 s) fits,
    # madry has no 2-thread record and starts.
    assert started == ["seed~1/mnist/natural", "seed~0/mnist/madry"]
    assert sorted(runner.left) == ["seed~0/mnist/sarkar", "seed~0/mnist/sarkar/sweep/lam~0.3", "seed~1/mnist/sarkar"]
    assert any(line.startswith("pass over seed~0/mnist/sarkar/sweep/lam~0.3: expected 60 min") for line in lines)
    # Without the limit the order is kept as it was.
    runner = Runner(Options(root=tmp_path / "again", config="c.yaml", study=study, jobs=1), log=lines.append)
    runner.prepare = lambda: (study_plan.Plan((), plan.runs, ()), todo)
    started.clear()
    runner.run_one = lambda run, names: started.append(run.name)
    assert runner.run() == 0 and started == [run.name for run in todo]


def test_threads_per_run_gives_each_runs_jobs_that_many_threads(tmp_path):
    """--threads-per-run 2: the run's Snakemake call gets 2 cores and sets 2 threads on every rule
    that takes its threads from the config's resources (each such name is a rule of the workflow)."""
    from attrrob.study.runner import THREADED_RULES, Options, Runner

    rules = {line.split()[1].rstrip(":") for path in (Path(__file__).resolve().parents[1] / "workflow/rules").glob(
        "*.smk") for line in path.read_text().splitlines() if line.startswith(("rule ", "checkpoint "))}
    assert set(THREADED_RULES) <= rules
    calls = []
    runner = Runner(Options(root=tmp_path, config="c.yaml", study=tmp_path / "s", threads_per_run=2), log=lambda _: None)
    runner._snakemake = lambda targets, cores, name, extra=None: calls.append((cores, extra)) or (1, 0.0, 0.0, tmp_path)
    runner.run_one(study_plan.group(SWEEP_FILES).runs[0], set())
    assert calls == [(2, ["--set-threads", *(f"{rule}=2" for rule in THREADED_RULES)])]


def test_a_stopped_calls_time_counts_when_a_later_call_finishes_the_run(tmp_path, monkeypatch):
    """A runner stopped mid-run keeps that call's wall and CPU time in the workflow folder; the call
    that finishes the run (a later runner's) records the sums and lists the stopped call."""
    from attrrob.study.runner import Options, Runner

    run = study_plan.group(SWEEP_FILES).runs[0]
    options = Options(root=tmp_path / "root", config="c.yaml", study=tmp_path / "s", threads_per_run=2)
    first = Runner(options, log=lambda _: None)
    first._reused = lambda run, names: False

    def stopped(targets, cores, name, extra=None):
        first.stopping = True  # a SIGTERM arrived while this call ran
        return 143, 600.0, 1100.0, tmp_path

    first._snakemake = stopped
    first.run_one(run, set())
    (call,) = store.stopped_calls(options.root, run)
    assert (call["wall_s"], call["cpu_s"], call["threads_per_run"]) == (600.0, 1100.0, 2)

    second, recorded = Runner(options, log=lambda _: None), {}
    second._reused = lambda run, names: False
    second._snakemake = lambda targets, cores, name, extra=None: (0, 300.0, 500.0, tmp_path)
    second._record_and_commit = lambda run, copied, timing, jobs, what, **extra: recorded.update(
        timing=timing, what=what, extra=extra)
    second.commit_study_files = lambda why: False
    second.refresh_reports = lambda why: None
    monkeypatch.setattr(store, "copy_files", lambda root, study, files: [])
    second.run_one(run, set())
    started, wall, cpu = recorded["timing"][:3]
    assert (started, wall, cpu) == (call["started"], 900.0, 1600.0)
    assert recorded["what"].startswith("wall 15.0 min, CPU 26.7 min over 2 calls, load ")
    assert recorded["extra"] == {"stopped_calls": [call]}
    assert store.stopped_calls(options.root, run) == []  # counted once


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_a_sessions_cpu_time_from_proc_matches_the_kernels_rusage():
    """session_cpu_s (the minutely record's CPU time) against wait4's rusage of the same process
    tree: a leader that waits for one child that burns CPU, and burns CPU itself."""
    from attrrob.study.runner import session_cpu_s

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    script = (f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {burn!r}])\n{burn}"
              "print('burnt', flush=True)\ntime.sleep(30)\n")
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"burnt"  # both burns done, the leader going to sleep
    time.sleep(0.3)
    during = session_cpu_s(process.pid)
    process.terminate()
    _, _, usage = os.wait4(process.pid, 0)
    assert during == pytest.approx(usage.ru_utime + usage.ru_stime, abs=0.1)
    assert during > 1.1


def test_a_runs_call_records_its_time_while_it_runs_and_a_killed_ones_counts_on_restart(tmp_path, monkeypatch):
    """While a run's Snakemake call runs, its wall and CPU time so far are rewritten in the workflow
    folder; a call that ends removes them; ones left by a runner killed outright become stopped calls
    of their runs when the next runner starts."""
    from attrrob.study import runner as runner_module
    from attrrob.study.runner import Options, Runner

    if runner_module.session_cpu_s(os.getpid()) is None:
        pytest.skip("needs Linux's /proc")
    fake = tmp_path / "bin" / "snakemake"  # burns CPU, then sleeps, then fails: no run is committed
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.5: pass\ntime.sleep(1.5)\nraise SystemExit(1)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(runner_module, "HEARTBEAT_S", 0.3)
    run = study_plan.group(SWEEP_FILES).runs[0]
    options = Options(root=tmp_path / "root", config="c.yaml", study=tmp_path / "s", threads_per_run=2)
    runner = Runner(options, log=lambda _: None)
    runner._reused = lambda run, names: False
    in_progress = options.root / store.CALLS_IN_PROGRESS / f"{run.name.replace('/', '__')}.json"
    seen, finished = [], threading.Event()

    def watch():
        while not finished.is_set():
            found = store.read_json(in_progress)  # None when absent (or removed since the last look)
            if found is not None:
                seen.append(found)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    runner.run_one(run, set())
    finished.set()
    watcher.join()
    assert runner.failed == [run.name]
    assert not in_progress.exists()  # the call ended: measured in full, nothing left in progress
    last = seen[-1]
    assert last["run"] == run.name and last["call"]["threads_per_run"] == 2
    assert last["call"]["cpu_s"] >= 0.4 and 0.5 <= last["call"]["wall_s"] <= 30
    assert store.stopped_calls(options.root, run) == []  # a failed call is not a stopped one

    # A runner killed outright left its call's record: the next runner counts it (once).
    store.write_call_in_progress(options.root, run, last["call"])
    monkeypatch.setattr(Runner, "prepare", lambda self: (_ for _ in ()).throw(AttrrobError("planned")))
    logged = []
    with pytest.raises(AttrrobError, match="planned"):
        Runner(options, log=logged.append).run()
    assert store.stopped_calls(options.root, run) == [{**last["call"], "note": store.KILLED_NOTE}]
    assert logged and logged[0].startswith(f"{run.name}: a call whose runner was killed without a signal")
    assert not in_progress.exists() and store.recover_killed_calls(options.root) == []


def test_a_stopped_calls_cpu_time_counts_the_jobs_its_snakemake_did_not_wait_for(tmp_path, monkeypatch):
    """Snakemake, stopped, exits without waiting for its jobs, so wait4's rusage misses their CPU
    time (a training's hours: a real stop recorded 7 CPU-s for an hour of 2-thread training). The
    stand-in leader here starts a job that burns CPU and is killed by the stop unwaited."""
    from attrrob.study import runner as runner_module
    from attrrob.study.runner import Options, Runner

    if runner_module.session_cpu_s(os.getpid()) is None:
        pytest.skip("needs Linux's /proc")
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    marker = tmp_path / "burnt"
    burn = ("import pathlib, time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: pass\n"
            f"pathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n")
    fake.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\n"
                    f"subprocess.Popen([sys.executable, '-c', {burn!r}])\ntime.sleep(60)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    run = study_plan.group(SWEEP_FILES).runs[0]
    options = Options(root=tmp_path / "root", config="c.yaml", study=tmp_path / "s")
    runner = Runner(options, log=lambda _: None)
    runner._reused = lambda run, names: False
    worker = threading.Thread(target=runner.run_one, args=(run, set()))
    worker.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:  # the job's burn is done
        time.sleep(0.05)
    runner.stop()
    worker.join()
    (call,) = store.stopped_calls(options.root, run)
    assert 0.7 <= call["cpu_s"] <= call["wall_s"] + 1.0


def test_the_runs_table_marks_runs_of_several_calls_and_runs_timed_by_their_last_call(tmp_path):
    study = tmp_path / "s"
    load = {"load_average_start": [1.0], "load_average_end": [2.0]}
    records = {"seed~0/mnist/madry": {"wall_s": 900.0, "cpu_s": 1600.0, "stopped_calls": [{"wall_s": 600.0}], **load},
               "seed~1/mnist/madry": {"wall_s": 300.0, "cpu_s": 300.0, **load},
               "seed~2/mnist/madry": {"wall_s": 60.0, "cpu_s": 60.0, **load}}
    for name, record in records.items():
        (study / "results" / name).mkdir(parents=True)
        (study / "results" / name / store.RECORD).write_text(json.dumps({"run": name, **record}))
    (study / "results/seed~1/mnist/madry/train_metrics.json").write_text(json.dumps({"resumed_from_step": 600}))
    table = regenerate.runs_table(study, list(records))
    assert "| `seed~0/mnist/madry` (2 calls) | 15.0 | 26.7 | 1.00 → 2.00 |" in table
    assert "| `seed~1/mnist/madry` (last call only: training resumed at step 600) | 5.0 | 5.0 |" in table
    assert "| `seed~2/mnist/madry` | 1.0 | 1.0 |" in table
    assert "Summed over these runs: 0.35 h of wall time" in table


def test_a_run_with_its_settings_written_builds_no_study_file(tmp_path):
    """Before a run, the runner looks for a committed run with its settings; it builds the study
    files (a sweep's selection) only for a main run whose settings wait for them, and only once
    every sweep run is committed: otherwise building the selection would train the sweep."""
    from attrrob.study.runner import Options, Runner

    plan = study_plan.group(SWEEP_FILES)
    runs = {run.name: run for run in plan.runs}
    names = set(runs)
    calls: list = []
    runner = Runner(Options(root=tmp_path / "root", config="c.yaml", study=tmp_path / "s"), log=lambda _: None)
    runner._study_file_names = plan.study_files
    runner._snakemake = lambda targets, cores, name, extra=None: calls.append(name) or (0, 0.0, 0.0, tmp_path)
    natural = runs["seed~0/mnist/natural"]
    for output in natural.outputs:  # its settings are written when the workflow is read
        folder = tmp_path / "root" / Path(output).parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text("{}")
    committed = {"seed~1/mnist/natural"}
    for name in committed:
        (tmp_path / "s" / "results" / name).mkdir(parents=True)
        (tmp_path / "s" / "results" / name / store.RECORD).write_text(json.dumps({"files": []}))
    assert runner._reused(natural, names) is False and calls == []
    # The main sarkar run: its settings wait for the selection, and the sweep is not committed.
    assert runner._reused(runs["seed~0/mnist/sarkar"], names) is False and calls == []


def test_plan_json_lists_what_the_tables_are_collected_over():
    recorded = study_plan.group(SWEEP_FILES).to_json("config/x.yaml")
    assert recorded["seeds"] == [0, 1] and recorded["datasets"] == ["mnist"]
    # Config order; test attacks only (the selection's validation attack has no test results to show).
    assert recorded["methods"] == ["natural", "sarkar"] and recorded["attacks"] == ["topk", "noise"]


def test_a_runs_benchmark_files_include_its_validation_jobs_not_a_nested_runs(tmp_path):
    point, main = "seed~0/mnist/sarkar/sweep/lam~0.1", "seed~0/mnist/sarkar"
    names = [f"train/{point}.tsv", f"evaluate_attack/{point}/topk.tsv", f"evaluate_accuracy/validation/{point}.tsv",
             f"evaluate_attack/validation/{point}/topk_select.tsv", f"train/{main}.tsv",
             f"evaluate_attack/{main}/topk.tsv"]
    for name in names:
        path = tmp_path / "results" / "benchmarks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("s\tcpu_time\n1\t1\n")
    runs = {point, main}
    assert sorted(study_plan.benchmark_files(tmp_path, study_plan.Run(point, ()), runs)) == sorted(
        f"results/benchmarks/{name}" for name in names[:4])
    assert sorted(study_plan.benchmark_files(tmp_path, study_plan.Run(main, ()), runs)) == sorted(
        f"results/benchmarks/{name}" for name in names[4:])


def test_the_cost_table_averages_each_jobs_cpu_time_over_a_methods_runs(tmp_path):
    study = tmp_path / "study"
    jobs = {"seed~0/mnist/madry": {"train": 600, "accuracy": 120, "topk": 1200},
            "seed~1/mnist/madry": {"train": 720, "accuracy": 60, "topk": 1500},
            "seed~0/mnist/sarkar/sweep/lam~0.1": {"train": 3000, "validation/accuracy": 30}}
    for run, costs in jobs.items():
        listed = []
        for job, cpu in costs.items():
            split, _, name = job.rpartition("/")
            prefix = f"{split}/" if split else ""
            path = {"train": f"results/benchmarks/train/{prefix}{run}.tsv",
                    "accuracy": f"results/benchmarks/evaluate_accuracy/{prefix}{run}.tsv"}.get(
                name, f"results/benchmarks/evaluate_attack/{prefix}{run}/{name}.tsv")
            listed.append({"benchmark": path, "cpu_s": cpu, "wall_s": 2 * cpu})
        (study / "results" / run).mkdir(parents=True)
        (study / "results" / run / store.RECORD).write_text(json.dumps({"jobs": listed}))
    table = regenerate.cost_table(study, list(jobs))
    assert "| Method | Runs | train | accuracy | topk | validation accuracy | all jobs |" in table
    assert "| madry | 2 | 11.0 | 1.5 | 22.5 | – | 35.0 |" in table  # (600+720)/2 s = 11.0 min, ...
    assert "| sarkar (sweep) | 1 | 50.0 | – | – | 0.5 | 50.5 |" in table
    assert "stopped calls" not in table  # no run was stopped

    # A Madry run stopped twice: its calls' CPU time in a column of its own, 0 for the other run.
    record = study / "results" / "seed~1/mnist/madry" / store.RECORD
    record.write_text(json.dumps({**json.loads(record.read_text()),
                                  "stopped_calls": [{"cpu_s": 900.0, "wall_s": 1.0}, {"cpu_s": 300.0, "wall_s": 1.0}]}))
    table = regenerate.cost_table(study, list(jobs))
    assert "| Method | Runs | train | accuracy | topk | validation accuracy | stopped calls | all jobs |" in table
    assert "| madry | 2 | 11.0 | 1.5 | 22.5 | – | 10.0 | 45.0 |" in table  # (0 + 1200)/2 s = 10.0 min
    assert "| sarkar (sweep) | 1 | 50.0 | – | – | 0.5 | 0.0 | 50.5 |" in table
    assert '"stopped calls" is the CPU time of a run\'s calls stopped before the one that finished it' in table


def test_summary_without_its_table_is_one_clear_error():
    with pytest.raises(AttrrobError, match="no 'output_file' table"):
        study_plan.parse_summary("Building DAG of jobs...\n")


def test_snakemake_missing_from_path_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no snakemake on it
    with pytest.raises(AttrrobError, match="snakemake: not found on PATH"):
        study_plan.summary(tmp_path, [])
    with pytest.raises(AttrrobError, match="report mnist: papermill: not found on PATH"):
        regenerate._checked(["papermill", "in.ipynb", "out.ipynb"], "mnist")


def test_changed_setting_names_the_first_differing_key():
    assert store.changed_setting({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}) is None
    assert store.changed_setting({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}) == "b.c: 2 committed, 3 now"
    assert store.changed_setting({"a": 1}, {}) == 'a: 1 committed, "<absent>" now'


# --------------------------------------------------------------------------- a real study (digits)

pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("snakemake") is None,
                                reason="needs git and snakemake")

TINY = """\
datasets: [digits]
methods: [madry, natural]
seeds: [0, 1]
attacks: [topk, noise]
data: {mirror: null}
device: cpu
evaluation: {save_examples: 2}
resources:
  gpu: false
  data: {threads: 1, mem_mb: 2000, runtime: 10}
  train: {threads: 1, mem_mb: 2000, runtime: 30}
  evaluate: {threads: 1, mem_mb: 2000, runtime: 30}
  report: {threads: 1, mem_mb: 2000, runtime: 10}
hyperparameters:
  digits:
    train:
      common: {steps: STEPS, batch_size: 32, m: 2, approx_factor: 2, pgd_steps: 2, pgd_step_size: 0.04, log_every: 5, checkpoint_every: 10}
    accuracy: {num_examples: 40, autoattack_iterations: 2, autoattack_target_classes: 2}
    attack: {iterations: 2, ig_steps: 4, num_examples: 20}
    prepare: {validation_fraction: 0.2}
# Madry's inner PGD steps chosen on validation (IN under the top-k attack), one seed per value: the
# selection is a study file, committed once built, and the reports show the sweep.
sweeps:
  digits:
    madry:
      train: {pgd_steps: [1, 2]}
      select: {metric: IN, attack: topk, num_examples: 20, rule: max, na_guard: 50}
"""
IDENTITY = {"GIT_AUTHOR_NAME": "attrrob test", "GIT_AUTHOR_EMAIL": "test@attrrob.invalid",
            "GIT_COMMITTER_NAME": "attrrob test", "GIT_COMMITTER_EMAIL": "test@attrrob.invalid"}
STUDY = "studies/tiny"
SWEEP_RUNS = ["seed~0/digits/madry/sweep/pgd_steps~1", "seed~0/digits/madry/sweep/pgd_steps~2"]
RUNS = ["seed~0/digits/madry", *SWEEP_RUNS, "seed~0/digits/natural", "seed~1/digits/madry", "seed~1/digits/natural"]
SWEEP_FOLDER = "results/sweeps/digits/madry"


def environment() -> dict:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, **IDENTITY, "PATH": path, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def study_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "attrrob", "study", *args]


RUN_ARGS = ("run", "--config", "config/tiny.yaml", "--study", STUDY, "--jobs", "2", "--order", "madry",
            "--readme", "README.md")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env=environment()).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    from test_workflow import copy_workflow

    root = copy_workflow(tmp_path_factory.mktemp("study") / "repo")
    (root / "config/tiny.yaml").write_text(TINY.replace("STEPS", "20"))
    (root / "README.md").write_text("# x\n\n<!-- results-table:start -->\n<!-- results-table:end -->\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "workflow")
    return root


def committed_run_messages(repo: Path) -> list[str]:
    return [line for line in git(repo, "log", "--format=%s").splitlines() if re.match(r"study tiny: seed~", line)]


def assert_committed_runs_are_complete(repo: Path) -> list[str]:
    """Every run with a record is complete and committed with its own files alone; no other
    run left files in the study folder; nothing there is uncommitted."""
    study = repo / STUDY
    assert git(repo, "status", "--porcelain", "--", STUDY) == ""
    done = [name for name in RUNS if (study / "results" / name / store.RECORD).is_file()]
    for name in done:
        record = json.loads((study / "results" / name / store.RECORD).read_text())
        files = set(record["files"])
        for leaf in ("train_log.csv", "train_metrics.json", "settings.json", "accuracy/summary.json",
                     "attack_topk/per_example.csv", "attack_topk/trace.npz", "attack_noise/summary.json"):
            assert f"results/{name}/{leaf}" in files, (name, leaf)
        assert not any(f.endswith("model.pt") for f in files)
        assert all((study / f).is_file() for f in files)
        assert record["load_average_start"] and record["load_average_end"]
        if record.get("reused_from"):  # the files of a run with identical settings: no job of its own
            assert record["cpu_s"] == 0 and not record["jobs"]
        else:
            assert f"results/benchmarks/train/{name}.tsv" in files and record["cpu_s"] > 0
        (commit,) = [line.split(" ", 1)[0] for line in git(repo, "log", "--format=%H %s").splitlines()
                     if line.endswith(")") and (f": {name} (wall" in line or f": {name} (the files of" in line)]
        changed = set(git(repo, "show", "--name-only", "--format=", commit).split())
        assert changed == {f"{STUDY}/{f}" for f in files} | {f"{STUDY}/results/{name}/{store.RECORD}"}
    for name in set(RUNS) - set(done):
        folder = study / "results" / name
        nested = [study / "results" / other for other in RUNS if other.startswith(name + "/")]
        left = [p for p in folder.rglob("*") if p.is_file() and not any(n in p.parents for n in nested)]
        assert not left, f"{name} left files without being committed: {left[:3]}"
    return done


@pytest.mark.slow
def test_a_killed_study_keeps_its_complete_runs_and_a_restart_finishes_the_rest(repo):
    runner = subprocess.Popen(study_command(*RUN_ARGS), cwd=repo, env=environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not committed_run_messages(repo) and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    second = subprocess.run(study_command(*RUN_ARGS), cwd=repo, env=environment(), capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 2 and f"another `attrrob study run` (PID {runner.pid})" in second.stderr
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 128 + signal.SIGTERM, output
    done = assert_committed_runs_are_complete(repo)
    assert 1 <= len(done) < len(RUNS), output
    assert any("/madry" in name for name in done)  # --order madry: madry (its sweep first) before natural

    # In progress: the README section says how many runs are in and what that means, and the
    # runner committed it regenerated after each run (what CI's --check compares).
    section = regenerate.readme_section(repo / STUDY)
    assert f"Study in progress: {len(done)} of {len(RUNS)} planned runs committed" in section
    assert f"Study in progress: {len(done)} of {len(RUNS)}" in (repo / "README.md").read_text()
    check = subprocess.run(study_command("report", "--study", STUDY, "--readme", "README.md", "--check"),
                           cwd=repo, env=environment(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr

    # The runs the stop cut short keep their call's time for the call that finishes them.
    for path in (repo / store.STOPPED_CALLS).glob("*.json"):
        stopped = json.loads(path.read_text())
        assert stopped["run"] not in done and all(c["wall_s"] > 0 for c in stopped["calls"])

    # The rest on a fresh machine: nothing of the first one's work tree but what it committed.
    for name in ("results", "checkpoints", "logs", ".snakemake"):
        shutil.rmtree(repo / name, ignore_errors=True)
    rerun = subprocess.run(study_command(*RUN_ARGS), cwd=repo, env=environment(), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for name in done:
        assert f"skip {name}: committed" in rerun.stdout
        # Restored from the study folder, not made again: its weights stay missing.
        assert (repo / "results" / name / "train_metrics.json").is_file()
        assert not (repo / "results" / name / "model.pt").exists()
    assert "committed file(s) into results/" in rerun.stdout
    assert assert_committed_runs_are_complete(repo) == RUNS
    assert len(committed_run_messages(repo)) == len(RUNS)
    # The sweep's selection (built when the first main madry run needed it) and the sweep.json it
    # was made from are committed, as the files the workflow wrote.
    for name in ("selection.json", "sweep.json"):
        assert (repo / STUDY / SWEEP_FOLDER / name).read_bytes() == (repo / SWEEP_FOLDER / name).read_bytes()
        assert git(repo, "log", "--format=%s", "--", f"{STUDY}/{SWEEP_FOLDER}/{name}").strip()
    chosen = json.loads((repo / SWEEP_FOLDER / "selection.json").read_text())["chosen"]["label"]
    trained = json.loads((repo / STUDY / "results/seed~1/digits/madry/train_metrics.json").read_text())
    assert f"pgd_steps~{trained['settings']['pgd_steps']}" == chosen
    # The main seed-0 run at the chosen point has that point's settings, byte for byte: its files
    # are the point's (committed as such), not a second training.
    point = f"seed~0/digits/madry/sweep/{chosen}"
    record = json.loads((repo / STUDY / "results/seed~0/digits/madry" / store.RECORD).read_text())
    assert record["reused_from"] == point
    for leaf in ("train_log.csv", "attack_topk/per_example.csv", "accuracy/summary.json"):
        assert ((repo / STUDY / "results/seed~0/digits/madry" / leaf).read_bytes()
                == (repo / STUDY / "results" / point / leaf).read_bytes())
    assert f"`seed~0/digits/madry` | – | – | the files of `{point}`" in (repo / "README.md").read_text()


@pytest.mark.slow
def test_a_changed_setting_is_refused_in_one_line(repo):
    if len(committed_run_messages(repo)) < len(RUNS):
        pytest.skip("needs the finished study of the test before")
    config = repo / "config/tiny.yaml"
    config.write_text(TINY.replace("STEPS", "30"))
    head = git(repo, "rev-parse", "HEAD")
    try:
        result = subprocess.run(study_command(*RUN_ARGS), cwd=repo, env=environment(), capture_output=True,
                                text=True, timeout=300)
    finally:
        config.write_text(TINY.replace("STEPS", "20"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "settings.json was committed with other settings than config/tiny.yaml gives now" in lines[0]
    assert "steps: 20 committed, 30 now" in lines[0] and "--redo seed~0/digits/madry" in lines[0]  # or its sweep
    assert git(repo, "rev-parse", "HEAD") == head


@pytest.mark.slow
def test_reports_regenerate_from_the_committed_folder_alone(repo, tmp_path):
    if len(committed_run_messages(repo)) < len(RUNS):
        pytest.skip("needs the finished study of the test before")
    # A clone holds only what was committed: the reports are built there.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    report = [*study_command("report", "--study", STUDY, "--readme", "README.md"), "--html"]
    result = subprocess.run(report, cwd=clone, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (clone / "README.md").read_text()
    assert f"Study complete: all {len(RUNS)} planned runs of `config/tiny.yaml`" in readme
    assert "2 seeds (0, 1)" in readme and "| digits (8×8) | Madry PGD-AT |" in readme
    # The sweep, from the committed selection and sweep runs: every point's test numbers, the chosen
    # one marked, in the README and in the data set's page (with its sensitivity plot).
    chosen = json.loads((clone / STUDY / SWEEP_FOLDER / "selection.json").read_text())["chosen"]["label"]
    assert "### Sweep: digits (8×8), Madry PGD-AT" in readme and f"**{chosen}** (chosen)" in readme
    sweep_rows = [line for line in readme.splitlines() if line.startswith("| pgd_steps~") or
                  line.startswith("| **pgd_steps~")]
    assert len(sweep_rows) == 2 and not any("—" in row.split("|")[3] for row in sweep_rows)  # NA found
    assert "Sweep: digits (8×8), Madry PGD-AT" in (clone / STUDY / "reports/digits.html").read_text()
    # The sentences above the tables, from the same files: the baselines and the sweep's choice.
    assert "- **The baselines.** Natural: AA " in readme and "(2 seeds, t interval over seeds)" in readme
    assert "- **Madry PGD-AT's sweep** (test numbers under `topk`; one entry per point): " in readme
    assert "images by max of validation IN under the topk attack" in readme
    assert f"first point listed: **{chosen}** (validation IN " in readme
    for name in ("summary", "digits"):
        page = (clone / STUDY / "reports" / f"{name}.html").read_text()
        assert "<img" in page and "Traceback" not in page
        # Self-contained: every image embedded, no link to a file a clone lacks.
        assert not re.findall(r'src="(?!data:)', page)
        assert not [h for h in re.findall(r'href="([^"]*)"', page) if not h.startswith(("#", "http", "data:"))]
    check = subprocess.run(study_command("report", "--study", STUDY, "--readme", "README.md", "--check"),
                           cwd=clone, env=environment(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    (clone / "README.md").write_text(readme.replace("Study complete", "Study done"))
    check = subprocess.run(study_command("report", "--study", STUDY, "--readme", "README.md", "--check"),
                           cwd=clone, env=environment(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 2 and "README.md differ(s)" in check.stderr
