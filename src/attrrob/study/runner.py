"""A resumable study: every run of the workflow's target, run one at a time per worker and committed
to git as soon as it is complete, so that a lost machine loses only the runs in progress.

Each worker runs one whole run (its training and all its evaluations) with its own
`snakemake <that run's outputs> --cores 1 --nolock`: the runs' outputs are disjoint and the shared
upstream data are built once before any worker starts, so no two Snakemake processes ever write
the same file and Snakemake's lock (which would serialise them) is not needed. Runs finish one by
one instead of all trainings first. A runner stopped (SIGTERM, SIGINT) stops its Snakemake
processes; started again it skips the committed runs and resumes the others (training from its
checkpoints on the same machine, through --rerun-incomplete). A runner killed outright (SIGKILL)
cannot stop them: end those Snakemake processes before starting it again; the time its calls had
taken up to their last minutely record counts as stopped calls of their runs. One runner per
workflow folder at a time (a lock in its .snakemake/ folder).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from attrrob import outputs
from attrrob.errors import AttrrobError
from attrrob.study import plan as study_plan
from attrrob.study import status as study_status
from attrrob.study import store
from attrrob.study.plan import Plan, Run

STOP_GRACE_S = 60  # a stopped training writes its checkpoint first
HEARTBEAT_S = 60.0  # how often a run's call records its time so far (store.CALLS_IN_PROGRESS)


def session_cpu_s(session: int) -> float | None:
    """CPU seconds of the processes of `session` now (user + system, with the children each has
    waited for), from /proc; None where /proc has no process table. A call's processes all lie in
    the session its Snakemake leads, so this is the call's CPU time so far."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # After the command name (in parentheses, which may hold spaces): state, ppid, pgrp,
            # session, ... utime, stime, cutime, cstime are fields 14-17 of proc(5).
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        if int(fields[3]) == session:
            total += sum(int(value) for value in fields[11:15])
    return total / ticks


def _call_record(started: float, wall: float, cpu: float, threads: int, load_start, load_end) -> dict:
    """One call's time as stopped and in-progress calls keep it (store.add_stopped_call)."""
    return {"started": started, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "threads_per_run": threads,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in load_end]}


# The workflow's rules whose `threads:` come from its config's resources (train, evaluate).
THREADED_RULES = ("train", "evaluate_accuracy", "evaluate_attack", "evaluate_validation_accuracy",
                  "evaluate_validation_attack")


@dataclass
class Options:
    root: Path  # the workflow's folder (Snakefile, results/)
    config: str  # the --configfile
    study: Path
    jobs: int = 2
    order: list[str] = field(default_factory=list)
    redo: list[str] = field(default_factory=list)
    snakemake_args: list[str] = field(default_factory=list)
    target: str = "all"
    nice: int = 19
    # What `attrrob study report` rebuilds after each committed run (None: the study folder's own
    # table, metrics and README only), so the committed tree always matches its runs.
    readme: Path | None = None
    budgets: Path | None = None
    budget_sources: list[Path] | None = None
    html: bool = False
    # Start no run later than this many seconds after the runner starts (None: no limit): for a
    # session or allocation of limited length, whose end would otherwise lose the runs in progress.
    start_within_s: float | None = None
    # Threads of each run's jobs (and the cores its Snakemake call gets): 1 runs `jobs` runs side
    # by side; more lets one long run finish within a session (its results then differ in the last
    # bits from a 1-thread run's; train_metrics.json records the thread count).
    threads_per_run: int = 1
    # Start a run only if it is expected to end within this many seconds of the runner's start
    # (None: no such check): its expected wall time is the longest of the committed runs of the same
    # data set and method at the same threads_per_run; a run with none such is not held back. A run
    # that does not fit is passed over for a later one that does.
    finish_within_s: float | None = None

    def snakemake(self) -> list[str]:
        return ["--configfile", self.config, *self.snakemake_args]


class Pending:
    """The runs not yet started, in order; a worker takes the first that may start now."""

    def __init__(self, runs):
        self._runs, self._lock = list(runs), threading.Lock()

    def take(self, may_start: Callable[[Run], bool]) -> Run | None:
        """The first run for which `may_start(run)` holds, removed; None if none."""
        with self._lock:
            for index, run in enumerate(self._runs):
                if may_start(run):
                    return self._runs.pop(index)
        return None

    def remaining(self) -> list[Run]:
        with self._lock:
            return list(self._runs)


