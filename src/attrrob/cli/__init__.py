"""`attrrob <verb> ...`: each verb is a module of this package with its own `main(argv)`."""

from __future__ import annotations

import importlib
import sys

VERBS = {
    "download": ("attrrob.cli.download", "fetch raw data files (official URLs or a local mirror), verified"),
    "prepare": ("attrrob.cli.prepare", "turn raw files into one compressed array file + JSON manifest"),
    "train": ("attrrob.cli.train", "train a model with a registered training method (resumable)"),
    "evaluate-accuracy": ("attrrob.cli.evaluate_accuracy", "natural and PGD adversarial accuracy"),
    "evaluate": ("attrrob.cli.evaluate", "attribution attack (topk, random, mass_center, targeted, noise)"),
    "select": ("attrrob.selection", "choose a sweep's value from its validation results (never test)"),
    "collect-results": ("attrrob.cli.collect_results", "results tables, metrics.json and curves for DVC/README"),
    "study": ("attrrob.cli.study", "a resumable study committed run by run, and its reports rebuilt from git"),
}


def _usage() -> str:
    lines = ["usage: attrrob <verb> [options]   (attrrob <verb> --help for details)", "", "verbs:"]
    lines += [f"  {verb:<18} {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    if argv[0] == "--version":
        from attrrob import __version__

        print(__version__)
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"attrrob: error: unknown verb '{verb}'\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(VERBS[verb][0])
    module.main(rest)


if __name__ == "__main__":
    main()
