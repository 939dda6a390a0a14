"""Tables of the reports and the README: values copied from the result files, never typed.

`collect_table` gathers the summaries into one frame; the rest formats it (the paper's layout,
Markdown for the README, the full listing) or adds what a summary cannot give: paired
differences between two models on the same attacked images, from their per-example files.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..intervals import mean_ci
from .load import (AUTOATTACK, METRICS, MISSING, NO_PUBLISHED, Metric, PathLike, dataset_name, has_published,
                   load_accuracy, load_attack, load_per_example, load_train_metrics, method_name,
                   published_value)
from .protocol import AA_PROTOCOL_LABEL, aa_protocol, protocol_differences, shows_aa_protocol

_CI_FIELDS = ("mean", "ci_low", "ci_high", "n")
AUTOATTACK_GAP = 0.05  # flag a model whose AutoAttack AA is this far (5 points) below its PGD AA
REFERENCE_METHOD = "ig_sum_norm"  # the previous best that Sarkar et al. compare with


# --------------------------------------------------------------------------- intervals

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


# --------------------------------------------------------------------------- the table

def collect_table(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str],
                  attack: str = "topk") -> pd.DataFrame:
    """One row per dataset × method (in the order given), reproduced values beside published ones.

    Columns: dataset, method, attack; for each metric key K of METRICS and for AA_auto (AutoAttack,
    NaN where not run): K_mean, K_ci_low, K_ci_high, K_n (NaN where the result file is missing) and,
    for the published metrics, K_published (NaN where the source has none) and K_published_text;
    source (citation of the row's published values, "" if none); accuracy_found, attack_found;
    zero_direction, zero_direction_fraction, n_total, n_attacked, n_skipped, n_zero_direction;
    ties_mode ("" for results without tie counts), ties_share (NaN there), IN_index_mean (mean IN under
    the index tie-break, NaN for results without it); base_attack (the attack a variant runs), k_attack,
    k_metric, iterations, ig_steps; eps_accuracy, eps_attack (the ε of each summary's settings, NaN
    where not recorded); protocol_differs (how the settings differ from the paper's protocol; published
    values are left out of such rows).
    """
    methods = list(methods)
    rows = []
    for dataset in datasets:
        for method in methods:
            accuracy = load_accuracy(results_dir, dataset, method)
            attacked = load_attack(results_dir, dataset, method, attack)
            row: dict[str, Any] = {"dataset": dataset, "method": method, "attack": attack,
                                   "accuracy_found": accuracy is not None, "attack_found": attacked is not None}
            sources = []
            differs = protocol_differences(dataset, accuracy, attacked)
            row["protocol_differs"] = "; ".join(differs["accuracy"] + differs["attack"])
            for metric in (*METRICS.values(), AUTOATTACK):
                found = (accuracy if metric.source == "accuracy"
                         else (attacked or {}).get("metrics"))
                entry = (found or {}).get(metric.field) or {}
                for field in _CI_FIELDS:
                    row[f"{metric.key}_{field}"] = _number(entry.get(field))
                if metric.published:
                    # A published number stands beside a reproduced one only under the same protocol.
                    published = None if differs[metric.source] else published_value(dataset, method, metric.key)
                    row[f"{metric.key}_published"] = published.value if published else math.nan
                    row[f"{metric.key}_published_text"] = published.text if published else ""
                    if published and published.source not in sources:
                        sources.append(published.source)
            row["source"] = " | ".join(sources)
            counts = (attacked or {}).get("counts") or {}
            row["zero_direction"] = (attacked or {}).get("zero_direction") or ""
            row["zero_direction_fraction"] = _number((attacked or {}).get("zero_direction_fraction"))
            for key in ("n_total", "n_attacked", "n_skipped", "n_zero_direction"):
                row[key] = _number(counts.get(key))
            ties = (attacked or {}).get("ties") or {}
            row["ties_mode"] = ties.get("mode") or ""
            row["ties_share"] = _number(ties.get("share_with_ties"))
            row["IN_index_mean"] = _number((ties.get("topk_intersection_index") or {}).get("mean"))
            attack_settings = (attacked or {}).get("settings") or {}
            row["base_attack"] = (attacked or {}).get("attack") or ""
            for key in ("k_attack", "k_metric", "iterations", "ig_steps"):
                row[key] = _number(attack_settings.get(key))
            row["aa_protocol"] = aa_protocol(accuracy)
            row["eps_accuracy"] = _eps((accuracy or {}).get("settings"))
            row["eps_attack"] = _eps((attacked or {}).get("settings"))
            rows.append(row)
    return pd.DataFrame(rows, columns=_table_columns())


def _number(value: Any) -> float:
    """JSON numbers to float; absent or null (e.g. a CI of one image) to NaN."""
    return math.nan if value is None else float(value)


def _eps(settings: Any) -> float:
    value = settings.get("eps") if isinstance(settings, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _table_columns() -> list[str]:
    columns = ["dataset", "method", "attack", "accuracy_found", "attack_found"]
    for metric in (*METRICS.values(), AUTOATTACK):
        columns += [f"{metric.key}_{field}" for field in _CI_FIELDS]
        if metric.published:
            columns += [f"{metric.key}_published", f"{metric.key}_published_text"]
    return columns + ["source", "zero_direction", "zero_direction_fraction",
                      "n_total", "n_attacked", "n_skipped", "n_zero_direction",
                      "ties_mode", "ties_share", "IN_index_mean", "base_attack", "k_attack", "k_metric",
                      "iterations", "ig_steps", "aa_protocol", "eps_accuracy", "eps_attack", "protocol_differs"]


def _fmt(value: float, percent: bool) -> str:
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _cell(row: Mapping[str, Any], metric: Metric) -> str:
    found = row["accuracy_found"] if metric.source == "accuracy" else row["attack_found"]
    mean = row[f"{metric.key}_mean"]
    if not found:
        return MISSING
    if _isnan(mean):
        if metric is AUTOATTACK and not row[f"{metric.key}_n"] > 0:
            return "not run"
        return "n/a (no images)"  # the file exists but averaged nothing (e.g. none classified correctly)
    low, high = row[f"{metric.key}_ci_low"], row[f"{metric.key}_ci_high"]
    text = _fmt(mean, metric.percent)
    if not (_isnan(low) or _isnan(high)):
        text += f" [{_fmt(low, metric.percent)}, {_fmt(high, metric.percent)}]"
    return text


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _has_autoattack(df: pd.DataFrame) -> bool:
    return bool(len(df)) and bool(df["AA_auto_mean"].notna().any())


def _has_ties(df: pd.DataFrame) -> bool:
    return bool(len(df)) and bool((df["ties_mode"] != "").any())


def display_table(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table as strings for people, and the sources its published cells cite (numbered [1], ...).

    Reproduced cells read "mean [95% CI]" (percentages for NA, AA, IN); "missing" where the result
    file does not exist; published cells carry the printed number and a source mark, or a dash.
    The AutoAttack column and the tie share appear only where some row has them; a published column
    only where some row has a published number; the AA protocol column (the PGD loss behind each AA)
    on Flower and wherever some AA was not PGD on CE.
    """
    sources: list[str] = []
    out = []
    autoattack, ties, aa_protocol = _has_autoattack(df), _has_ties(df), shows_aa_protocol(df)
    by_index = bool(len(df)) and bool(df["IN_index_mean"].notna().any())
    for _, row in df.iterrows():
        cells = {"Data set": dataset_name(row["dataset"]), "Method": method_name(row["method"])}
        for metric in METRICS.values():
            cells[metric.label] = _cell(row, metric)
            if metric.published:
                text = row[f"{metric.key}_published_text"]
                if text:
                    for source in row["source"].split(" | "):
                        if source not in sources:
                            sources.append(source)
                    marks = "".join(f"[{sources.index(s) + 1}]" for s in row["source"].split(" | "))
                    cells[f"{metric.key} published"] = f"{text} {marks}"
                else:
                    cells[f"{metric.key} published"] = NO_PUBLISHED
            if metric.key == "AA" and autoattack:
                cells[AUTOATTACK.label] = _cell(row, AUTOATTACK)
            if metric.key == "AA" and aa_protocol:
                cells[AA_PROTOCOL_LABEL] = row["aa_protocol"] or MISSING
        if row["attack_found"]:
            cells["Attacked / evaluated"] = f"{_int(row['n_attacked'])} / {_int(row['n_total'])}"
            fraction = row["zero_direction_fraction"]
            share = "n/a" if _isnan(fraction) else f"{100 * fraction:.1f}%"
            cells["Zero direction (setting: share)"] = f"{row['zero_direction']}: {share}"
            if ties:
                tie_share = "n/a" if _isnan(row["ties_share"]) else f"{100 * row['ties_share']:.1f}%"
                cells["Top-k ties (share)"] = f"{row['ties_mode']}: {tie_share}" if row["ties_mode"] else "not recorded"
            if by_index:
                cells[_IN_INDEX_LABEL] = "–" if _isnan(row["IN_index_mean"]) else f"{100 * row['IN_index_mean']:.2f}"
        else:
            cells["Attacked / evaluated"] = MISSING
            cells["Zero direction (setting: share)"] = MISSING
            if ties:
                cells["Top-k ties (share)"] = MISSING
            if by_index:
                cells[_IN_INDEX_LABEL] = MISSING
        out.append(cells)
    columns = ["Data set", "Method"]
    for metric in METRICS.values():
        columns.append(metric.label)
        if metric.published:
            columns.append(f"{metric.key} published")
        if metric.key == "AA" and autoattack:
            columns.append(AUTOATTACK.label)
        if metric.key == "AA" and aa_protocol:
            columns.append(AA_PROTOCOL_LABEL)
    columns += ["Attacked / evaluated", "Zero direction (setting: share)"] + (["Top-k ties (share)"] if ties else [])
    columns += [_IN_INDEX_LABEL] if by_index else []
    shown = pd.DataFrame(out, columns=columns)
    # A published column with no number in any row says nothing: leave it out.
    empty = [c for c in columns if c.endswith(" published") and len(shown) and (shown[c] == NO_PUBLISHED).all()]
    return shown.drop(columns=empty), sources


# IN recomputed with ties broken by pixel index (the kind of tie-break the reference's sort makes).
_IN_INDEX_LABEL = "IN (%), ties by index"


def _int(value: float) -> str:
    return "?" if _isnan(value) else str(int(value))


_TABLE_NOTE = ("Reproduced: mean [95% CI]; NA and AA over the evaluated test images, IN, CO and ρ over "
               "the attacked (correctly classified) ones; NA, AA, IN in %. "
               f"Published: {NO_PUBLISHED} where the source has no number; \"missing\": no result file yet.")


def protocol_notes(df: pd.DataFrame) -> list[str]:
    """One sentence per data set whose results were evaluated off the paper's protocol (their published
    numbers are left out)."""
    notes = []
    if not len(df) or "protocol_differs" not in df.columns:
        return notes
    for dataset, rows in df[df["protocol_differs"] != ""].groupby("dataset", sort=False):
        if not has_published(dataset):
            continue  # nothing published for this data set: nothing was left out
        differences = sorted(set("; ".join(rows["protocol_differs"]).split("; ")))
        notes.append(f"{dataset_name(dataset)}: evaluated off the paper's protocol ({', '.join(differences)}), so "
                     "no published number stands beside these results: they are not comparable.")
    return notes


def _sources_lines(sources: list[str]) -> list[str]:
    return [f"[{i}] {source}" for i, source in enumerate(sources, 1)]


def markdown_table(df: pd.DataFrame, sources: bool = True) -> str:
    """`collect_table`'s frame as a GitHub Markdown table (the README's results table).

    With `sources`, the numbered sources of the published cells follow the table.
    """
    shown, cited = display_table(df)
    lines = ["| " + " | ".join(map(_markdown_cell, shown.columns)) + " |",
             "|" + "|".join("---" for _ in shown.columns) + "|"]
    for _, row in shown.iterrows():
        lines.append("| " + " | ".join(map(_markdown_cell, row)) + " |")
    text = "\n".join(lines) + "\n"
    if sources:
        text += f"\n{_TABLE_NOTE}\n"
        flags = autoattack_flags(df)
        if flags:
            text += "\n" + "\n".join(f"- {flag}" for flag in flags) + "\n"
        for note in protocol_notes(df):
            text += f"\n{note}\n"
        if cited:
            text += "\n" + "\n".join(f"{line}  " for line in _sources_lines(cited)) + "\n"
    return text


def _markdown_cell(text: Any) -> str:
    return str(text).replace("|", "\\|")  # a bare pipe would split the cell


def html_table(df: pd.DataFrame, sources: bool = True) -> str:
    """The full listing as HTML (every field, one row per data set × method), sources below."""
    shown, cited = display_table(df)
    text = shown.to_html(index=False, escape=True, border=0, classes="attrrob-results", na_rep=MISSING)
    if sources:
        notes = [_TABLE_NOTE]
        notes += _sources_lines(cited)
        text += "".join(f"<p><small>{html.escape(note)}</small></p>" for note in notes)
    return text


def autoattack_flags(df: pd.DataFrame, gap: float = AUTOATTACK_GAP) -> list[str]:
    """One sentence per model whose AutoAttack AA lies more than `gap` below its PGD AA: a sign
    that PGD overstated its robustness (gradient masking)."""
    flags = []
    for _, row in df.iterrows():
        pgd, auto = row["AA_mean"], row["AA_auto_mean"]
        if _isnan(pgd) or _isnan(auto) or pgd - auto <= gap:
            continue
        flags.append(f"{dataset_name(row['dataset'])}, {method_name(row['method'])}: AutoAttack AA "
                     f"{100 * auto:.2f}% is {100 * (pgd - auto):.1f} points below PGD AA {100 * pgd:.2f}% "
                     f"(more than {100 * gap:.0f}): PGD overstates this model's robustness, a sign of "
                     "gradient masking.")
    return flags


# The paper's layout: methods as rows, per data set NA, AA, IN, CO (RAR's and Sarkar's tables).
_PAPER_METRICS = ("NA", "AA", "AA_auto", "IN", "CO")
_PAPER_HEADERS = {"NA": "NA (%)", "AA": "AA (%)", "AA_auto": "AA AutoAttack (%)", "IN": "IN (%)",
                  "CO": "CO (Kendall τ)"}


def _spec(key: str) -> Metric:
    return AUTOATTACK if key == "AA_auto" else METRICS[key]


def _short(value: float, metric: Metric, ci: bool = False) -> str:
    if metric.percent:
        return f"{100 * value:.1f}" if ci else f"{100 * value:.2f}"
    return f"{value:.3f}" if ci else f"{value:.4f}"


def paper_table_html(df: pd.DataFrame) -> str:
    """`collect_table`'s frame (one attack, any data sets) in the paper's layout, as HTML.

    Per cell: the mean (bold: the best in its column), the 95% CI as a smaller second line and on
    hover, and the published value as a muted third line where published.yaml has one. Columns
    without a value in any row are dropped and named in a note; so are data sets without results.
    """
    if df.empty:
        return "<p><em>No results yet.</em></p>"
    datasets = list(dict.fromkeys(df["dataset"]))
    methods = list(dict.fromkeys(df["method"]))
    by_key = {(r["dataset"], r["method"]): r for _, r in df.iterrows()}
    sources: list[str] = []
    groups, dropped, empty_sets, no_autoattack = [], [], [], []
    for dataset in datasets:
        part = df[df["dataset"] == dataset]
        if not (part["accuracy_found"].any() or part["attack_found"].any()):
            empty_sets.append(dataset_name(dataset))
            continue
        keys = []
        for key in _PAPER_METRICS:
            if part[f"{key}_mean"].notna().any():
                keys.append(key)
            elif key == "AA_auto":
                no_autoattack.append(dataset_name(dataset))
            else:
                dropped.append(f"{dataset_name(dataset)} {_PAPER_HEADERS[key]}")
        if keys:
            groups.append((dataset, keys))
    if not groups:
        return "<p><em>No results yet" + (f" for {html.escape(', '.join(empty_sets))}" if empty_sets else "") + ".</em></p>"
    best = {}
    for dataset, keys in groups:
        part = df[df["dataset"] == dataset]
        for key in keys:
            values = part[f"{key}_mean"].dropna()
            if len(values) > 1:  # "best" needs a comparison
                best[(dataset, key)] = float(values.max())  # every column here: higher is better
    # Papers split a wide grid into stacked blocks; so do we, to stay within a page's width.
    blocks, current = [], []
    for group in groups:
        if current and sum(len(k) for _, k in current) + len(group[1]) > PAPER_MAX_COLUMNS:
            blocks.append(current)
            current = []
        current.append(group)
    blocks.append(current)
    table = "".join(_paper_block(block, methods, by_key, best, sources) for block in blocks)
    notes = ["Mean over the evaluated test images (NA, AA) or the attacked ones (IN, CO); the 95% CI "
             "below it and on hover; bold: the highest mean in its column (not a test: see the paired "
             "differences for that). Muted third line: the published value, only where a source gives one."]
    if dropped:
        notes.append("Not shown, no value in any row: " + ", ".join(dropped) + ".")
    if no_autoattack:
        notes.append("AA under AutoAttack: not run for " + ", ".join(no_autoattack) + " (PGD AA only).")
    if empty_sets:
        notes.append("No results yet for " + ", ".join(empty_sets) + ".")
    notes += protocol_notes(df)
    notes += _sources_lines(sources)
    flags = autoattack_flags(df)
    flag_html = "".join(f"<p class='flag'>⚠ {html.escape(f)}</p>" for f in flags)
    return table + flag_html + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)


