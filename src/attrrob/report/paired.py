"""Paired differences between two models on the same attacked test images (their per-example
files): the mean per-image difference with a paired t interval, as a frame, Markdown and HTML."""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..intervals import mean_ci
from .load import PathLike, dataset_name, load_per_example, method_name
from .tables import _CI_FIELDS, _isnan

REFERENCE_METHOD = "ig_sum_norm"  # the previous best that Sarkar et al. compare with

def paired_difference(per_example_a: pd.DataFrame | None, per_example_b: pd.DataFrame | None,
                      metric: str) -> dict:
    """Mean of metric(a) − metric(b) over the test images both models had attacked, with its
    paired 95% t interval: `{mean, ci_low, ci_high, n}` (n = paired images; NaN when none).

    Pairing by test-set index removes the between-image variance, which dominates IN and τ;
    images that only one model classified correctly (and so had attacked) are left out.
    """
    empty = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    if per_example_a is None or per_example_b is None:
        return empty
    keep = ["index", metric]
    a = per_example_a[per_example_a["status"] == "attacked"][keep]
    b = per_example_b[per_example_b["status"] == "attacked"][keep]
    pairs = a.merge(b, on="index", suffixes=("_a", "_b"), validate="one_to_one").dropna()
    return mean_ci((pairs[f"{metric}_a"] - pairs[f"{metric}_b"]).to_numpy(np.float64))


PAIRED_METRICS = (("topk_intersection", "ΔIN (points)", 100.0), ("kendall_tau", "Δτ", 1.0))


def paired_comparison(results_dir: PathLike, datasets: Iterable[str],
                      pairs: Sequence[tuple[str, str]], attack: str = "topk") -> pd.DataFrame:
    """One row per data set × (a, b) pair whose per-example files both exist: paired differences
    a − b of IN (as a fraction) and τ, columns `<metric>_{mean,ci_low,ci_high,n}`."""
    rows = []
    for dataset in datasets:
        for a, b in pairs:
            frame_a = load_per_example(results_dir, dataset, a, attack)
            frame_b = load_per_example(results_dir, dataset, b, attack)
            if frame_a is None or frame_b is None:
                continue
            row: dict[str, Any] = {"dataset": dataset, "a": a, "b": b, "attack": attack}
            for metric, _, _ in PAIRED_METRICS:
                for field, value in paired_difference(frame_a, frame_b, metric).items():
                    row[f"{metric}_{field}"] = value
            rows.append(row)
    columns = ["dataset", "a", "b", "attack"] + [f"{m}_{f}" for m, _, _ in PAIRED_METRICS for f in _CI_FIELDS]
    return pd.DataFrame(rows, columns=columns)


def _signed(value: float, digits: int) -> str:
    return "n/a" if _isnan(value) else f"{value:+.{digits}f}"


def _difference_text(row: Mapping[str, Any], metric: str, scale: float) -> str:
    digits = 2 if scale == 100.0 else 3
    mean, low, high = (row[f"{metric}_{f}"] * scale for f in ("mean", "ci_low", "ci_high"))
    text = _signed(mean, digits)
    if not (_isnan(low) or _isnan(high)):
        text += f" [{_signed(low, digits)}, {_signed(high, digits)}]"
    return text


