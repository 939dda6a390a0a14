"""`attrrob evaluate-accuracy`: natural accuracy and L-inf PGD adversarial accuracy of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config
from ..errors import one_line_errors
from .common import add_run_options, add_settings_options, held_device, overrides_from

DESCRIPTION = """Natural accuracy and adversarial accuracy under L-inf PGD on the cross-entropy (random start,
the data set's eps / steps / step size) on the first N test images. Writes OUT/summary.json (accuracies
with 95%% confidence intervals) and OUT/per_example.csv, atomically."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrrob evaluate-accuracy", description=DESCRIPTION)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by 'attrrob train'")
    p.add_argument("--data", type=Path, required=True, help="prepared data file, data/prepared/<dataset>.npz")
    p.add_argument("--dataset", required=True, choices=config.datasets())
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_settings_options(p, "accuracy", "steps=100")
    p.add_argument("--num-examples", type=int, default=None, help="first N test images (overrides the config)")
    p.add_argument("--seed", type=int, default=0, help="seed of the PGD random starts")
    add_run_options(p)
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = config.accuracy_settings(args.dataset, args.config,
                                        overrides_from(args, num_examples=args.num_examples))

    from ..checkpoint import load_model
    from ..data import load_prepared
    from ..evaluation import evaluate_accuracy, write_accuracy_outputs

    with held_device(args.device) as device:
        model, meta = load_model(args.model, dataset=args.dataset, device=device)
        x, y = load_prepared(args.data, "test")
        outcome = evaluate_accuracy(model, x, y, settings, dataset=args.dataset, method=meta["method"],
                                    seed=args.seed, progress=not args.no_progress)
        outcome.summary["model"] = str(args.model)
        write_accuracy_outputs(args.out, outcome)
        return outcome.summary


if __name__ == "__main__":
    main()