PAPER_MAX_COLUMNS = 12  # metric columns per table block: 12 fit a 1,400 px page beside the method names


def _paper_block(groups, methods, by_key, best, sources) -> str:
    head1 = "<th rowspan='2' class='corner'>Method</th>" + "".join(
        f"<th colspan='{len(keys)}' class='group'>{html.escape(dataset_name(d))}</th>" for d, keys in groups)
    head2 = "".join(f"<th>{html.escape(_PAPER_HEADERS[k])}</th>" for _, keys in groups for k in keys)
    body = []
    for method in methods:
        cells = [f"<th class='method'>{html.escape(method_name(method))}</th>"]
        for dataset, keys in groups:
            row = by_key[(dataset, method)]
            for key in keys:
                cells.append(_paper_cell(row, _spec(key), best.get((dataset, key)), sources))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class='attrrob-paper'><thead><tr>{head1}</tr><tr>{head2}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _paper_cell(row: Mapping[str, Any], metric: Metric, best: float | None, sources: list[str]) -> str:
    found = row["accuracy_found"] if metric.source == "accuracy" else row["attack_found"]
    mean = row[f"{metric.key}_mean"]
    published = ""
    if metric.published and row[f"{metric.key}_published_text"]:
        cited = row["source"].split(" | ")
        for source in cited:
            if source not in sources:
                sources.append(source)
        marks = "".join(f"[{sources.index(s) + 1}]" for s in cited)
        published = (f"<div class='pub' title='published: {html.escape(row['source'])}'>"
                     f"{html.escape(row[f'{metric.key}_published_text'])} {marks}</div>")
    if not found:
        return f"<td class='missing'>missing{published}</td>"
    if _isnan(mean):
        text = "not run" if metric is AUTOATTACK else "n/a"
        return f"<td class='missing'>{text}{published}</td>"
    main = _short(mean, metric)
    if best is not None and mean >= best:
        main = f"<b>{main}</b>"
    low, high, n = row[f"{metric.key}_ci_low"], row[f"{metric.key}_ci_high"], row[f"{metric.key}_n"]
    count = "" if _isnan(n) else f", n = {int(n)}"
    if _isnan(low) or _isnan(high):
        return f"<td title='no CI{count}'>{main}<div class='ci'>no CI</div>{published}</td>"
    title = f"95% CI {_fmt(low, metric.percent)} to {_fmt(high, metric.percent)}{count}"
    ci = f"<div class='ci'>{_short(low, metric, True)}–{_short(high, metric, True)}</div>"
    return f"<td title='{html.escape(title)}'>{main}{ci}{published}</td>"


