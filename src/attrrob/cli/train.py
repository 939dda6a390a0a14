"""`attrrob train`: train one data set × method; resumable from its checkpoint directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config
from ..errors import DataError, one_line_errors

DESCRIPTION = """Train a model with one of the seven objectives. Writes OUT/model.pt, OUT/train_log.csv and
OUT/train_metrics.json (atomically). Checkpoints go to --checkpoint-dir (default: a hidden
directory beside OUT, .checkpoints-<OUT name>); a rerun resumes from the latest checkpoint."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrrob train", description=DESCRIPTION)
    p.add_argument("--config", type=Path, default=None, help="YAML file with a 'hyperparameters:' mapping")
    p.add_argument("--dataset", required=True, choices=config.datasets())
    p.add_argument("--method", required=True, choices=config.METHODS)
    p.add_argument("--data", type=Path, required=True, help="prepared data file, data/prepared/<dataset>.npz")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="resumable state (kept apart from --out)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:<index>")
    p.add_argument("--steps", type=int, default=None, help="number of training steps (overrides the config)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                   help="override one training setting (repeatable), e.g. --set lam=0.2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    overrides = config.parse_overrides(args.overrides)
    if args.steps is not None:
        overrides["steps"] = args.steps
    settings = config.train_settings(args.dataset, args.method, args.config, overrides)

    from ..data import load_prepared
    from ..devices import select_device
    from ..training import train

    if not args.data.is_file():
        raise DataError(f"prepared data file {args.data} does not exist; run "
                        f"'attrrob prepare --dataset {args.dataset}' first")
    x_train, y_train = load_prepared(args.data, "train")
    device, gpu_lock = select_device(args.device)
    try:
        return train(settings, x_train, y_train, args.out, checkpoint_dir=args.checkpoint_dir,
                     device=device, progress=not args.no_progress)
    finally:
        if gpu_lock is not None:
            gpu_lock.release()


if __name__ == "__main__":
    main()
