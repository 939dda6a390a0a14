"""Exclusive locks on lock files (fcntl.flock): one writer per output folder, one job per GPU.

The kernel drops a flock when its descriptor closes, so a crashed holder never leaves a folder
locked. The lock file records the holder's PID, for the message a second process prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import AttrrobError, write_error

LOCK_NAME = ".attrrob.lock"


def try_flock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path` (created if absent), or None when
    another process holds it. The file then records this process's PID."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:  # a full disk: the PID is for messages only, the flock is what counts
        pass
    return fd


def holder_pid(path: Path) -> str:
    """The PID a lock file records ('unknown' while its holder has not written it yet)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


class DirectoryLock:
    """The lock of one output folder, held until `release()` (or process exit)."""

    def __init__(self, path: Path, fd: int, created: bool):
        self.path, self._fd, self._created = path, fd, created

    def release(self) -> None:
        if self._fd is None:
            return
        # Remove the file while still holding it: a process that opened it meanwhile sees that
        # its inode is gone from the folder and retries on a fresh file (see lock_directory).
        try:
            self.path.unlink()
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if self._created:  # a run that failed before writing anything leaves no empty folder
            try:
                self.path.parent.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "DirectoryLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_directory(directory: Path, option: str) -> DirectoryLock:
    """Take `directory`'s lock for this run, creating the folder; a second run of any attrrob
    command on the same folder fails at once, naming the holder's PID. `option` names the
    folder in the message (e.g. '--out')."""
    directory = Path(directory)
    path = directory / LOCK_NAME
    try:
        created = not directory.exists()
        while True:
            directory.mkdir(parents=True, exist_ok=True)
            try:
                fd = try_flock(path)
            except FileNotFoundError:  # an earlier holder removed the folder it had created: again
                continue
            if fd is None:
                raise AttrrobError(f"{option} {directory} is in use by another attrrob run (PID {holder_pid(path)}); "
                                   f"wait for it to finish or pass another {option}")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return DirectoryLock(path, fd, created)
            os.close(fd)  # the holder removed this file as it finished: lock the new one
    except OSError as exc:
        raise write_error(path, exc) from None