def settings_markdown(df: pd.DataFrame) -> str:
    """The evaluation settings behind a table: zero-direction setting, share of zero directions,
    tie share of the top-k sets where recorded, images."""
    lines = []
    found = df[df["attack_found"].astype(bool)]
    if found.empty:
        attack = f"`{df['attack'].iloc[0]}` " if len(df) else ""
        return f"No {attack}attack results found yet."
    for _, row in found.iterrows():
        fraction = row["zero_direction_fraction"]
        share = "n/a (no image attacked)" if _isnan(fraction) else f"{100 * fraction:.1f}%"
        accuracy = f"accuracy on {_int(row['NA_n'])} test images; " if row["accuracy_found"] else ""
        ties = ""
        if row["ties_mode"]:
            tie_share = "n/a" if _isnan(row["ties_share"]) else f"{100 * row['ties_share']:.1f}%"
            ties = f"; top-k ties (`{row['ties_mode']}`) in {tie_share} of the original maps"
            if not _isnan(row["IN_index_mean"]) and not _isnan(row["IN_mean"]):
                ties += (f"; IN {100 * row['IN_mean']:.2f}% (`{row['ties_mode']}`) vs "
                         f"{100 * row['IN_index_mean']:.2f}% with ties broken by pixel index")
        lines.append(f"- {dataset_name(row['dataset'])}, {method_name(row['method'])}: {accuracy}attack on "
                     f"{_int(row['n_total'])} test images, {_int(row['n_attacked'])} attacked "
                     f"(correctly classified), {_int(row['n_skipped'])} skipped; zero-direction setting "
                     f"`{row['zero_direction']}`; {_int(row['n_zero_direction'])} attacked images "
                     f"({share}) met an exactly zero attack direction{ties}.")
    settings = sorted(set(found["zero_direction"]))
    head = (f"Attack `{found['attack'].iloc[0]}`{attack_description(found.iloc[0])}, zero-direction setting: "
            + ", ".join(f"`{s}`" for s in settings)
            + ". `random_sign` takes a seeded random-sign step where the attack direction is exactly "
              "zero (what RAR's code does in effect); `stay` leaves such an image in place, so it "
              "scores IN = τ = ρ = 1.")
    return head + "\n\n" + "\n".join(lines)


