"""The study folder: a mirror of the workflow's results/ holding only the small files tables and
reports are built from, one git commit per finished run.

    <study>/plan.json                       the planned runs (attrrob.study.plan.Plan.to_json)
    <study>/results/<run>/...               the run's kept outputs and settings.json files
    <study>/results/<run>/study_run.json    wall and CPU time, load average at start and end;
                                            written last: a run is complete when it exists
    <study>/results/benchmarks/<rule>/...   Snakemake's benchmark file of each of the run's jobs
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path, PurePosixPath

from attrrob import outputs
from attrrob.errors import AttrrobError
from attrrob.study.plan import RESULTS, Run, read_json

RECORD = "study_run.json"
SETTINGS = "settings.json"
# Two workers (threads) and any second runner (process) never commit at once.
_COMMIT_THREADS = threading.Lock()


def record_path(study: Path, run: Run) -> Path:
    return study / run.folder / RECORD


# The times of a run's calls that were stopped before it finished (a session's end, a SIGTERM), kept
# in the workflow folder (not committed) until the call that finishes the run adds them to its record.
STOPPED_CALLS = Path(".snakemake") / "attrrob-study" / "stopped-calls"


def _stopped_calls_file(root: Path, run: Run) -> Path:
    return root / STOPPED_CALLS / f"{run.name.replace('/', '__')}.json"


def stopped_calls(root: Path, run: Run) -> list[dict]:
    """The run's earlier calls that were stopped, oldest first ([] when none)."""
    return (read_json(_stopped_calls_file(root, run)) or {}).get("calls", [])


def add_stopped_call(root: Path, run: Run, call: dict) -> None:
    outputs.write_json(_stopped_calls_file(root, run), {"run": run.name, "calls": [*stopped_calls(root, run), call]})


def clear_stopped_calls(root: Path, run: Run) -> None:
    _stopped_calls_file(root, run).unlink(missing_ok=True)


# The call running a run, its wall and CPU time so far rewritten every minute: a runner killed
# without a signal (a machine's restart, SIGKILL) leaves it behind, and the next runner counts it
# as a stopped call, so that no call's time is lost.
CALLS_IN_PROGRESS = Path(".snakemake") / "attrrob-study" / "calls-in-progress"
KILLED_NOTE = ("its runner was killed without a signal: wall and CPU time up to the last of the "
               "minutely records the runner wrote while it ran (at most a minute short)")


def _call_in_progress_file(root: Path, run: Run) -> Path:
    return root / CALLS_IN_PROGRESS / f"{run.name.replace('/', '__')}.json"


def write_call_in_progress(root: Path, run: Run, call: dict) -> None:
    outputs.write_json(_call_in_progress_file(root, run), {"run": run.name, "call": call})


def clear_call_in_progress(root: Path, run: Run) -> None:
    _call_in_progress_file(root, run).unlink(missing_ok=True)


def recover_killed_calls(root: Path) -> list[str]:
    """Each call left in progress by a runner killed outright becomes a stopped call of its run (the
    caller holds the runner lock, so no live runner owns one); the names of those runs."""
    found = []
    for path in sorted((root / CALLS_IN_PROGRESS).glob("*.json")):
        try:
            left = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AttrrobError(f"{path}: unreadable ({exc}); delete it to go on (the time of the call it "
                               "recorded is then lost)") from None
        if isinstance(left.get("run"), str) and isinstance(left.get("call"), dict):
            run = Run(left["run"], ())
            add_stopped_call(root, run, {**left["call"], "note": KILLED_NOTE})
            found.append(run.name)
        path.unlink()
    return found


def settings_files(root: Path, run: Run, run_names: set[str]) -> list[str]:
    """The settings.json of the run's training and of each of its evaluations (not those of runs
    nested below it), as paths from `root`."""
    folder = root / run.folder
    found = []
    # The training's own settings first: a change there is the cause, its evaluations' digests follow.
    for path in sorted(folder.rglob(SETTINGS), key=lambda p: (len(p.parts), p)):
        relative = path.parent.relative_to(root / RESULTS).as_posix()
        nested = any(relative == other or relative.startswith(other + "/")
                     for other in run_names if other != run.name and other.startswith(run.name + "/"))
        if not nested:
            found.append(path.relative_to(root).as_posix())
    return found