class Runner:
    def __init__(self, options: Options, log: Callable[[str], None] = print):
        self.options, self.log = options, log
        self._active: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        # Held from a run's copy to its commit: a stop waits for it, so no run is left half-copied.
        self._finishing = threading.Lock()
        self.stopping = False
        self.draining = False  # no new run: those in progress finish and are committed
        self._started = time.monotonic()
        self.failed: list[str] = []
        self.left: list[str] = []  # runs not started because the runner was draining
        # Sweep runs in progress: a main run dequeued after them waits, because it needs their
        # selection and Snakemake (--nolock) would otherwise build the same sweep run twice at once.
        self._sweeps_running: set[str] = set()
        self._sweeps_done = threading.Condition()
        self._study_file_names: tuple[str, ...] = ()  # the plan's study files (set by prepare)
        self._passed_over: set[str] = set()  # runs said not to fit (--finish-within), logged once
        # The run each Snakemake call (by its log name) runs, with its start: its time so far is
        # recorded every HEARTBEAT_S while it runs (store.write_call_in_progress).
        self._calls: dict[str, tuple[Run, float, tuple, int]] = {}
        # A stopped call's CPU time read from /proc just before the stop: Snakemake, stopped, exits
        # without waiting for its jobs, so wait4's rusage then misses them (the training's hours).
        self._cpu_at_stop: dict[int, float] = {}

    # ------------------------------------------------------------------ plan and skips
    def prepare(self) -> tuple[Plan, list[Run]]:
        """The plan, written to the study folder; the runs still to do (committed ones checked)."""
        o = self.options
        plan = study_plan.summary(o.root, o.snakemake(), o.target)
        if not plan.runs:
            raise AttrrobError(f"target '{o.target}' of {o.config} has no runs (no {study_plan.RUN_MARKER} "
                               "among its outputs)")
        names = {run.name for run in plan.runs}
        unknown = [name for name in o.redo if name not in names]
        if unknown:
            raise AttrrobError(f"--redo {unknown[0]}: not a run of {o.config} (runs: {', '.join(sorted(names))})")
        self._study_file_names = plan.study_files
        plan_file = o.study / "plan.json"
        outputs.write_json(plan_file, plan.to_json(o.config))
        store.commit(o.study, [plan_file], f"study {o.study.name}: plan of {len(plan.runs)} runs ({o.config})")
        todo = []
        for run in plan.runs:
            if run.name in o.redo:
                store.clear_run(o.study, run, names)
                todo.append(run)
            elif store.record_path(o.study, run).is_file():
                store.check_settings(o.root, o.study, run, names, o.config)
                files = store.run_files(o.study, run)
                # A runner stopped between the record and its commit: the run is complete, commit it.
                if store.uncommitted(o.study, files):
                    store.commit(o.study, files, f"study {o.study.name}: {run.name} (committed on restart)")
                self.log(f"skip {run.name}: committed")
            else:
                todo.append(run)
        self.commit_study_files("found on start")
        done = [run.name for run in plan.runs if run not in todo]
        restored = store.restore(o.root, o.study, done, list(plan.study_files))
        if restored:
            self.log(f"restored {restored} committed file(s) into results/ (a run may depend on them)")
        return plan, study_plan.ordered(tuple(todo), o.order)

    # ------------------------------------------------------------------ processes
    def _snakemake(self, targets: list[str], cores: int, log_name: str,
                   extra: list[str] | None = None) -> tuple[int, float, float, Path]:
        """Run Snakemake on `targets` niced, with `cores` cores; (exit code, wall s, CPU s, log)."""
        o = self.options
        log = o.root / "logs" / "study" / f"{log_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = ["nice", "-n", str(o.nice), "snakemake", *targets, *(extra or []), *o.snakemake(),
                   "--cores", str(cores), "--nolock", "--rerun-incomplete"]
        env = {**os.environ, "OMP_NUM_THREADS": str(cores), "MKL_NUM_THREADS": str(cores)}
        start = time.monotonic()
        with open(log, "w", encoding="utf-8") as handle, self._lock:
            if self.stopping:
                return 1, 0.0, 0.0, log
            # Its own session: a stop reaches Snakemake's jobs too (the whole group).
            process = subprocess.Popen(command, cwd=o.root, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            self._active[process.pid] = process
        call, done, heartbeat = self._calls.get(log_name), threading.Event(), None
        if call is not None:
            heartbeat = threading.Thread(target=self._heartbeat, args=(call, process.pid, start, done), daemon=True)
            heartbeat.start()
        # wait4: the CPU time of Snakemake and every job it waited for, this process tree alone.
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        if heartbeat is not None:
            heartbeat.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        with self._lock:
            self._active.pop(process.pid, None)
            cpu = max(usage.ru_utime + usage.ru_stime, self._cpu_at_stop.pop(process.pid, 0.0))
        return process.returncode, time.monotonic() - start, cpu, log

    def _heartbeat(self, call: tuple, session: int, start: float, done: threading.Event) -> None:
        """Record the call's wall and CPU time so far every HEARTBEAT_S until it ends (no record
        where /proc cannot give its CPU time)."""
        run, started, load_start, threads = call
        while not done.wait(HEARTBEAT_S):
            cpu = session_cpu_s(session)
            if cpu is None or done.is_set():
                return
            store.write_call_in_progress(self.options.root, run, {
                **_call_record(started, time.monotonic() - start, cpu, threads, load_start, os.getloadavg()),
                "recorded": round(time.time(), 1)})

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop every Snakemake process group now (a worker takes no further run)."""
        with self._lock:
            self.stopping = True
            active = list(self._active.values())
            for process in active:
                self._cpu_at_stop[process.pid] = session_cpu_s(process.pid) or 0.0
        for process in active:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for process in active:
            while process.pid in self._active and time.monotonic() < deadline:
                time.sleep(0.2)
            if process.pid in self._active:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with self._finishing:  # a commit under way completes first
            pass

    def drain(self) -> None:
        """Start no further run; the runs in progress go on to their commit."""
        self.draining = True

    def _may_start(self) -> bool:
        if self.stopping or self.draining:
            return False
        limit = self.options.start_within_s
        if limit is not None and time.monotonic() - self._started > limit:
            self.log(f"start no further run: {limit / 60:.0f} min since the start (--start-within)")
            self.draining = True
            return False
        return True

    def expected_wall_s(self, run: Run) -> float | None:
        """The run's expected wall time at this runner's threads per run (attrrob.study.status)."""
        return study_status.expected_wall_s(study_status.records(self.options.study), run.name,
                                            self.options.threads_per_run)

    def _fits(self, run: Run) -> bool:
        """Whether `run` may start now under --finish-within (always, without it)."""
        limit = self.options.finish_within_s
        if limit is None:
            return True
        # A method's sweep runs and main runs share one estimate, so a main run never overtakes the
        # sweep runs its selection needs (ordered() puts them first).
        expected = self.expected_wall_s(run)
        left = limit - (time.monotonic() - self._started)
        if expected is None or expected <= left:
            return True
        if run.name not in self._passed_over:
            self._passed_over.add(run.name)
            self.log(f"pass over {run.name}: expected {expected / 60:.0f} min (attrrob study status says how), "
                     f"{max(left, 0) / 60:.0f} min left (--finish-within)")
        return False

    # ------------------------------------------------------------------ one run
    def run_one(self, run: Run, names: set[str]) -> None:
        if self._reused(run, names):
            return
        load_start, started = os.getloadavg(), time.time()
        threads = self.options.threads_per_run
        extra = ["--set-threads", *(f"{rule}={threads}" for rule in THREADED_RULES)] if threads > 1 else []
        log_name = run.name.replace("/", "_")
        self._calls[log_name] = (run, started, load_start, threads)
        try:
            code, wall, cpu, log = self._snakemake(list(run.outputs), threads, log_name, extra)
        finally:
            self._calls.pop(log_name, None)
        load_end = os.getloadavg()
        if self.stopping:
            # Its time counts when a later call finishes the run (a call killed outright counts up to
            # its last minutely record: recover_killed_calls), measured in full now; a call the stop
            # came before (_snakemake started nothing: no time) is none.
            if wall > 0:
                store.add_stopped_call(self.options.root, run,
                                       _call_record(started, wall, cpu, threads, load_start, load_end))
            store.clear_call_in_progress(self.options.root, run)
            return
        store.clear_call_in_progress(self.options.root, run)  # measured in full: the run's record has it
        if code != 0:
            self.failed.append(run.name)
            self.log(f"FAILED {run.name}: snakemake exit status {code}; see {log}")
            return
        with self._finishing:
            if not self.stopping:
                self._commit_run(run, names, (started, wall, cpu, load_start, load_end))

    def _reused(self, run: Run, names: set[str]) -> bool:
        """Commit `run` as a copy of a committed run with byte-identical settings (a sweep's main
        seed-0 run at the chosen point is that point's run), instead of training it again; True if so.

        A main run's settings are written once its sweep's selection exists: the study files are
        built first (and committed), then a dry run writes the settings."""
        o = self.options
        committed = store.committed_runs(o.study, sorted(names))
        if not committed or self.stopping:
            return False
        log_name = run.name.replace("/", "_")
        if not store.settings_written(o.root, run, names):
            # A sweep's main run, before its selection exists: once every sweep run is committed,
            # build the study files (the selection; cheap then), and a dry run writes the settings.
            if any(study_plan.SWEEP in PurePosixPath(name).parts and name not in committed for name in names):
                return False
            missing = [name for name in self._study_file_names if not (o.root / name).is_file()]
            if missing and self._snakemake(missing, 1, f"{log_name}_study_files")[0] == 0:
                self.commit_study_files(f"built before {run.name}")
            self._snakemake(list(run.outputs), 1, f"{log_name}_settings", ["--dry-run"])
        other = store.identical_run(o.root, o.study, run, names, committed)
        if other is None or self.stopping:
            return False
        with self._finishing:
            copied = store.reuse_files(o.study, run, other)
            if not copied:
                return False
            load = os.getloadavg()
            self._record_and_commit(run, copied, (time.time(), 0.0, 0.0, load, load), [],
                                    f"the files of {other}: identical settings, no job", reused_from=other)
        self.log(f"committed {run.name}: the files of {other} (identical settings)")
        self.refresh_reports(f"after {run.name}")
        return True

    def _commit_run(self, run: Run, names: set[str], timing: tuple) -> None:
        """Copy the run's small files into the study folder, its record last, and commit them."""
        o = self.options
        started, wall, cpu, load_start, load_end = timing
        # A run stopped and resumed: its wall and CPU time are summed over its calls, the stopped
        # ones listed in its record (the load is the finishing call's).
        earlier = store.stopped_calls(o.root, run)
        if earlier:
            wall, cpu = wall + sum(c["wall_s"] for c in earlier), cpu + sum(c["cpu_s"] for c in earlier)
            timing = (earlier[0]["started"], wall, cpu, load_start, load_end)
        calls = f" over {len(earlier) + 1} calls" if earlier else ""
        files = [*run.kept, *store.settings_files(o.root, run, names),
                 *study_plan.benchmark_files(o.root, run, names)]
        copied = store.copy_files(o.root, o.study, files)
        self._record_and_commit(run, copied, timing, jobs_of(o.root, [f for f in files if f.endswith(".tsv")]),
                                f"wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min{calls}, "
                                f"load {load_start[0]:.2f} -> {load_end[0]:.2f}",
                                **({"stopped_calls": earlier} if earlier else {}))
        store.clear_stopped_calls(o.root, run)
        self.log(f"committed {run.name}: wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min{calls}")
        self.commit_study_files(f"built by the time {run.name} finished")
        self.refresh_reports(f"after {run.name}")

    def _record_and_commit(self, run: Run, copied: list[Path], timing: tuple, jobs: list[dict], what: str,
                           **extra) -> None:
        """Write the run's record (its files, times, load; written last: the run is complete) and
        commit it with the files, the message saying `what`."""
        o = self.options
        started, wall, cpu, load_start, load_end = timing
        record = {"run": run.name, "config": o.config, "host": socket.gethostname(),
                  "started": started, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                  "threads_per_run": o.threads_per_run,
                  "load_average_start": [round(x, 2) for x in load_start],
                  "load_average_end": [round(x, 2) for x in load_end],
                  "jobs": jobs, **extra, "files": store.relative_names(copied, o.study)}
        path = store.write_record(o.study, run, record)
        store.commit(o.study, [*copied, path], f"study {o.study.name}: {run.name} ({what})")

    def commit_study_files(self, why: str) -> bool:
        """Commit the study files built so far (a sweep's selection, made when the first main run
        needed it), so that a lost machine does not lose them; True when one changed."""
        o = self.options
        sources = store.study_file_sources(o.root, self._study_file_names)
        if not sources:
            return False
        copied = store.copy_files(o.root, o.study, sources)
        if store.commit(o.study, copied, f"study {o.study.name}: {len(copied)} study file(s) ({why})"):
            self.log(f"committed {len(copied)} study file(s) ({why})")
            return True
        return False

    def refresh_reports(self, why: str) -> None:
        """Rebuild the study's tables, README sections (and HTML) from the committed runs; commit them."""
        from attrrob.study import regenerate

        o = self.options
        changed = regenerate.write_changed(regenerate.regenerated(o.study, o.readme, o.budgets, o.budget_sources))
        pages = regenerate.html_reports(o.study) if o.html else []
        if store.commit(o.study, [*changed, *pages], f"study {o.study.name}: tables and reports regenerated ({why})"):
            self.log(f"regenerated {len(changed)} text file(s) and {len(pages)} HTML report(s) ({why})")

    def _worker(self, runs: Pending, names: set[str]) -> None:
        while self._may_start():
            run = runs.take(self._fits)
            if run is None:
                return
            sweep = study_plan.is_sweep(run)
            with self._sweeps_done:
                if sweep:
                    self._sweeps_running.add(run.name)
                elif self._sweeps_running:
                    self.log(f"{run.name} waits for sweep run(s) {', '.join(sorted(self._sweeps_running))}")
                    while self._sweeps_running and not self.stopping:
                        self._sweeps_done.wait(1.0)
                    if self.draining:  # told to start nothing more while it waited
                        self.left.append(run.name)
                        continue
            try:
                if not self.stopping:
                    self.run_one(run, names)
            except AttrrobError as exc:
                self.failed.append(run.name)
                self.log(f"FAILED {run.name}: {exc}")
            finally:
                if sweep:
                    with self._sweeps_done:
                        self._sweeps_running.discard(run.name)
                        self._sweeps_done.notify_all()

    # ------------------------------------------------------------------ the whole study
    def run(self) -> int:
        """Run the study; 0 when every planned run is committed, 1 when one failed."""
        o = self.options
        from attrrob.locks import holder_pid, try_flock

        lock = o.root / study_status.RUNNER_LOCK
        lock.parent.mkdir(parents=True, exist_ok=True)
        self._runner_lock = try_flock(lock)  # released when this process exits
        if self._runner_lock is None:
            raise AttrrobError(f"another `attrrob study run` (PID {holder_pid(lock)}) runs in {o.root}; "
                               "wait for it or stop it first")
        for name in store.recover_killed_calls(o.root):
            self.log(f"{name}: a call whose runner was killed without a signal counts up to its last "
                     "minutely record (a stopped call of the run)")
        plan, todo = self.prepare()
        names = {run.name for run in plan.runs}
        self.log(f"study {o.study}: {len(plan.runs) - len(todo)} of {len(plan.runs)} runs committed; "
                 f"{len(todo)} to run, {min(o.jobs, len(todo))} at a time")
        if todo and plan.upstream:
            code, _, _, log = self._snakemake(list(plan.upstream), 1, "upstream")
            if code != 0 or self.stopping:
                raise AttrrobError(f"building the shared data failed (exit status {code}); see {log}")
        runs = Pending(todo)
        workers = [threading.Thread(target=self._worker, args=(runs, names), daemon=True)
                   for _ in range(max(1, min(o.jobs, len(todo))))]
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():  # a timed join lets the main thread take signals
                worker.join(0.5)
        if self.stopping:
            return 1
        self.left.extend(run.name for run in runs.remaining())
        if self.left:
            self.log(f"drained: {len(self.left)} run(s) not started ({', '.join(self.left[:3])}"
                     f"{', ...' if len(self.left) > 3 else ''}); rerun the same command to go on")
            return 1 if self.failed else 0
        if not self.failed and plan.study_files:
            self._study_files(plan)
        return 1 if self.failed else 0

    def _study_files(self, plan: Plan) -> None:
        """Files outside every run (a sweep's selection): built and committed once all runs are."""
        o = self.options
        code, wall, cpu, log = self._snakemake(list(plan.study_files), o.jobs, "study_files")
        if code != 0:
            self.failed.append("study files")
            self.log(f"FAILED study files: snakemake exit status {code}; see {log}")
            return
        if self.commit_study_files(f"wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min"):
            self.refresh_reports("study files")


def jobs_of(root: Path, benchmarks: list[str]) -> list[dict]:
    """Each job's wall and CPU seconds from its Snakemake benchmark file (last row)."""
    jobs = []
    for name in benchmarks:
        header, *rows = [line.split("\t") for line in (root / name).read_text(encoding="utf-8").splitlines()
                         if line.strip()]
        if not rows:
            continue
        values = dict(zip(header, rows[-1]))
        jobs.append({"benchmark": name, "wall_s": float(values["s"]), "cpu_s": float(values["cpu_time"])})
    return jobs