def attack_description(row: Mapping[str, Any]) -> str:
    """` (topk: k = 75, IN at k = 75, 20 iterations × 10 IG points)` from a table row ("" if unknown)."""
    base = row.get("base_attack") or ""
    if not base:
        return ""
    parts = []
    if base in ("topk", "targeted") and not _isnan(row.get("k_attack", math.nan)):
        parts.append(f"k = {_int(row['k_attack'])}")
    if not _isnan(row.get("k_metric", math.nan)):
        parts.append(f"IN at k = {_int(row['k_metric'])}")
    if base == "noise" and not _isnan(row.get("ig_steps", math.nan)):  # the control: no iterations
        parts.append(f"one random ±ε sign step, no search; maps of {_int(row['ig_steps'])} IG points")
    elif not _isnan(row.get("iterations", math.nan)) and not _isnan(row.get("ig_steps", math.nan)):
        parts.append(f"{_int(row['iterations'])} iterations × {_int(row['ig_steps'])} IG points")
    return f" ({base}: {', '.join(parts)})" if parts else f" ({base})"


def unchanged_images(per_example: pd.DataFrame | None, zero_direction_setting: str) -> dict:
    """Attacked images whose kept iterate is the original (step 0), by cause:
    `zero_direction` (the direction was exactly zero and the setting `stay` never moved them) and
    `no_eligible_iterate` (every iterate changed the label or none lowered τ below 1)."""
    counts = {"n_attacked": 0, "unchanged": 0, "zero_direction": 0, "no_eligible_iterate": 0}
    if per_example is None:
        return counts
    attacked = per_example[per_example["status"] == "attacked"]
    counts["n_attacked"] = int(len(attacked))
    kept_original = attacked[attacked["step"].fillna(-1).astype(int) == 0]
    counts["unchanged"] = int(len(kept_original))
    stayed = kept_original["zero_direction"].fillna(0).astype(int) == 1
    if zero_direction_setting != "stay":
        stayed &= False  # random_sign moved them: the walk ran, no iterate was kept
    counts["zero_direction"] = int(stayed.sum())
    counts["no_eligible_iterate"] = counts["unchanged"] - counts["zero_direction"]
    return counts


