"""Where a study stands, read without running anything: each planned run committed (its wall and CPU
time), in progress (the last progress line of its newest job log), or to run (its expected wall time);
and the expected wall time of what is left.

The plan is the committed plan.json, each committed run's record its study_run.json; progress and
the runner's lock are read from the workflow folder the study runs in. A run's expected wall time is
the median of the committed runs (trained, not reused) of its data set and method at the same
threads per run, and at most the longest of them: the bound `attrrob study run --finish-within`
uses, since a run that shared the machine or spanned calls took longer than the rest. A method with
no such run is estimated from the run of the method nearest in measured per-step cost
(step_costs.yaml), its training's wall time scaled by the cost ratio. A run in progress counts its
training's last logged ETA plus its method's (else its data set's) median evaluation time.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from pathlib import Path, PurePosixPath

from attrrob.errors import AttrrobError
from attrrob.study import plan as study_plan
from attrrob.study import store

RUNNER_LOCK = Path(".snakemake") / "attrrob-study-runner.lock"
# attrrob.logs.Progress's line: "<time> INFO <logger>: <what>: <done>/<total> <unit> (<share>%), ..., ETA <h:mm:ss>"
_PROGRESS = re.compile(r"^(?P<time>\S+ \S+) \w+ \S+: (?P<what>.+?): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+) "
                       r"\((?P<share>\d+)%\).*ETA (?P<eta>\S+)$")


def method_key(name: str) -> tuple[str, ...]:
    """(data set, method) of a run folder `seed~<s>/<dataset>/<method>[/sweep/...]`."""
    return tuple(PurePosixPath(name).parts[1:3])


def records(study: Path) -> dict[str, dict]:
    """Each committed run's record (study_run.json), by run name."""
    found = {}
    for path in sorted((study / study_plan.RESULTS).rglob(store.RECORD)):
        record = store.read_json(path) or {}
        if "run" in record:
            found[record["run"]] = record
    return found


def _trained(records_by_run: dict[str, dict], threads_per_run: int) -> list[dict]:
    """The committed runs that trained (not reused) at `threads_per_run`."""
    return [record for record in records_by_run.values()
            if "reused_from" not in record and record.get("threads_per_run") == threads_per_run]


def estimate(records_by_run: dict[str, dict], run_name: str, threads_per_run: int) -> tuple[float, str | None] | None:
    """(seconds, None): the longest wall time of a committed run (trained, not reused) of `run_name`'s
    data set and method at `threads_per_run`; without one, (seconds, the method scaled from) of
    `scaled_estimate`; None when neither exists."""
    walls = committed_walls(records_by_run, run_name, threads_per_run)
    if walls:
        return max(walls), None
    return scaled_estimate(records_by_run, run_name, threads_per_run)


def committed_walls(records_by_run: dict[str, dict], run_name: str, threads_per_run: int) -> list[float]:
    """The wall times of the committed runs (trained, not reused) of `run_name`'s data set and method
    at `threads_per_run`."""
    return [float(record["wall_s"]) for record in _trained(records_by_run, threads_per_run)
            if method_key(record.get("run", "")) == method_key(run_name)]


def expected_wall_s(records_by_run: dict[str, dict], run_name: str, threads_per_run: int) -> float | None:
    """The seconds of `estimate`, or None."""
    found = estimate(records_by_run, run_name, threads_per_run)
    return found[0] if found else None


def _train_wall_s(record: dict) -> float | None:
    """The wall time of the run's training, all its calls: the record's wall time less the finishing
    call's other jobs (their benchmark records), since a resumed training's benchmark covers only
    its last call. None without a training benchmark."""
    trains = [job for job in record.get("jobs", [])
              if study_plan.job_label(str(job.get("benchmark", "")), record.get("run", "")) == "train"]
    if len(trains) != 1:
        return None
    others = sum(float(job["wall_s"]) for job in record["jobs"] if job is not trains[0])
    return max(float(record["wall_s"]) - others, 0.0)


def scaled_estimate(records_by_run: dict[str, dict], run_name: str, threads_per_run: int,
                    costs: dict | None = None) -> tuple[float, str] | None:
    """For a method with no committed run: a committed run of the same data set at the same threads,
    its training's wall time scaled by the two methods' measured per-step costs (step_costs.yaml,
    one thread: the ratio is taken to hold at other thread counts) and its evaluation's kept (the
    protocol is the same for every method). The method nearest in per-step cost is used, its
    longest such estimate taken; returns (seconds, the method scaled from), or None."""
    from attrrob import plan_estimate

    dataset, method = method_key(run_name)
    table = ((costs or plan_estimate.step_costs()).get("cpu") or {}).get(dataset) or {}
    per_step = table.get("seconds_per_step") or {}
    if method not in per_step:
        return None
    candidates = []
    for record in _trained(records_by_run, threads_per_run):
        other_dataset, other = method_key(record.get("run", ""))
        train = _train_wall_s(record)
        if other_dataset != dataset or other not in per_step or train is None:
            continue
        ratio = per_step[method] / per_step[other]
        distance = abs(math.log(ratio))
        candidates.append((distance, float(record["wall_s"]) - train + train * ratio, other))
    if not candidates:
        return None
    nearest = min(distance for distance, _, _ in candidates)
    seconds, other = max((s, o) for distance, s, o in candidates if distance == nearest)
    return seconds, other


