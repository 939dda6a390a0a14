"""`attrrob evaluate`: an attribution attack (topk, random, mass_center, targeted, noise) on a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config, registry
from ..errors import AttrrobError, one_line_errors
from ..run_settings import MODEL
from .common import (add_run_options, add_settings_options, check_options, ci_text, held_device, load_split,
                     locked_dirs, num_examples_option, overrides_from, resolve_num_examples, settings_file, start_run,
                     torch_threads)

DESCRIPTION = """Attack the saliency maps (IG of the true-class logit) of a trained model on the test set and
measure how much they move: top-k intersection, Kendall's tau-b, Spearman's rho, mass-centre shift, and
the L-inf size of the kept perturbation. Writes OUT/per_example.csv, OUT/summary.json,
OUT/trace.npz (per image and iteration: tau and IN of the kept iterate) and OUT/examples.npz
(original and attacked images and both saliency maps of the first K = --save-examples attacked
images; empty arrays for K = 0), all atomically."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attrrob evaluate", description=DESCRIPTION)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by 'attrrob train'")
    p.add_argument("--data", type=Path, required=True, help="prepared data file, data/prepared/<dataset>.npz")
    p.add_argument("--dataset", required=True, choices=config.datasets())
    p.add_argument("--attack", required=True, metavar="NAME",
                   help=f"{', '.join(registry.attack_names())}, or the name of an attack variant of the --config file "
                        f"(hyperparameters.<dataset>.{config.VARIANTS}.<name>: an attack at other settings)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_settings_options(p, "attack", "zero_direction=stay")
    p.add_argument("--num-examples", type=num_examples_option, default=None, metavar="N|all",
                   help="first N test images, or all of them (overrides the config; more than the test set "
                        "holds is an error)")
    p.add_argument("--batch-images", type=int, default=None,
                   help="most images attacked together (1 = per-image mode; same results)")
    p.add_argument("--memory-budget-gb", type=float, default=None,
                   help="memory the attack may use (default: 60%% of free GPU memory or 1/4 of free RAM, ≤ 8 GiB)")
    p.add_argument("--target", type=Path, default=None,
                   help="targeted attack: .npy [H, W] array, non-zero = target pixels "
                        "(default: a per-image random square of ceil(sqrt(k_attack))^2 pixels)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="which split to attack (validation: for choosing a sweep's value, never test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-image random streams")
    p.add_argument("--save-examples", type=int, default=8, metavar="K", help="images kept for the picture grid")
    add_run_options(p)
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = settings_file(args, "attack", dataset=args.dataset)
    bound = None
    if settings is None:
        attack, _ = config.resolve_attack(args.dataset, args.attack, args.config)
        settings = config.attack_settings(args.dataset, args.config,
                                          overrides_from(args, num_examples=args.num_examples), variant=args.attack)
    else:  # the file names the attack a variant runs; --attack names the results (variant or attack)
        attack = settings.pop("attack")
        del settings["dataset"]
        bound = settings.pop(MODEL, None)  # the digest of the evaluated model's settings, checked below
        if args.attack in registry.attack_names() and args.attack != attack:
            raise AttrrobError(f"--attack {args.attack} disagrees with --settings {args.settings} (attack: {attack})")
        if args.num_examples is not None:
            raise AttrrobError("--settings holds num_examples; drop --num-examples")
    if args.batch_images is not None and args.batch_images < 1:
        raise AttrrobError(f"--batch-images must be ≥ 1, got {args.batch_images}")
    if args.memory_budget_gb is not None and args.memory_budget_gb <= 0:
        raise AttrrobError(f"--memory-budget-gb must be positive, got {args.memory_budget_gb}")
    if args.save_examples < 0:
        raise AttrrobError(f"--save-examples must be ≥ 0, got {args.save_examples}")
    check_options(seed=args.seed, save_examples=args.save_examples, batch_images=args.batch_images,
                  memory_budget_gb=args.memory_budget_gb)
    if args.target is not None and not registry.attack(attack).takes_target:
        raise AttrrobError("--target is only used by the targeted attack; drop it or use --attack targeted")
    log = start_run(args, "evaluate")

    from ..checkpoint import load_model
    from ..evaluation import evaluate_attack, load_target_mask, write_attack_outputs

    spec = config.dataset_input(args.dataset)
    target = None if args.target is None else load_target_mask(args.target, spec["height"], spec["width"])
    with locked_dirs(("--out", args.out)), held_device(args.device) as device:
        model, meta = load_model(args.model, dataset=args.dataset, device=device)
        model_digest = config.settings_digest(meta["config"])
        if bound is not None and bound != model_digest:
            raise AttrrobError(f"--settings {args.settings} is for the model of settings {bound}; {args.model} "
                               f"was trained with settings {model_digest}: pass that run's model and settings")
        x, y = load_split(args.data, args.split, args.dataset, log)
        resolve_num_examples(settings, len(x), args.data)
        log.info("evaluate %s attack on %s/%s (%s, step %d): settings %s, device %s, threads %d, %d images",
                 args.attack if attack == args.attack else f"{args.attack} ({attack} variant)", args.dataset,
                 meta["method"], args.model, meta["step"],
                 config.settings_digest(settings), device, torch_threads(), settings["num_examples"])
        outcome = evaluate_attack(
            model, x, y, attack, settings, dataset=args.dataset, method=meta["method"], seed=args.seed,
            target=target, batch_images=args.batch_images,
            memory_budget_bytes=None if args.memory_budget_gb is None else int(args.memory_budget_gb * (1 << 30)),
            save_examples=args.save_examples, progress=not args.no_progress)
        outcome.summary["model"] = str(args.model)
        outcome.summary["settings"][MODEL] = model_digest  # which model these numbers are of
        outcome.summary["attack_name"] = args.attack  # the variant's name, or the attack's
        outcome.summary["split"] = args.split
        write_attack_outputs(args.out, outcome)
        summary = outcome.summary
        counts, found = summary["counts"], summary["metrics"]
        log.info("done: %d of %d images attacked (%d misclassified skipped); %s; %.2f images/s; wrote %s",
                 counts["n_attacked"], counts["n_total"], counts["n_skipped"],
                 "; ".join(f"{name} {ci_text(value)}" for name, value in found.items()),
                 summary["images_per_s"], args.out)
        return summary


if __name__ == "__main__":
    main()