def restore(root: Path, study: Path, runs: list[str], study_files: list[str]) -> int:
    """Copy the committed files of `runs` and the committed study files (a sweep's selection; its
    sweep.json the workflow writes when it is read) into the workflow's results/ where missing, study files last (newer than the runs
    they were made from); the number copied. A fresh machine then sees what an earlier one
    finished, so that a run depending on committed ones (a sweep's main runs read its selection)
    does not make them again; their weights stay missing, which reruns nothing (Snakemake builds
    a missing intermediate file only for a job that must run)."""
    copied = 0
    for name in runs:
        record = read_json(study / RESULTS / name / RECORD) or {}
        for file in record.get("files", []):
            if file.startswith(f"{RESULTS}/{name}/") and not (root / file).exists() and (study / file).is_file():
                _copy(study / file, root / file)
                copied += 1
    later = None
    for file in study_files:
        if not (root / file).exists() and (study / file).is_file():
            _copy(study / file, root / file)
            later = later or time.time() + 1
            os.utime(root / file, (later, later))
            copied += 1
    return copied


def settings_written(root: Path, run: Run, run_names: set[str]) -> bool:
    """Whether the workflow has written a settings file for the run's training and each of its
    evaluations (a sweep's main runs get theirs once the selection exists)."""
    written = {PurePosixPath(name).parent for name in settings_files(root, run, run_names)}
    return bool(run.kept) and {PurePosixPath(name).parent for name in run.kept} <= written


def identical_run(root: Path, study: Path, run: Run, run_names: set[str], committed: list[str]) -> str | None:
    """A committed run whose settings files are byte for byte those the workflow wrote for `run`,
    for its training and every evaluation it has (the committed run may have more, e.g. a sweep
    point's validation evaluations): its files are the results of exactly these settings. None
    when there is none, or when a settings file of `run` is not written yet."""
    if not settings_written(root, run, run_names):
        return None
    mine = {PurePosixPath(name).relative_to(run.folder).as_posix(): (root / name).read_bytes()
            for name in settings_files(root, run, run_names)}
    for other in committed:
        if other == run.name:
            continue
        folder = f"{RESULTS}/{other}"
        theirs = {PurePosixPath(name).relative_to(folder).as_posix(): name
                  for name in settings_files(study, Run(other, ()), run_names)}
        if all(key in theirs and (study / theirs[key]).read_bytes() == value for key, value in mine.items()):
            return other
    return None


def reuse_files(study: Path, run: Run, other: str) -> list[Path]:
    """Copy `other`'s committed files into `run`'s folder: those in the folders `run`'s own outputs
    and settings lie in (its training's and its evaluations'; not, e.g., a sweep point's validation
    ones), atomically. The copies, or [] when one of `run`'s kept outputs would be missing."""
    record = read_json(study / RESULTS / other / RECORD) or {}
    source = f"{RESULTS}/{other}"
    folders = {PurePosixPath(name).relative_to(run.folder).parent for name in run.kept}
    plan = {}
    for name in record.get("files", []):
        if not name.startswith(source + "/"):
            continue  # its benchmark files: its jobs' timings, not this run's
        relative = PurePosixPath(name).relative_to(source)
        if relative.parent in folders:
            plan[name] = f"{run.folder}/{relative.as_posix()}"
    if not set(run.kept) <= set(plan.values()):
        return []
    for name, target in plan.items():
        _copy(study / name, study / target)
    return [study / target for target in plan.values()]