def reuses_a_sweep_point(root: Path, study: Path, run_name: str) -> bool:
    """Whether `run_name` is a main run that will take the files of its sweep's chosen point: its
    seed is one the selecting sweep runs every point at (the runner reuses an identical run). The
    sweep is the study's sweep.json, else the one the workflow at `root` wrote."""
    parts = PurePosixPath(run_name).parts
    if len(parts) != 3 or not parts[0].startswith("seed~"):
        return False
    sweep = Path(study_plan.RESULTS, "sweeps", parts[1], parts[2], "sweep.json")
    spec = study_plan.read_json(study / sweep) or study_plan.read_json(root / sweep) or {}
    return bool(spec.get("select")) and parts[0][len("seed~"):] in {str(seed) for seed in spec.get("seeds", [])}


def _run_logs(root: Path, run_name: str, run_names: set[str]) -> list[Path]:
    """The run's job logs under logs/ (logs/<rule>/<run>.log and logs/<rule>/<run>/<job>.log), not
    those of runs nested below it (a sweep's points lie below their method's main run)."""
    nested = [other for other in run_names if other != run_name and other.startswith(run_name + "/")]
    found = []
    for rule in sorted((root / "logs").iterdir()) if (root / "logs").is_dir() else []:
        candidates = [rule / f"{run_name}.log", *sorted((rule / run_name).rglob("*.log"))]
        for path in candidates:
            relative = path.relative_to(rule).as_posix()
            if path.is_file() and not any(relative == f"{other}.log" or relative.startswith(f"{other}/")
                                          for other in nested):
                found.append(path)
    return found


def _last_progress(root: Path, run_name: str, run_names: set[str]) -> tuple[Path, re.Match | None] | None:
    """(the run's most recently written job log, its last progress line's match or None), or None."""
    logs = _run_logs(root, run_name, run_names)
    if not logs:
        return None
    newest = max(logs, key=lambda path: path.stat().st_mtime)
    for line in reversed(newest.read_text(encoding="utf-8", errors="replace").splitlines()):
        found = _PROGRESS.match(line.strip())
        if found:
            return newest, found
    return newest, None


def progress(root: Path, run_name: str, run_names: set[str]) -> str | None:
    """The last progress line of the run's most recently written job log, shortened, or None."""
    return _progress_text(root, _last_progress(root, run_name, run_names))


def _progress_text(root: Path, last: tuple[Path, re.Match | None] | None) -> str | None:
    """`progress`'s line from `_last_progress`'s answer."""
    if last is None:
        return None
    newest, found = last
    if found:
        return (f"{newest.parent.relative_to(root / 'logs').parts[0]}: {found['what']} {found['done']}/"
                f"{found['total']} {found['unit']} ({found['share']}%) at {found['time']}, ETA {found['eta']}")
    return f"{newest.relative_to(root).as_posix()} written at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(newest.stat().st_mtime))}"


def training_eta_s(root: Path, run_name: str, run_names: set[str]) -> float | None:
    """The seconds of the last logged ETA when the run's newest job log is its training's, else None."""
    return _eta_s(root, _last_progress(root, run_name, run_names))


def _eta_s(root: Path, last: tuple[Path, re.Match | None] | None) -> float | None:
    """`training_eta_s`'s seconds from `_last_progress`'s answer."""
    if last is None or last[1] is None or last[0].parent.relative_to(root / "logs").parts[0] != "train":
        return None
    hours, minutes, seconds = (last[1]["eta"].split(":") + ["?"] * 3)[:3]
    if not (hours.isdigit() and minutes.isdigit() and seconds.isdigit()):
        return None
    return int(hours) * 3600.0 + int(minutes) * 60.0 + int(seconds)


