"""`attrrob train`: train one data set × method; resumable from its checkpoint directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config, registry
from ..errors import AttrrobError, one_line_errors
from .common import (add_run_options, add_settings_options, held_device, load_split, locked_dirs, overrides_from,
                     settings_file, start_run)

DESCRIPTION = """Train a model with a registered training method (attrrob.registry). Writes OUT/model.pt, OUT/train_log.csv and
OUT/train_metrics.json (atomically). Checkpoints go to --checkpoint-dir (default: a hidden
directory beside OUT, .checkpoints-<OUT name>); a rerun resumes from the latest checkpoint."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrrob train", description=DESCRIPTION)
    p.add_argument("--dataset", choices=config.datasets(), help="required unless --settings names it")
    p.add_argument("--method", choices=registry.method_names(), help="required unless --settings names it")
    p.add_argument("--data", type=Path, required=True, help="prepared data file, data/prepared/<dataset>.npz")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="resumable state (kept apart from --out)")
    p.add_argument("--steps", type=int, default=None, help="number of training steps (overrides the config)")
    p.add_argument("--force", action="store_true",
                   help="replace a finished model (and ignore a checkpoint) of other settings in --out "
                        "and --checkpoint-dir instead of refusing")
    add_settings_options(p, "training", "lam=0.2")
    add_run_options(p)
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = settings_file(args, "train", dataset=args.dataset, method=args.method)
    if settings is None:
        if args.dataset is None or args.method is None:
            raise AttrrobError("--dataset and --method are required (or --settings FILE, which names them)")
        settings = config.train_settings(args.dataset, args.method, args.config,
                                         overrides_from(args, steps=args.steps))
    elif args.steps is not None:
        settings["steps"] = args.steps  # bookkeeping only: a run may be extended (training.RESUMABLE_CHANGES)
    args.dataset, args.method = settings["dataset"], settings["method"]
    log = start_run(args, "train")
    if args.checkpoint_dir is not None and args.checkpoint_dir.exists() and not args.checkpoint_dir.is_dir():
        raise AttrrobError(f"--checkpoint-dir {args.checkpoint_dir} is an existing file; it names a directory")

    from .. import logs
    from ..training import CALL_LOG, checkpoint_path, default_checkpoint_dir, resumes, train

    checkpoint_dir = args.checkpoint_dir if args.checkpoint_dir is not None else default_checkpoint_dir(args.out)
    # The lock is on the folder of these settings: runs of other settings (other seeds, sweep
    # points) share --checkpoint-dir and train at the same time.
    latest = checkpoint_path(checkpoint_dir, settings)
    own = latest.parent
    with (locked_dirs(("--out", args.out), ("--checkpoint-dir", own)),
          logs.kept_across_calls(own / CALL_LOG, latest, resuming=resumes(latest, settings, args.force))):
        x_train, y_train = load_split(args.data, "train", args.dataset, log)
        with held_device(args.device) as device:
            return train(settings, x_train, y_train, args.out, checkpoint_dir=checkpoint_dir,
                         device=device, progress=not args.no_progress, force=args.force)


if __name__ == "__main__":
    main()
