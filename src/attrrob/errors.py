"""One error type for every problem a user can fix; CLIs print it as one line."""

from __future__ import annotations

import errno
import functools
import os
import reprlib
import sys
from typing import Any


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 40


def short(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters: a value printed in an error stays one short line
    (reprlib never expands a deep or shared structure, e.g. YAML aliases, in full)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AttrrobError(Exception):
    """A user-facing error: the message names what is wrong and where."""


class ConfigError(AttrrobError):
    """A bad configuration value (names the file and the key)."""


class DataError(AttrrobError):
    """Missing, corrupt or unverifiable data (names the file and what to do)."""


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving what it can; the message says what was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# What to do about the write errors a user can fix, by errno.
_WRITE_HINTS = {
    errno.ENOSPC: "free some space or pass another output path",
    errno.EDQUOT: "free some of your quota or pass another output path",
    errno.EROFS: "pass an output path on a writable file system",
    errno.EACCES: "pass an output path you may write to",
    errno.EPERM: "pass an output path you may write to",
}


def is_write_error(exc: BaseException) -> bool:
    """A file system refusing a write (full, read-only, no permission, over quota)."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_HINTS


def write_error(path: str | os.PathLike, exc: OSError) -> AttrrobError:
    """One line for a failed write: the path, the errno's meaning and name, and what to do."""
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    meaning = os.strerror(code) if code is not None else " ".join(str(exc).split())
    hint = _WRITE_HINTS.get(code, "check the path and the disk")
    return AttrrobError(f"cannot write {path}: {meaning}{f' ({name})' if name else ''}; {hint} "
                        "(earlier files there are unchanged)")


def one_line_errors(main):
    """Decorate a CLI entry point so that an AttrrobError exits with code 2 and a single line on stderr."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except AttrrobError as exc:
            message = " ".join(str(exc).split())
            print(f"attrrob: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        except Interrupted as exc:
            print(f"attrrob: {' '.join(str(exc).split())}", file=sys.stderr)
            raise SystemExit(128 + exc.signum) from None
        except OSError as exc:
            if not is_write_error(exc):
                raise
            # A file system refusing a write outside attrrob.outputs (a directory, a lock file).
            message = " ".join(str(write_error(exc.filename or "a file", exc)).split())
            print(f"attrrob: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("attrrob: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