def paired_markdown(frame: pd.DataFrame) -> str:
    """The paired comparison as a Markdown table with its reading note (the README's)."""
    if frame.empty:
        return "No pair of methods with per-example results on the same data set yet.\n"
    header = ["Data set", "Comparison (a − b)", "Paired images"] + [label + " [95% CI]" for _, label, _ in PAIRED_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in frame.iterrows():
        cells = [dataset_name(row["dataset"]), f"{method_name(row['a'])} − {method_name(row['b'])}",
                 str(int(row["topk_intersection_n"]))]
        cells += [_difference_text(row, metric, scale) for metric, _, scale in PAIRED_METRICS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    seeds = frame.attrs.get("seeds", 1)  # attrrob.report.seeds.paired: per-seed paired means, then over seeds
    if seeds > 1:
        counts = sorted(set(frame[f"{PAIRED_METRICS[0][0]}_n_seeds"]))
        fewer = (f" Seeds with paired images per row: {', '.join(map(str, counts))} of {seeds}; a seed with "
                 "none counts out." if counts != [seeds] else "")
        note = ("Paired per seed on the test images both models classified correctly and had attacked "
                f"(`{frame['attack'].iloc[0]}` attack): each seed's mean per-image difference a − b, then "
                f"their mean over {seeds} seeds with its 95% t interval over seeds (paired images: summed over "
                "seeds). An interval that excludes 0 is a difference these seeds resolve; one that straddles "
                f"0 is not.{fewer}")
    else:
        note = ("Paired on the test images both models classified correctly and had attacked "
                f"(`{frame['attack'].iloc[0]}` attack): mean of the per-image difference a − b with its 95% "
                "t interval. An interval that excludes 0 is a difference these images resolve; one that "
                "straddles 0 is not.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def delta_vs_reference(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str],
                       attack: str = "topk", reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Paired differences of every other method against `reference` (paired_comparison's columns)."""
    return paired_comparison(results_dir, datasets, [(m, reference) for m in methods if m != reference], attack)


def delta_html(frame: pd.DataFrame, methods: Sequence[str], datasets: Sequence[str],
               reference: str = REFERENCE_METHOD) -> str:
    """The "Δ vs reference" view: methods as rows, per data set ΔIN and Δτ with 95% CIs; bold where
    the interval excludes 0."""
    if frame.empty:
        return (f"<p><em>No paired comparison yet: it needs per-example files of "
                f"{html.escape(method_name(reference))} and another method on the same data set.</em></p>")
    datasets = [d for d in datasets if d in set(frame["dataset"])]
    rows_methods = [m for m in methods if m in set(frame["a"])]
    by_key = {(r["dataset"], r["a"]): r for _, r in frame.iterrows()}
    head1 = "<th rowspan='2'>Method</th>" + "".join(
        f"<th colspan='{len(PAIRED_METRICS) + 1}' class='group'>{html.escape(dataset_name(d))}</th>" for d in datasets)
    head2 = "".join("".join(f"<th>{html.escape(label)}</th>" for _, label, _ in PAIRED_METRICS) + "<th>n</th>"
                    for _ in datasets)
    body = []
    for method in rows_methods:
        cells = [f"<th class='method'>{html.escape(method_name(method))}</th>"]
        for dataset in datasets:
            row = by_key.get((dataset, method))
            if row is None:
                cells += ["<td class='missing'>missing</td>"] * (len(PAIRED_METRICS) + 1)
                continue
            for metric, _, scale in PAIRED_METRICS:
                digits = 2 if scale == 100.0 else 3
                mean, low, high = (row[f"{metric}_{f}"] * scale for f in ("mean", "ci_low", "ci_high"))
                resolved = not (_isnan(low) or _isnan(high)) and (low > 0 or high < 0)
                main = _signed(mean, digits)
                main = f"<b>{main}</b>" if resolved else main
                ci = "" if _isnan(low) else f"<div class='ci'>[{_signed(low, digits)}, {_signed(high, digits)}]</div>"
                title = "" if _isnan(low) else f" title='95% CI {low:+.4g} to {high:+.4g}'"
                cells.append(f"<td{title}>{main}{ci}</td>")
            cells.append(f"<td class='count'>{int(row['topk_intersection_n'])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = (f"<table class='attrrob-paper'><thead><tr>{head1}</tr><tr>{head2}</tr></thead>"
             f"<tbody>{''.join(body)}</tbody></table>")
    note = (f"Each cell: mean of the per-image difference (method − {method_name(reference)}) over the test "
            "images both models had attacked, 95% paired t interval below; <b>bold</b>: the interval "
            "excludes 0. ΔIN in percentage points.")
    return table + f"<p class='note'>{html.escape(note).replace('&lt;b&gt;', '<b>').replace('&lt;/b&gt;', '</b>')}</p>"
