"""Run logs through the standard `logging` module: what a run did, readable in its log file.

Every `attrrob` verb calls `setup()`: INFO lines go to stderr (the workflow's rules send stderr
to `logs/...`), one per event: the start (settings digest, device, threads, data file hash),
periodic progress, checkpoint writes and resumes, and the final numbers. On a terminal the tqdm
bar shows progress instead of the periodic lines; without a terminal (a log file, a batch job)
`Progress` writes a line every `every_s` seconds and at each tenth of the work, with the rate
and the time left. As a library (no `setup()`), the package logs nothing below WARNING.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = "attrrob"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def get(name: str) -> logging.Logger:
    """The logger `attrrob.<name>`."""
    return logging.getLogger(f"{ROOT}.{name}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (a stream bound once goes stale when it is replaced)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup(level: int = logging.INFO) -> None:
    """Send the package's log lines to stderr, once per process."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)


class _KeptLog(logging.Handler):
    """One call's lines for a run's kept log, held back until the call has written its checkpoint,
    then appended (so that a call refused before training, for bad input, changes no file there).
    Best effort: a kept log that cannot be written never stops a training."""

    def __init__(self, path: Path, checkpoint: Path, resuming: bool):
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        self.path, self.checkpoint = path, checkpoint
        self.mode = "a" if resuming else "w"  # "w": an earlier kept log belongs to a discarded training
        self.stamp_at_start = self._stamp()
        self.held: list[str] | None = []

    def _stamp(self) -> int | None:
        try:
            return self.checkpoint.stat().st_mtime_ns
        except OSError:
            return None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a malformed record is logging's own error, not a reason to stop training
            return
        if self.held is None:
            self._write([line])
            return
        self.held.append(line)
        stamp = self._stamp()
        if stamp is not None and stamp != self.stamp_at_start:
            lines, self.held = self.held, None
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, self.mode, encoding="utf-8") as fh:
                fh.write("".join(f"{line}\n" for line in lines))
        except OSError:
            pass
        self.mode = "a"


@contextmanager
def kept_across_calls(path: str | Path, checkpoint: str | Path, resuming: bool):
    """Keep a resumable run's log lines in `path` (beside its `checkpoint`) across the calls that train it.

    A workflow deletes a job's log file before each call, so a run stopped and resumed would leave only
    its last call's lines. When `resuming`, the earlier calls' lines (kept in `path`) are first copied to
    stderr under a heading. This call's lines, and how it ended when it ends by an exception, go to `path`
    once it has written the checkpoint (appended when resuming; otherwise they replace an earlier file).
    """
    path = Path(path)
    earlier = path.read_text(encoding="utf-8", errors="replace") if resuming and path.is_file() else ""
    if earlier:
        sys.stderr.write(f"--- earlier calls of this run (kept in {path}) ---\n{earlier}--- this call ---\n")
        sys.stderr.flush()
    handler = _KeptLog(path, Path(checkpoint), resuming)
    root = logging.getLogger(ROOT)
    root.addHandler(handler)
    try:
        yield path
    except BaseException as exc:
        # The CLI prints the ending on stderr only; the kept log needs it to show why the call stopped.
        message = " ".join(str(exc).split()) or type(exc).__name__
        handler.handle(logging.LogRecord(f"{ROOT}.call", logging.WARNING, __file__, 0,
                                         f"call ended: {message}", None, None))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def bar_wanted(progress: bool) -> bool:
    """A tqdm bar only where someone watches: progress asked for and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def duration(seconds: float) -> str:
    """H:MM:SS (or '?' when unknown)."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Periodic progress lines: `update(n, detail)` logs when `every_s` seconds passed since the last
    line, at each further tenth of `total`, and at the end (rate and ETA from this run's start)."""

    def __init__(self, logger: logging.Logger, total: int, what: str, unit: str, *, done: int = 0,
                 every_s: float = 60.0, enabled: bool = True):
        self.logger, self.total, self.what, self.unit = logger, int(total), what, unit
        self.start_done = self.done = int(done)
        self.every_s, self.enabled = every_s, enabled
        self.start = self.last = time.monotonic()
        self.next_tenth = self._tenth_after(self.done)

    def _tenth_after(self, done: int) -> int:
        if self.total <= 0:
            return 1
        tenth = max(1, -(-self.total // 10))
        return min(self.total, (done // tenth + 1) * tenth)

    def due(self, n: int = 0) -> bool:
        """Whether `update(n)` would write a line."""
        done = self.done + n
        return self.enabled and (done >= self.next_tenth or done >= self.total
                                 or time.monotonic() - self.last >= self.every_s)

    def update(self, n: int = 1, detail: str = "") -> None:
        write = self.due(n)
        self.done += n
        if write:
            self.log(detail)

    def log(self, detail: str = "") -> None:
        now = time.monotonic()
        elapsed = now - self.start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else float("nan")
        left = (self.total - self.done) / rate if rate and rate == rate else float("nan")
        share = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.what}: {self.done}/{self.total} {self.unit} ({share:.0f}%)"]
        if detail:
            parts.append(detail)
        parts.append(f"{rate:.3g} {self.unit}/s, ETA {duration(left)}")
        self.logger.info(", ".join(parts))
        self.last = now
        self.next_tenth = self._tenth_after(self.done)


class _LogBar:
    """The slice of tqdm's interface that the evaluators use, writing `Progress` lines instead."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def update(self, n: int = 1) -> None:
        self.progress.update(n)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "img"):
    """A tqdm bar on a terminal (when `enabled`), else periodic log lines under `attrrob.progress`."""
    if bar_wanted(enabled):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return _LogBar(Progress(get("progress"), total, desc, unit))
