"""`attrrob evaluate-accuracy`: natural accuracy, and adversarial accuracy under L-inf PGD and AutoAttack, of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config
from ..errors import AttrrobError, one_line_errors
from ..run_settings import MODEL
from .common import (add_run_options, add_settings_options, check_options, ci_text as _ci, held_device, locked_dirs,
                     load_split, num_examples_option, overrides_from, resolve_num_examples, settings_file, start_run,
                     torch_threads)

DESCRIPTION = """Natural accuracy and adversarial accuracy under L-inf PGD (random start, the data set's eps /
steps / step size) on the cross-entropy, or with --pgd-loss ce_ig_approx on CE + w||IG_approx||_1, on the
first N test images, and (setting autoattack, on by
default) under AutoAttack's APGD-CE + APGD-T on the same images at the same eps. Writes
OUT/summary.json (accuracies with 95%% confidence intervals) and OUT/per_example.csv, atomically."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrrob evaluate-accuracy", description=DESCRIPTION)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by 'attrrob train'")
    p.add_argument("--data", type=Path, required=True, help="prepared data file, data/prepared/<dataset>.npz")
    p.add_argument("--dataset", required=True, choices=config.datasets())
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_settings_options(p, "accuracy", "steps=100")
    p.add_argument("--num-examples", type=num_examples_option, default=None, metavar="N|all",
                   help="first N test images, or all of them (overrides the config; more than the test set "
                        "holds is an error)")
    p.add_argument("--autoattack", action=argparse.BooleanOptionalAction, default=None,
                   help="also run AutoAttack (APGD-CE + APGD-T; overrides the config's accuracy setting autoattack)")
    p.add_argument("--pgd-loss", choices=("ce", "ce_ig_approx"), default=None,
                   help="what the AA's PGD maximises: ce (RAR's protocol) or ce_ig_approx, CE + pgd_ig_weight * "
                        "||IG_approx||_1 (the Sarkar authors' Flower evaluation; overrides the config's pgd_loss)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="which split to evaluate (validation: for choices such as training budgets, never test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the PGD random starts")
    add_run_options(p)
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = settings_file(args, "accuracy", dataset=args.dataset)
    bound = None
    if settings is None:
        settings = config.accuracy_settings(args.dataset, args.config,
                                            overrides_from(args, num_examples=args.num_examples,
                                                           autoattack=args.autoattack, pgd_loss=args.pgd_loss))
    else:
        del settings["dataset"]
        bound = settings.pop(MODEL, None)  # the digest of the evaluated model's settings, checked below
        if args.num_examples is not None or args.autoattack is not None or args.pgd_loss is not None:
            raise AttrrobError("--settings holds num_examples, autoattack and pgd_loss; "
                               "drop --num-examples/--autoattack/--pgd-loss")
    check_options(seed=args.seed)
    log = start_run(args, "evaluate_accuracy")

    from ..checkpoint import load_model
    from ..evaluation import evaluate_accuracy, write_accuracy_outputs

    with locked_dirs(("--out", args.out)), held_device(args.device) as device:
        model, meta = load_model(args.model, dataset=args.dataset, device=device)
        model_digest = config.settings_digest(meta["config"])
        if bound is not None and bound != model_digest:
            raise AttrrobError(f"--settings {args.settings} is for the model of settings {bound}; {args.model} "
                               f"was trained with settings {model_digest}: pass that run's model and settings")
        x, y = load_split(args.data, args.split, args.dataset, log)
        resolve_num_examples(settings, len(x), args.data)
        log.info("evaluate-accuracy %s/%s (%s, step %d): settings %s, device %s, threads %d, %d images",
                 args.dataset, meta["method"], args.model, meta["step"], config.settings_digest(settings),
                 device, torch_threads(), settings["num_examples"])
        outcome = evaluate_accuracy(model, x, y, settings, dataset=args.dataset, method=meta["method"],
                                    seed=args.seed, progress=not args.no_progress)
        outcome.summary["model"] = str(args.model)
        outcome.summary["split"] = args.split
        outcome.summary["settings"][MODEL] = model_digest  # which model these numbers are of
        write_accuracy_outputs(args.out, outcome)
        summary = outcome.summary
        log.info("done: natural accuracy %s, adversarial accuracy %s (eps %g, %s), %.1f images/s; wrote %s",
                 _ci(summary["natural_accuracy"]), _ci(summary["adversarial_accuracy"]), settings["eps"],
                 summary["pgd_protocol"], summary["images_per_s"], args.out)
        return summary


if __name__ == "__main__":
    main()
