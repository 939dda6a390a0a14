"""`attrrob select`: choose a sweep's point from validation results only (never test).

Each candidate (a sweep point) gets its validation metric per sweep seed (the mean over the
validation images its evaluation read: IN or τ of the selection's attack, AA or NA), then the mean
over seeds; its interval is a t interval over seeds with several seeds, else the interval over
validation images. The rule: among candidates whose validation NA is at least the best candidate's
NA minus `na_guard` accuracy points (every candidate without a guard), the largest (`max`) or
smallest (`min`) mean; a tie goes to the first point in the sweep's order. A candidate without a
value (no attacked image) cannot be chosen.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import AttrrobError, one_line_errors
from .experiments import SELECTION_METRICS
from .intervals import mean_ci
from .outputs import json_safe, write_json
from .result_files import SUMMARY

SPLIT = "validation"


def choose(candidates: Sequence[Mapping[str, Any]], rule: str, na_guard: float | None) -> int:
    """Index of the chosen candidate; each has `value` (the metric) and `na` (validation NA, 0..1)."""
    eligible = list(range(len(candidates)))
    if na_guard is not None:
        best = max(c["na"] for c in candidates)
        eligible = [i for i in eligible if candidates[i]["na"] >= best - na_guard / 100 - 1e-12]
    eligible = [i for i in eligible if math.isfinite(candidates[i]["value"])]
    if not eligible:
        raise AttrrobError("no sweep point has a validation value to choose by (no attacked image?)")
    sign = 1 if rule == "max" else -1
    return max(eligible, key=lambda i: (sign * candidates[i]["value"], -i))


def _read_summary(folder: Path) -> dict:
    path = folder / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AttrrobError(f"{path}: not a readable summary ({' '.join(str(exc).split())})") from None
    if summary.get("split") != SPLIT:
        raise AttrrobError(f"{path}: evaluated on the {summary.get('split')} split, not {SPLIT}")
    return summary


def _metric(summary: Mapping, kind: str, key: str) -> dict:
    entry = summary["metrics"][key] if kind == "attack" else summary[key]
    return {name: float("nan") if entry.get(name) is None else float(entry[name])
            for name in ("mean", "ci_low", "ci_high")} | {"n": int(entry.get("n") or 0)}


def candidates(spec: Mapping) -> list[dict]:
    """Each sweep point with its validation metric per seed, over seeds, and its validation NA."""
    select = spec["select"]
    kind, key = SELECTION_METRICS[select["metric"]]
    out = []
    for point in spec["points"]:
        per_seed, na_values = {}, []
        for seed, run in point["runs"].items():
            root = Path(run) / SPLIT
            accuracy = _read_summary(root / "accuracy")
            summary = accuracy if kind == "accuracy" else _read_summary(root / f"attack_{select['attack']}")
            per_seed[seed] = _metric(summary, kind, key)
            na_values.append(_metric(accuracy, "accuracy", "natural_accuracy")["mean"])
        values = [entry["mean"] for entry in per_seed.values()]
        if len(values) > 1:
            over = mean_ci(values)
            interval = {"mean": over["mean"], "ci_low": over["ci_low"], "ci_high": over["ci_high"],
                        "interval": f"t interval over {len(values)} seeds"}
        else:
            only = next(iter(per_seed.values()))
            interval = {"mean": only["mean"], "ci_low": only["ci_low"], "ci_high": only["ci_high"],
                        "interval": f"over {only['n']} validation images (1 seed)"}
        out.append({"label": point["label"], "point": point["point"], "value": interval["mean"],
                    "ci_low": interval["ci_low"], "ci_high": interval["ci_high"], "interval": interval["interval"],
                    "per_seed": {seed: entry["mean"] for seed, entry in per_seed.items()},
                    "na": sum(na_values) / len(na_values)})
    return out


def selection(spec: Mapping) -> dict:
    select = spec["select"]
    found = candidates(spec)
    index = choose(found, select["rule"], select["na_guard"])
    guard = select["na_guard"]
    best_na = max(c["na"] for c in found)
    for i, candidate in enumerate(found):
        candidate["chosen"] = i == index
        candidate["eligible"] = guard is None or candidate["na"] >= best_na - guard / 100 - 1e-12
    rule = f"{select['rule']} of validation {select['metric']}"
    if select["metric"] in ("IN", "tau"):
        rule += f" under the {select['attack']} attack"
    if guard is not None:
        rule += f", among points whose validation NA is at least the best point's minus {guard:g} points"
    rule += "; a tie goes to the first point listed"
    return {"dataset": spec["dataset"], "method": spec["method"], "split": SPLIT,
            "num_examples": select["num_examples"], "metric": select["metric"], "attack": select["attack"],
            "rule": rule, "seeds": spec["seeds"], "candidates": json_safe(found),
            "chosen": {"label": found[index]["label"], "point": found[index]["point"]},
            # What it was chosen from: a change of the sweep reruns the selection (run_settings.sync).
            "settings": spec}



def chosen_point(path: str | Path) -> tuple:
    """The chosen point of a selection file as ((section, key, value), ...)."""
    try:
        chosen = json.loads(Path(path).read_text(encoding="utf-8"))["chosen"]["point"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AttrrobError(f"selection file {path}: not readable ({' '.join(str(exc).split())}); "
                           "delete it and rerun") from None
    return tuple(tuple(entry) for entry in chosen)


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="attrrob select", description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", type=Path, required=True, help="results/sweeps/<dataset>/<method>/sweep.json")
    p.add_argument("--out", type=Path, required=True, help="the selection file to write (JSON)")
    args = p.parse_args(argv)
    try:
        spec = json.loads(args.sweep.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AttrrobError(f"--sweep {args.sweep}: not a readable sweep file ({' '.join(str(exc).split())})") from None
    if not spec.get("select"):
        raise AttrrobError(f"--sweep {args.sweep}: the sweep has no select: entry")
    result = selection(spec)
    write_json(args.out, result)
    print(f"{spec['dataset']}/{spec['method']}: chose {result['chosen']['label']} ({result['rule']})")
    return result
