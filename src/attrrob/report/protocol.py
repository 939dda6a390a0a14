"""The paper's protocol as the reports apply it: which recorded settings of a result differ from the
paper's (its published numbers then stand apart), which PGD protocol produced an AA, the protocol behind
a report table in one line read from its result files, and the verdict on Sarkar et al.'s claim where a
table can test it.

A reader should not have to open a file to learn at which ε, PGD steps, attack budget, k, training
steps and number of training runs a table was measured, nor whether its budgets are the paper's.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pandas as pd

from .. import config as attrrob_config
from .load import (PathLike, _published, dataset_name, load_accuracy, load_attack, load_train_metrics,
                   method_name)


# The settings that define the paper's protocol: a result at other values is not comparable with a
# published number (an AA at ε = 0.1 is not the AA at ε = 0.3).
_PROTOCOL_KEYS = {"accuracy": ("eps",), "attack": ("eps", "k_attack", "k_metric")}


def protocol_differences(dataset: str, accuracy: Mapping | None, attacked: Mapping | None) -> dict[str, list[str]]:
    """Per result kind ("accuracy", "attack"), how its recorded settings differ from the paper's protocol
    (the package defaults), e.g. ["ε 0.1 (protocol 0.3)"]; empty where they agree or were not recorded."""
    from ..config import accuracy_settings, attack_settings

    protocol = {"accuracy": accuracy_settings(dataset), "attack": attack_settings(dataset)}
    out: dict[str, list[str]] = {}
    for kind, result in (("accuracy", accuracy), ("attack", attacked)):
        recorded = (result or {}).get("settings") or {}
        out[kind] = [f"{'ε' if key == 'eps' else key} {recorded[key]:g} (protocol {protocol[kind][key]:g})"
                     for key in _PROTOCOL_KEYS[kind]
                     if isinstance(recorded.get(key), (int, float)) and not math.isclose(recorded[key], protocol[kind][key])]
    out["attack"] += _runs_difference(protocol["attack"], attacked)
    return out


def _runs_difference(protocol: Mapping, attacked: Mapping | None) -> list[str]:
    """["runs 1 (protocol 3)"] where an attack kept the best of fewer runs than the protocol's for its
    attack and zero-direction mode (a run with `stay` is deterministic: one is the protocol there)."""
    from ..config import runs_of

    recorded = (attacked or {}).get("settings") or {}
    runs, attack = recorded.get("runs"), (attacked or {}).get("attack")
    if not isinstance(runs, int) or isinstance(runs, bool) or not attack:
        return []  # results written before runs were recorded
    mode = recorded.get("zero_direction") or attacked.get("zero_direction") or protocol["zero_direction"]
    wanted = runs_of(attack, {**protocol, "zero_direction": mode})
    return [f"runs {runs} (protocol {wanted})"] if runs < wanted else []


def aa_protocol(accuracy: Mapping | None) -> str:
    """The AA's PGD protocol as the summary names it; results written before it was recorded ran
    PGD on CE; "" without a result."""
    if accuracy is None:
        return ""
    steps = ((accuracy.get("settings") or {}).get("steps"))
    return accuracy.get("pgd_protocol") or (f"PGD-{steps} on CE" if steps else "PGD on CE")


AA_PROTOCOL_LABEL = "AA protocol"


def shows_aa_protocol(df: pd.DataFrame) -> bool:
    """Name the AA's PGD protocol per row where protocols can differ: Flower (the Sarkar authors
    evaluated their AA on their training loss, RAR on CE) and any table with a non-CE AA."""
    if not len(df):
        return False
    recorded = df["aa_protocol"] != ""
    return bool((df["dataset"] == "flower").any() or (recorded & ~df["aa_protocol"].str.endswith("on CE")).any())

PAPER_DATASETS = ("mnist", "fashion_mnist", "gtsrb", "flower")
CLAIM_PAIR = ("sarkar", "ig_sum_norm")
CLAIMED_GAIN_POINTS = (3.0, 9.0)  # "approximately 3% to 9%" (the abstract; published.yaml)


def _values(docs: Iterable[Mapping | None], key: str) -> list:
    found = []
    for doc in docs:
        value = (doc or {}).get(key)
        if value is not None and value not in found:
            found.append(value)
    return found


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10000 else f"{value:g}" \
        if isinstance(value, (int, float)) else str(value)


def _one(values: list) -> str:
    """One value, or the range the methods span ("?" where no file records it)."""
    if not values:
        return "?"
    values = list(dict.fromkeys(values))
    if len(values) == 1:
        return _number(values[0])
    numbers = [v for v in values if isinstance(v, (int, float))]
    if len(numbers) == len(values):
        return f"{_number(min(numbers))}–{_number(max(numbers))}"
    return "/".join(_number(v) for v in values)


def _paper_steps(dataset: str, method: str) -> int | None:
    try:
        return int(attrrob_config.train_settings(dataset, method)["steps"])
    except Exception:  # a data set or method the package defaults do not know
        return None


def protocol_line(results_dir: PathLike, dataset: str, methods: Iterable[str], attack: str) -> str:
    """One Markdown line: ε (training, PGD evaluation, attack), PGD steps, attack iterations × IG
    points, k, training steps, training runs per method, and whether these are the paper's budgets."""
    methods = list(methods)
    train = [(load_train_metrics(results_dir, dataset, m) or {}).get("settings") for m in methods]
    steps = [(load_train_metrics(results_dir, dataset, m) or {}).get("steps") for m in methods]
    accuracy = [(load_accuracy(results_dir, dataset, m) or {}).get("settings") for m in methods]
    attacked = [(load_attack(results_dir, dataset, m, attack) or {}).get("settings") for m in methods]
    runs = sum(1 for s in train if s)
    line = (f"**Protocol, {dataset_name(dataset)}**: training ε {_one(_values(train, 'eps'))} with a "
            f"{_one(_values(train, 'pgd_steps'))}-step inner PGD, {_one(sorted(set(s for s in steps if s)))} training steps, "
            f"{'one training run' if runs else 'no trained model'} per method ({runs} of {len(methods)}: "
            "intervals are over test images, not over training seeds); "
            f"PGD accuracy ε {_one(_values(accuracy, 'eps'))}, {_one(_values(accuracy, 'steps'))} steps; "
            f"`{attack}` attack ε {_one(_values(attacked, 'eps'))}, {_one(_values(attacked, 'iterations'))} "
            f"iterations × {_one(_values(attacked, 'ig_steps'))} IG points, k = {_one(_values(attacked, 'k_attack'))} "
            f"(IN at k = {_one(_values(attacked, 'k_metric'))}), {_one(_values(attacked, 'num_examples'))} test images.")
    return line + _budget_note(dataset, methods, steps)


