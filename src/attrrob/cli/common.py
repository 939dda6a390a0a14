"""Options and run-time pieces that several `attrrob` verbs share."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


def add_settings_options(parser: argparse.ArgumentParser, kind: str, example: str) -> None:
    """--config FILE and repeatable --set KEY=VALUE (see `attrrob.config`)."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file with a 'hyperparameters:' mapping")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                        help=f"override one {kind} setting (repeatable), e.g. --set {example}")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--device and --no-progress."""
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:<index>")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def overrides_from(args: argparse.Namespace, **named) -> dict:
    """The --set items, plus the named shortcut options that were given (e.g. num_examples=...)."""
    from ..config import parse_overrides

    overrides = parse_overrides(args.overrides)
    overrides.update({key: value for key, value in named.items() if value is not None})
    return overrides


@contextlib.contextmanager
def held_device(spec: str) -> Iterator[torch.device]:
    """The device for `spec`; a GPU picked by `auto` stays locked to this job until the block ends."""
    from ..devices import select_device

    device, gpu_lock = select_device(spec)
    try:
        yield device
    finally:
        if gpu_lock is not None:
            gpu_lock.release()