def evaluation_wall_s(records_by_run: dict[str, dict], run_name: str,
                      threads_per_run: int) -> tuple[float, str] | None:
    """(the median wall time of what follows training, whose: "its method's" or "its data set's"):
    a committed run's wall less its training's, over the committed runs of `run_name`'s method at
    `threads_per_run`, else over those of its data set (the protocol is the same for every method);
    None without one."""
    trained = _trained(records_by_run, threads_per_run)
    for whose, same in (("its method's", lambda key: key == method_key(run_name)),
                        ("its data set's", lambda key: key[:1] == method_key(run_name)[:1])):
        parts = [float(record["wall_s"]) - train for record in trained
                 if same(method_key(record.get("run", ""))) and (train := _train_wall_s(record)) is not None]
        if parts:
            return statistics.median(parts), whose
    return None


def runner_pid(root: Path) -> str | None:
    """The PID of the `attrrob study run` holding the workflow folder's lock, or None when none does."""
    from attrrob.locks import holder_pid, try_flock

    path = root / RUNNER_LOCK
    if not path.is_file():
        return None
    fd = try_flock(path)
    if fd is None:
        return holder_pid(path)
    os.close(fd)
    return None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def report(root: Path, study: Path, threads_per_run: int = 1, jobs: int = 1) -> list[str]:
    """The status lines of `study`, whose runs run in the workflow folder `root`."""
    plan = study_plan.read_json(study / "plan.json")
    if not plan or not isinstance(plan.get("runs"), list):
        raise AttrrobError(f"{study / 'plan.json'}: no plan yet; `attrrob study run --dry-run` writes it")
    names, done = plan["runs"], records(study)
    run_names = set(names)
    pid = runner_pid(root)
    lines = [f"study {study} ({plan.get('config', '?')}): {sum(n in done for n in names)} of {len(names)} runs "
             f"committed; " + (f"a runner (PID {pid}) runs in {root}" if pid else f"no runner runs in {root}")]
    typical_left, longest_left, unknown = 0.0, 0.0, []
    width = max(map(len, names))
    for name in names:
        record = done.get(name)
        if record is not None:
            how = (f"the files of {record['reused_from']}" if "reused_from" in record else
                   f"wall {_minutes(record['wall_s'])}, CPU {_minutes(record['cpu_s'])}, "
                   f"{record.get('threads_per_run', '?')} thread(s)"
                   + (f", {len(record['stopped_calls']) + 1} calls" if record.get("stopped_calls") else ""))
            lines.append(f"  {name:<{width}}  committed: {how}")
            continue
        last = _last_progress(root, name, run_names)
        now = _progress_text(root, last)
        if reuses_a_sweep_point(root, study, name):
            lines.append(f"  {name:<{width}}  to take the files of its sweep's chosen point (no training)")
            continue
        found = estimate(done, name, threads_per_run)
        walls = committed_walls(done, name, threads_per_run)
        if found is None:
            unknown.append(name)
            how = "no committed run of its method, or of one with a measured per-step cost, to estimate from"
        else:
            longest_left += found[0]
            if found[1]:
                typical = found[0]
                how = (f"expected {_minutes(typical)} at {threads_per_run} thread(s) (no committed run of its method "
                       f"at that thread count: {found[1]}'s, its training scaled by per-step cost)")
            else:
                typical = statistics.median(walls)
                how = (f"expected {_minutes(typical)} at {threads_per_run} thread(s)" if len(set(walls)) == 1 else
                       f"expected {_minutes(typical)} at {threads_per_run} thread(s), at most {_minutes(found[0])} "
                       f"(the median and longest of its method's {len(walls)} committed runs, which took "
                       f"{_minutes(min(walls))} to {_minutes(max(walls))})")
            eta, evaluation = _eta_s(root, last), evaluation_wall_s(done, name, threads_per_run)
            if eta is not None and evaluation is not None:
                # A run in progress: its training's own pace counts, not a whole run's estimate.
                typical = eta + evaluation[0]
                how += (f"; about {_minutes(typical)} left (the logged ETA plus {evaluation[1]} median "
                        f"evaluation, {_minutes(evaluation[0])})")
            typical_left += typical
        lines.append(f"  {name:<{width}}  " + (f"last logged: {now}; " if now else "to run: ") + how)
    if len(done) < len(names):
        lines.append(f"left: {len(names) - len(done)} run(s), about {_minutes(typical_left / max(jobs, 1))} of wall "
                     f"time at {jobs} at a time and {threads_per_run} thread(s) each (each run to come as its "
                     "method's median committed run or the scaled estimate above, a run in training as its "
                     f"logged ETA plus its evaluation); at most about {_minutes(longest_left / max(jobs, 1))} "
                     "counting every run, those in progress in full, as its method's longest committed run "
                     "(the bound `--finish-within` uses)"
                     + (f"; not counted: {len(unknown)} run(s) with no estimate" if unknown else ""))
    return lines