def _budget_note(dataset: str, methods: list[str], steps: list) -> str:
    if dataset not in PAPER_DATASETS:
        return (f" {dataset_name(dataset)} is not a data set of the paper and these budgets are small: the "
                "numbers show the pipeline working, not the paper's results.")
    short = [(s, _paper_steps(dataset, m)) for m, s in zip(methods, steps) if s]
    short = [(s, p) for s, p in short if p and s < p]
    if short:
        paper = _one(sorted({p for _, p in short}))
        return (f" Training budgets below the paper's ({_one(sorted({s for s, _ in short}))} of {paper} steps): "
                "these numbers show the pipeline and this budget, not the paper's results.")
    return ""


def protocol_markdown(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str], attack: str) -> str:
    """The protocol line of every data set of a table, one paragraph each."""
    return "\n\n".join(protocol_line(results_dir, d, methods, attack) for d in datasets)


def claim_verdict(delta: pd.DataFrame) -> str:
    """One line per data set of the paper where the paired table holds Sarkar − IG-SUM-NORM: ΔIN with
    its 95% CI against the claimed +3 to +9 points, and what the interval says about it."""
    if delta is None or delta.empty:
        return ""
    low_claim, high_claim = CLAIMED_GAIN_POINTS
    claim = _published()["claim"]
    lines = []
    for _, row in delta.iterrows():
        if (row["a"], row["b"]) != CLAIM_PAIR or row["dataset"] not in PAPER_DATASETS:
            continue
        mean, low, high = (100.0 * row[f"topk_intersection_{f}"] for f in ("mean", "ci_low", "ci_high"))
        if any(math.isnan(v) for v in (mean, low, high)):
            continue
        if high < low_claim:
            reading = f"the interval lies below +{low_claim:g}: this result does not show the claimed gain"
        elif low >= low_claim:
            reading = "the interval lies within or above the claimed range: consistent with the claim"
        else:
            reading = "the interval reaches into the claimed range: not decisive either way"
        lines.append(
            f"**Verdict, {dataset_name(row['dataset'])}**: {method_name(CLAIM_PAIR[0])} − {method_name(CLAIM_PAIR[1])}: "
            f"ΔIN {mean:+.2f} [{low:+.2f}, {high:+.2f}] points on {int(row['topk_intersection_n'])} paired images; "
            f"the paper claims +{low_claim:g} to +{high_claim:g} (“{claim['text']}”); {reading} "
            "(at the protocol above).")
    return "\n\n".join(lines)