def changed_setting(committed: dict, now: dict, prefix: str = "") -> str | None:
    """The first key (dotted) whose value differs, with both values; None when equal."""
    for key in sorted(set(committed) | set(now)):
        a, b = committed.get(key, "<absent>"), now.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            found = changed_setting(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {json.dumps(a)} committed, {json.dumps(b)} now"
    return None


def check_settings(root: Path, study: Path, run: Run, run_names: set[str], config: str) -> None:
    """Refuse (one line) when a committed settings.json of `run` differs from the one the workflow
    resolves now."""
    for name in settings_files(study, run, run_names):
        committed = read_json(study / name)
        now = read_json(root / name)
        if committed is None or now is None:
            continue
        change = changed_setting(committed, now)
        if change:
            raise AttrrobError(f"{study / name} was committed with other settings than {config} gives now "
                               f"({change}); restore the config, or pass --redo {run.name} to run it again")


def copy_files(root: Path, study: Path, files: list[str]) -> list[Path]:
    """Copy `files` (paths from the workflow root) into the study folder, each atomically."""
    written = []
    for name in files:
        source, target = root / name, study / name
        if not source.is_file():
            raise AttrrobError(f"{source}: missing although its job finished; rerun the study")
        _copy(source, target)
        written.append(target)
    return written


def _copy(source: Path, target: Path) -> None:
    """One file, written atomically (a stop never leaves half a file)."""
    with outputs.atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def study_file_sources(root: Path, study_files: tuple[str, ...]) -> list[str]:
    """The built study files (paths from the workflow root) and the JSON files beside them (a
    selection's sweep.json, which the workflow writes when it is read, so that the reports show a
    sweep's points run so far before its selection is made): what a study keeps of them, whenever
    they exist."""
    found: dict[str, None] = {}
    for name in study_files:
        for sibling in sorted((root / name).parent.glob("*.json")):
            found[sibling.relative_to(root).as_posix()] = None
        if (root / name).is_file():
            found[name] = None
    return list(found)


def clear_run(study: Path, run: Run, run_names: set[str]) -> None:
    """Remove a run's committed files before it is run again (--redo), not those of nested runs."""
    folder = study / run.folder
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        relative = path.relative_to(study / RESULTS).as_posix()
        nested = any(relative.startswith(other + "/") for other in run_names
                     if other != run.name and other.startswith(run.name + "/"))
        if path.is_file() and not nested:
            path.unlink()


def git(repo: Path, *args: str) -> str:
    # Its own session: a Ctrl-C meant for the runner's Snakemake processes never cuts a commit short.
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout).split()) or f"exit status {result.returncode}"
        raise AttrrobError(f"git {' '.join(args[:2])} in {repo} failed: {message}")
    return result.stdout


def repository(study: Path) -> Path:
    """The git work tree holding the study folder."""
    study.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=study, capture_output=True, text=True)
    if result.returncode != 0:
        raise AttrrobError(f"{study} is not inside a git work tree; the study commits each finished run")
    return Path(result.stdout.strip())


def commit(study: Path, paths: list[Path], message: str) -> bool:
    """Commit exactly `paths` (nothing else staged goes with them) to the current branch; False
    when they hold no change."""
    repo = repository(study)
    names = [os.path.relpath(p, repo) for p in paths]
    git_dir = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    with _COMMIT_THREADS, open(git_dir / "attrrob-study.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        git(repo, "add", "--all", "--", *names)
        if not git(repo, "status", "--porcelain", "--", *names).strip():
            return False
        git(repo, "commit", "-q", "--no-verify", "-m", message, "--", *names)
        return True


def uncommitted(study: Path, paths: list[Path]) -> bool:
    repo = repository(study)
    names = [os.path.relpath(p, repo) for p in paths]
    return bool(git(repo, "status", "--porcelain", "--", *names).strip())


def committed_runs(study: Path, plan_runs: list[str]) -> list[str]:
    """The planned runs whose record is in the study folder (a complete run)."""
    return [name for name in plan_runs if (study / RESULTS / name / RECORD).is_file()]


def run_files(study: Path, run: Run) -> list[Path]:
    """Every file the study holds for `run` (its record lists them)."""
    record = read_json(record_path(study, run)) or {}
    return [study / name for name in record.get("files", [])] + [record_path(study, run)]


def write_record(study: Path, run: Run, record: dict) -> Path:
    path = record_path(study, run)
    outputs.write_json(path, record)
    return path


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def relative_names(paths: list[Path], base: Path) -> list[str]:
    return [PurePosixPath(os.path.relpath(p, base)).as_posix() for p in paths]
