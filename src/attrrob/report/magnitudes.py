"""Regulariser magnitudes read from the training logs: each logged loss term at the start and end of
training, its weight and its weighted share of the loss."""

from __future__ import annotations

import html
import math
from typing import Any, Mapping

import pandas as pd

from .. import registry
from .load import method_name
from .tables import _isnan, _number

REGULARIZER_TERMS = (("cacr", "R_CACR"), ("wacr", "R_WACR"), ("ig_l1", "‖IG‖₁"))


def _window_mean(values: pd.Series, first: bool, share: float = 0.1) -> float:
    """Mean of the first (or last) `share` of the logged values, at least one row."""
    n = max(1, int(math.ceil(share * len(values))))
    part = values.iloc[:n] if first else values.iloc[-n:]
    return float(part.mean())


def regularizer_magnitudes(logs: Mapping[str, pd.DataFrame | None],
                           settings: Mapping[str, Mapping[str, Any] | None]) -> pd.DataFrame:
    """Per method and regulariser term of its training log: the term's logged value (unweighted, batch
    sum) at the start and end of training (means over the first and last 10% of logged steps), its
    weight, its weighted share of the loss at the end (|weight × term| / (CE + |weight × term|)), and,
    for the Sarkar variants, |R_CACR| / |R_WACR| at the end. Methods without such terms have no row."""
    rows = []
    for method, log in logs.items():
        if log is None or not len(log):
            continue
        weight_key = (registry.method(method).weight if method in registry.method_names() else None) or "lam"
        weight = _number(((settings or {}).get(method) or {}).get(weight_key))
        ce_end = _window_mean(pd.to_numeric(log["ce"], errors="coerce").dropna(), first=False) \
            if "ce" in log.columns else math.nan
        own = []
        for term, label in REGULARIZER_TERMS:
            if term not in log.columns:
                continue
            values = pd.to_numeric(log[term], errors="coerce").dropna()
            if values.empty:
                continue
            end = _window_mean(values, first=False)
            weighted = abs(weight * end) if not _isnan(weight) else math.nan
            own.append({"method": method, "term": label, "key": term, "steps": int(log["step"].iloc[-1]),
                        "start": _window_mean(values, first=True), "end": end,
                        "min": float(values.min()), "max": float(values.max()),
                        "weight_name": registry.WEIGHT_SYMBOLS.get(weight_key, weight_key), "weight": weight,
                        "weighted_share_end": weighted / (abs(ce_end) + weighted)
                        if not (_isnan(weighted) or _isnan(ce_end)) and abs(ce_end) + weighted > 0 else math.nan})
        ends = {row["key"]: row["end"] for row in own}
        if "cacr" in ends and "wacr" in ends:
            ratio = abs(ends["cacr"]) / abs(ends["wacr"]) if ends["wacr"] else math.inf
            for row in own:
                if row["key"] in ("cacr", "wacr"):
                    row["cacr_over_wacr_end"] = ratio
        rows += own
    columns = ["method", "term", "steps", "start", "end", "min", "max", "weight_name", "weight",
               "weighted_share_end", "cacr_over_wacr_end"]
    return pd.DataFrame(rows, columns=columns)


def _sci(value: float) -> str:
    if _isnan(value):
        return "–"
    return f"{value:.3g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def regularizer_html(frame: pd.DataFrame) -> str:
    """`regularizer_magnitudes` as an HTML table with a note on what the numbers are."""
    if frame.empty:
        return "<p class='note'>No method of these results logs a regulariser term.</p>"
    head = ("<tr><th>method</th><th>term</th><th>start</th><th>end</th><th>range over training</th>"
            "<th>weight</th><th>weighted share of the loss at the end</th><th>|R_CACR| / |R_WACR| at the end</th></tr>")
    body = []
    for _, row in frame.iterrows():
        share = row["weighted_share_end"]
        body.append(
            f"<tr><td>{html.escape(method_name(row['method']))}</td><td>{html.escape(row['term'])}</td>"
            f"<td>{_sci(row['start'])}</td><td>{_sci(row['end'])}</td>"
            f"<td>{_sci(row['min'])} to {_sci(row['max'])}</td>"
            f"<td>{row['weight_name']} = {_sci(row['weight'])}</td>"
            f"<td>{'–' if _isnan(share) else f'{100 * share:.2g}%'}</td>"
            f"<td>{_sci(row['cacr_over_wacr_end'])}</td></tr>")
    note = ("<p class='note'>Logged values are unweighted batch sums (the loss multiplies them by the weight); "
            "start and end are means over the first and last 10% of the logged steps; the weighted share is "
            "|weight × term| / (CE + |weight × term|) at the end. A share near 0% means the term barely moves "
            "the weights, whatever its sign.</p>")
    return f"<table class='attrrob-compute'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>{note}"
