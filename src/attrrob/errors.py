"""One error type for every problem a user can fix; CLIs print it as one line."""

from __future__ import annotations

import functools
import sys


class AttrrobError(Exception):
    """A user-facing error: the message names what is wrong and where."""


class ConfigError(AttrrobError):
    """A bad configuration value (names the file and the key)."""


class DataError(AttrrobError):
    """Missing, corrupt or unverifiable data (names the file and what to do)."""


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
        except KeyboardInterrupt:
            print("attrrob: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
