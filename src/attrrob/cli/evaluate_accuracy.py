"""`attrrob evaluate-accuracy`: natural accuracy and L-inf PGD adversarial accuracy of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config
from ..errors import DataError, one_line_errors

DESCRIPTION = """Natural accuracy and adversarial accuracy under L-inf PGD on the cross-entropy (random start,
the data set's eps / steps / step size) on the first N test images. Writes OUT/summary.json (accuracies
with 95%% confidence intervals) and OUT/per_example.csv, atomically."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrrob evaluate-accuracy", description=DESCRIPTION)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by 'attrrob train'")
    p.add_argument("--data", type=Path, required=True, help="prepared data file, data/prepared/<dataset>.npz")
    p.add_argument("--dataset", required=True, choices=config.datasets())
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--config", type=Path, default=None, help="YAML file with a 'hyperparameters:' mapping")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                   help="override one accuracy setting (repeatable), e.g. --set steps=100")
    p.add_argument("--num-examples", type=int, default=None, help="first N test images (overrides the config)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:<index>")
    p.add_argument("--seed", type=int, default=0, help="seed of the PGD random starts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    overrides = config.parse_overrides(args.overrides)
    if args.num_examples is not None:
        overrides["num_examples"] = args.num_examples
    settings = config.accuracy_settings(args.dataset, args.config, overrides)

    from ..checkpoint import load_model
    from ..data import load_prepared
    from ..devices import select_device
    from ..evaluation import evaluate_accuracy, write_accuracy_outputs

    if not args.data.is_file():
        raise DataError(f"prepared data file {args.data} does not exist; run "
                        f"'attrrob prepare --dataset {args.dataset}' first")
    device, gpu_lock = select_device(args.device)
    try:
        model, meta = load_model(args.model, dataset=args.dataset, device=device)
        x, y = load_prepared(args.data, "test")
        outcome = evaluate_accuracy(model, x, y, settings, dataset=args.dataset, method=meta["method"],
                                    seed=args.seed, progress=not args.no_progress)
        outcome.summary["model"] = str(args.model)
        write_accuracy_outputs(args.out, outcome)
        return outcome.summary
    finally:
        if gpu_lock is not None:
            gpu_lock.release()


if __name__ == "__main__":
    main()
