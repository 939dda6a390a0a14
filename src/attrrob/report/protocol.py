"""The paper's protocol as the reports apply it: which recorded settings of a result differ from the
paper's (its published numbers then stand apart), and which PGD protocol produced an AA."""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd


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
