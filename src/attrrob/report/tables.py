"""Tables of the reports and the README: values copied from the result files, never typed.

`collect_table` gathers the summaries into one frame; the rest formats it (the paper's layout,
Markdown for the README, the full listing). Paired differences between two models live in
`report.paired`, the compute table in `report.compute`, regulariser magnitudes in
`report.loss_terms`.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping

import pandas as pd

from .load import (AUTOATTACK, METRICS, spec, MISSING, NO_PUBLISHED, Metric, PathLike, dataset_name, has_published,
                   load_accuracy, load_attack, method_name,
                   published_value)
from .protocol import AA_PROTOCOL_LABEL, aa_protocol, protocol_differences, shows_aa_protocol

_CI_FIELDS = ("mean", "ci_low", "ci_high", "n")
AUTOATTACK_GAP = 0.05  # flag a model whose AutoAttack AA is this far (5 points) below its PGD AA


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
    _no_published_beside_other_protocols(rows)
    return pd.DataFrame(rows, columns=_table_columns())


def _no_published_beside_other_protocols(rows: list[dict]) -> None:
    """A method without results of its own takes the protocol of its data set's other rows: where
    those differ from the paper's (e.g. ε 0.1 against 0.3), a published value would stand on the
    plot beside results it cannot be compared with, so it is left out there too."""
    differs = {row["dataset"] for row in rows if row["protocol_differs"]}
    for row in rows:
        if row["dataset"] in differs and not (row["accuracy_found"] and row["attack_found"]):
            for metric in (*METRICS.values(), AUTOATTACK):
                if metric.published:
                    row[f"{metric.key}_published"], row[f"{metric.key}_published_text"] = math.nan, ""
            row["source"] = ""


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
                cells.append(_paper_cell(row, spec(key), best.get((dataset, key)), sources))
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


# --------------------------------------------------------------------------- layout helpers

def details_html(summary: str, body: str) -> str:
    """A collapsed section (<details>): listings a reader opens on demand."""
    return (f"<details class='attrrob-details'><summary>{html.escape(summary)}</summary>"
            f"<div>{body}</div></details>")


def inline_markdown(line: str) -> str:
    """One line of the reports' Markdown (`code` spans) as escaped HTML."""
    parts = html.escape(line).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def markdown_html(text: str) -> str:
    """The small Markdown subset the reports write (paragraphs, "- " items, `code`) as HTML: the one
    renderer of the reports (figure captions go through `inline_markdown`)."""
    inline = inline_markdown
    out = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{inline(line[2:])}</li>" for line in lines) + "</ul>")
        elif lines:
            out.append(f"<p>{inline(' '.join(lines))}</p>")
    return "".join(out)