# --------------------------------------------------------------------------- compute

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


# --------------------------------------------------------------------------- layout helpers

def details_html(summary: str, body: str) -> str:
    """A collapsed section (<details>): listings a reader opens on demand."""
    return (f"<details class='attrrob-details'><summary>{html.escape(summary)}</summary>"
            f"<div>{body}</div></details>")


def markdown_html(text: str) -> str:
    """The small Markdown subset settings_markdown writes (paragraphs, "- " items, `code`) as HTML."""
    def inline(line: str) -> str:
        parts = html.escape(line).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    out = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{inline(line[2:])}</li>" for line in lines) + "</ul>")
        elif lines:
            out.append(f"<p>{inline(' '.join(lines))}</p>")
    return "".join(out)


# --------------------------------------------------------------------------- regulariser magnitudes

REGULARIZER_TERMS = (("cacr", "R_CACR"), ("wacr", "R_WACR"), ("ig_l1", "‖IG‖₁"))
_WEIGHT_OF_TERM = {"ig_norm": "lam", "ig_sum_norm": "beta"}  # the sarkar variants weigh both R by lam


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
        weight_key = _WEIGHT_OF_TERM.get(method, "lam")
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
                        "weight_name": {"lam": "λ", "beta": "β"}[weight_key], "weight": weight,
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
