"""The compute table: training and evaluation wall times and rates, read from the runs' timing
records and written in human units."""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

import pandas as pd

from .load import NO_PUBLISHED, PathLike, dataset_name, load_accuracy, load_attack, load_train_metrics, method_name
from .tables import _isnan

def format_duration(seconds: Any) -> str:
    """Seconds in the unit a person reads: s below 90 s, min below 90 min, else h."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or math.isnan(seconds):
        return NO_PUBLISHED
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_rate(value: Any) -> str:
    """Images (or examples) per second, with thousands separators."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return NO_PUBLISHED
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def collect_timings(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str],
                    attacks: Iterable[str] = ("topk",)) -> pd.DataFrame:
    """Measured cost per dataset × method, as the result files report it (seconds, per second):
    training steps, wall time, examples/s and device; accuracy evaluation wall time; per attack,
    wall time and images/s. Rows without any result file are left out."""
    methods, attacks = list(methods), list(attacks)
    rows = []
    for dataset in datasets:
        for method in methods:
            train = load_train_metrics(results_dir, dataset, method) or {}
            accuracy = load_accuracy(results_dir, dataset, method) or {}
            found = {a: load_attack(results_dir, dataset, method, a) or {} for a in attacks}
            if not (train or accuracy or any(found.values())):
                continue
            row = {"dataset": dataset, "method": method, "train_steps": train.get("steps"),
                   "train_wall_time_s": train.get("wall_time_s"), "train_examples_per_s": train.get("examples_per_s"),
                   "device": train.get("device") or accuracy.get("device"),
                   "accuracy_wall_time_s": accuracy.get("wall_time_s")}
            for attack, summary in found.items():
                row[f"{attack}_wall_time_s"] = summary.get("wall_time_s")
                row[f"{attack}_images_per_s"] = summary.get("images_per_s")
            rows.append(row)
    return pd.DataFrame(rows)


def timings_html(timings: pd.DataFrame, attacks: Sequence[str]) -> str:
    """The compute table in human units (s / min / h; per-second rates with thousands separators)."""
    if timings.empty:
        return "<p><em>No results yet.</em></p>"
    several = timings["dataset"].nunique() > 1
    head = (["Data set"] if several else []) + ["Method", "Training steps", "Training time", "Training examples/s",
                                                "NA + AA evaluation"]
    # One column per attack (time, then images/s below it): with several attacks, two columns each
    # made the table wider than a page.
    head += [f"{attack} attack" for attack in attacks]
    head.append("Device")
    body = []
    for _, row in timings.iterrows():
        cells = ([dataset_name(row["dataset"])] if several else []) + [method_name(row["method"])]
        steps = row["train_steps"]
        cells += [NO_PUBLISHED if _isnan(steps) or steps is None else f"{int(steps):,}",
                  format_duration(row["train_wall_time_s"]), format_rate(row["train_examples_per_s"]),
                  format_duration(row["accuracy_wall_time_s"])]
        cells = [html.escape(str(c)) for c in cells]
        for attack in attacks:
            wall, rate = row.get(f"{attack}_wall_time_s"), row.get(f"{attack}_images_per_s")
            rate_text = "" if _isnan(rate) else f"<div class='ci'>{html.escape(format_rate(rate))} images/s</div>"
            cells.append(html.escape(format_duration(wall)) + rate_text)
        cells.append(html.escape(row["device"] or NO_PUBLISHED))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table class='attrrob-compute'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")
