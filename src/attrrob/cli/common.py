"""Options and run-time pieces that several `attrrob` verbs share."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import AttrrobError

if TYPE_CHECKING:
    import torch


def add_settings_options(parser: argparse.ArgumentParser, kind: str, example: str) -> None:
    """--config FILE and repeatable --set KEY=VALUE (see `attrrob.config`), or --settings FILE."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file with a 'hyperparameters:' mapping")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                        help=f"override one {kind} setting (repeatable), e.g. --set {example}")
    parser.add_argument("--settings", type=Path, default=None, metavar="FILE",
                        help=f"the run's resolved {kind} settings (settings.json, as the workflow writes them; "
                             "replaces --config and --set)")


def settings_file(args: argparse.Namespace, kind: str, **named) -> dict | None:
    """The --settings file's settings (None without it), after checking that the options agree with it.

    `named` are the command's own options (dataset, method, ...): each one given must match the file."""
    if args.settings is None:
        return None
    from .. import run_settings

    if args.config is not None or args.overrides:
        raise AttrrobError("--settings holds every setting; drop --config and --set")
    saved = run_settings.load(args.settings, kind)
    for key, value in named.items():
        if value is not None and saved.get(key) != value:
            raise AttrrobError(f"--{key} {value} disagrees with --settings {args.settings} "
                               f"({key}: {saved.get(key)}); pass the settings file of that run")
    return saved


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--device, --threads and --no-progress."""
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:<index>")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads of torch (torch.set_num_threads; default: torch's own choice). "
                             "The workflow passes each rule's `threads:`")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on a terminal (log lines report progress instead)")


def num_examples_option(text: str) -> int | str:
    """--num-examples: a positive integer, or `all` (the whole test set)."""
    from ..config import ALL

    if text.strip().lower() == ALL:
        return ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def start_run(args: argparse.Namespace, verb: str) -> logging.Logger:
    """Logging to stderr, the thread count, and output-path checks shared by the compute verbs."""
    from .. import logs

    logs.setup()
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise AttrrobError(f"--threads must be ≥ 1, got {threads}")
        check_options(threads=threads)
        import torch

        torch.set_num_threads(threads)
    out = getattr(args, "out", None)
    if out is not None and out.exists() and not out.is_dir():
        raise AttrrobError(f"--out {out} is an existing file; --out names a directory (pass another path)")
    return logs.get(verb)


def check_options(**values) -> None:
    """Each named option's value within `config.OPTION_LIMITS` (None = not given)."""
    from ..config import OPTION_LIMITS, check_limits

    for name, value in values.items():
        if value is not None:
            check_limits(OPTION_LIMITS[name], value, f"--{name.replace('_', '-')}")


def load_split(path: Path, split: str, dataset: str, logger: logging.Logger):
    """(x, y) of a prepared file's split, after checks whose errors name the data set to prepare."""
    from ..data import load_manifest, load_prepared

    hint = f"run `attrrob prepare --dataset {dataset} --raw data/raw/{dataset} --out {path}`"
    if path.is_dir():
        raise AttrrobError(f"--data {path} is a directory; pass the prepared .npz file of {dataset}")
    if not path.is_file():
        raise AttrrobError(f"prepared file {path} does not exist; {hint}")
    from ..data.store import manifest_path

    if not manifest_path(path).is_file():
        raise AttrrobError(f"manifest {manifest_path(path)} (beside {path}) does not exist; {hint}")
    manifest = load_manifest(path)
    if manifest.get("dataset") not in (None, dataset):
        raise AttrrobError(f"--data {path} holds '{manifest['dataset']}', not '{dataset}'; "
                           f"pass data/prepared/{dataset}.npz")
    x, y = load_prepared(path, split)
    logger.info("data %s: sha256 %s (verified), %d %s images", path, manifest["npz_sha256"], len(x), split)
    return x, y


def resolve_num_examples(settings: dict, available: int, data: Path) -> None:
    """`num_examples` as a count: `all` is every test image; more than there are is an error."""
    from ..config import ALL

    wanted = settings.get("num_examples")
    if wanted == ALL or wanted is None:
        settings["num_examples"] = available
    elif wanted > available:
        raise AttrrobError(f"num_examples={wanted} exceeds the {available} test images of {data}; "
                           "pass --num-examples all (or set num_examples: all) to evaluate them all")


def overrides_from(args: argparse.Namespace, **named) -> dict:
    """The --set items, plus the named shortcut options that were given (e.g. num_examples=...)."""
    from ..config import parse_overrides

    overrides = parse_overrides(args.overrides)
    overrides.update({key: value for key, value in named.items() if value is not None})
    return overrides


@contextlib.contextmanager
def locked_dirs(*dirs: tuple[str, Path]) -> Iterator[None]:
    """Hold the lock of each (option, folder) for the block: a second run on one of them fails at once."""
    from ..locks import lock_directory

    with contextlib.ExitStack() as stack:
        for option, directory in dirs:
            stack.enter_context(lock_directory(directory, option))
        yield


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


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def ci_text(entry: dict) -> str:
    """`{mean, ci_low, ci_high, n}` as `0.912 [0.88, 0.94]` for a log line."""
    return f"{entry['mean']:.4g} [{entry['ci_low']:.4g}, {entry['ci_high']:.4g}] (n={entry['n']})"
