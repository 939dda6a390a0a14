"""LENS metrics and the noise control in the reports: what an attack adds over noise of the same ε.

Per data set × method, an attack's IN, τ and LENS metrics (Kamath et al., AAAI 2024) beside those
of the `noise` control (one random ±ε sign step, `attrrob.attacks.noise`) and their paired
difference attack − noise on the same attacked images, from the result files (never recomputed).
A drop that noise also causes is not the attack's doing: the difference is what the search adds.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

import pandas as pd

from .load import PathLike, dataset_name, load_attack, load_per_example, method_name
from .paired import paired_difference

CONTROL = "noise"
# (summary/per-example field, label, display scale): higher is more robust for every one.
COMPARED = (("topk_intersection", "IN (%)", 100.0), ("kendall_tau", "τ", 1.0),
            ("lens_recall", "LENS-recall (%)", 100.0), ("lens_precision", "LENS-precision (%)", 100.0),
            ("topk_div_intersection", "top-k-div IN (%)", 100.0))
SIDES = ("attack", "control", "diff")
_CI_FIELDS = ("mean", "ci_low", "ci_high", "n")
_EMPTY = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def lens_comparison(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str], attack: str = "topk",
                    control: str = CONTROL) -> pd.DataFrame:
    """One row per data set × method: columns `<field>_<side>_<mean|ci_low|ci_high|n>` for each field
    of COMPARED and side attack, control (the summaries' means and CIs) and diff (paired attack −
    control on the images both attacked, from the per-example files); `attack_found`,
    `control_found`, `window` and `k` (the attack's LENS settings, NaN where not recorded)."""
    methods = list(methods)
    rows = []
    for dataset in datasets:
        for method in methods:
            summaries = {"attack": load_attack(results_dir, dataset, method, attack),
                         "control": load_attack(results_dir, dataset, method, control)}
            frames = {"attack": load_per_example(results_dir, dataset, method, attack),
                      "control": load_per_example(results_dir, dataset, method, control)}
            lens = (summaries["attack"] or {}).get("lens") or {}
            row: dict[str, Any] = {"dataset": dataset, "method": method, "attack": attack, "control": control,
                                   "attack_found": summaries["attack"] is not None,
                                   "control_found": summaries["control"] is not None,
                                   "window": _number(lens.get("window")), "k": _number(lens.get("k"))}
            for field, _, _ in COMPARED:
                for side, summary in summaries.items():
                    entry = ((summary or {}).get("metrics") or {}).get(field) or {}
                    for f in _CI_FIELDS:
                        row[f"{field}_{side}_{f}"] = _number(entry.get(f))
                both = all(frame is not None and field in frame.columns for frame in frames.values())
                diff = paired_difference(frames["attack"], frames["control"], field) if both else _EMPTY
                for f in _CI_FIELDS:
                    row[f"{field}_diff_{f}"] = _number(diff[f])
            rows.append(row)
    columns = ["dataset", "method", "attack", "control", "attack_found", "control_found", "window", "k"]
    columns += [f"{field}_{side}_{f}" for field, _, _ in COMPARED for side in SIDES for f in _CI_FIELDS]
    return pd.DataFrame(rows, columns=columns)


def _text(row, field: str, side: str, scale: float) -> tuple[str, str]:
    """(the mean, its 95% CI) as display text; diff values signed."""
    mean, low, high = (row[f"{field}_{side}_{f}"] * scale for f in ("mean", "ci_low", "ci_high"))
    if math.isnan(mean):
        return "–", ""
    digits = 2 if scale == 100.0 else 3
    sign = "+" if side == "diff" else ""
    ci = "" if math.isnan(low) or math.isnan(high) else f"[{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"
    return f"{mean:{sign}.{digits}f}", ci


def _line_names(attack: str, control: str) -> dict[str, str]:
    return {"attack": f"{attack} attack", "control": f"{control} (same ε)", "diff": f"{attack} − {control}"}


_LENS_ONLY = ("lens_recall", "lens_precision", "topk_div_intersection")


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with something this comparison adds: a control result, or LENS values (evaluators older
    than LENS wrote neither; their IN and τ are in the main table)."""
    lens = frame[[f"{f}_attack_mean" for f in _LENS_ONLY]].notna().any(axis=1)
    return frame[frame["control_found"] | (frame["attack_found"] & lens)]


def lens_note(frame: pd.DataFrame, seeds: int = 1) -> str:
    """What the comparison shows and what it does not; `seeds` > 1: a comparison over training seeds
    (attrrob.report.seeds.lens)."""
    windows = sorted({int(w) for w in frame["window"].dropna()})
    ks = sorted({int(k) for k in frame["k"].dropna()})
    setting = (f" at k = {', '.join(map(str, ks))} and a {'/'.join(f'{w}×{w}' for w in windows)} window"
               if ks and windows else "")
    if seeds > 1:
        lead = (f"Means over {seeds} training seeds of each seed's mean over its attacked (correctly classified) "
                f"test images{setting}, with a 95% t interval over seeds (a seed without results counts out; "
                "one seed left gives no interval). ")
        paired = ("attack − noise is each seed's paired per-image difference on the same images, then their "
                  "mean over seeds with its t interval over seeds")
    else:
        lead = f"Means [95% CI] over the attacked (correctly classified) test images{setting}. "
        paired = "attack − noise is the paired per-image difference on the same images with its 95% t interval"
    return (lead + "The noise control takes one uniformly random ±ε sign step per image, with no search; an image "
            "whose label it changes keeps the original (metrics 1), as an attack's ineligible iterate does. "
            f"{paired}: the drop the attack's search adds over noise of the same size (negative: the attack "
            "lowers the metric more). LENS-recall/precision count a pixel as kept when it moved within its window "
            "(Kamath et al., AAAI 2024); top-k-div IN compares sets of spread-out pixels. Not shown: other "
            "windows, k, or noise magnitudes below ε.")


def lens_markdown(frame: pd.DataFrame) -> str:
    """The comparison as a Markdown table (three lines per method: attack, noise, attack − noise)."""
    seeds = frame.attrs.get("seeds", 1)
    frame = _shown(frame)
    if frame.empty:
        return f"No LENS or `{CONTROL}` control results yet (add `{CONTROL}` to the config's attacks).\n"
    header = ["Data set", "Method", "Row"] + [label for _, label, _ in COMPARED]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in frame.iterrows():
        for side, name in _line_names(row["attack"], row["control"]).items():
            cells = [dataset_name(row["dataset"]), method_name(row["method"]), name]
            cells += [" ".join(t for t in _text(row, field, side, scale) if t) for field, _, scale in COMPARED]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n\n" + lens_note(frame, seeds) + "\n"


def lens_html(frame: pd.DataFrame) -> str:
    """The comparison as HTML in the reports' table style; differences whose interval excludes 0 in bold."""
    seeds = frame.attrs.get("seeds", 1)
    frame = _shown(frame)
    if frame.empty:
        return (f"<p><em>No LENS or <code>{CONTROL}</code> control results yet (add <code>{CONTROL}</code> to the "
                "config's attacks).</em></p>")
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in COMPARED)
    body = []
    for _, row in frame.iterrows():
        names = _line_names(row["attack"], row["control"])
        for i, side in enumerate(SIDES):
            cells = []
            for field, _, scale in COMPARED:
                mean, ci = _text(row, field, side, scale)
                low, high = row[f"{field}_{side}_ci_low"], row[f"{field}_{side}_ci_high"]
                strong = side == "diff" and not (math.isnan(low) or math.isnan(high)) and (low > 0 or high < 0)
                mean = f"<b>{html.escape(mean)}</b>" if strong else html.escape(mean)
                cells.append(f"<td>{mean}" + (f"<br><span class='ci'>{html.escape(ci)}</span>" if ci else "") + "</td>")
            lead = (f"<th class='method' rowspan='3'>{html.escape(dataset_name(row['dataset']))}<br>"
                    f"{html.escape(method_name(row['method']))}</th>") if i == 0 else ""
            body.append(f"<tr>{lead}<th class='method'>{html.escape(names[side])}</th>{''.join(cells)}</tr>")
    table = (f"<table class='attrrob-paper'><thead><tr><th class='corner'>Model</th><th class='corner'>Row</th>"
             f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return table + f"<p class='note'>{html.escape(lens_note(frame, seeds))} Bold: an interval that excludes 0.</p>"


def attack_means(summary: dict | None) -> dict[str, float | None]:
    """The LENS means of one attack summary (None where not recorded), for metrics.json."""
    found = (summary or {}).get("metrics") or {}
    out = {}
    for field in ("lens_recall", "lens_precision", "topk_div_intersection"):
        mean = (found.get(field) or {}).get("mean")
        out[field] = None if mean is None or (isinstance(mean, float) and math.isnan(mean)) else float(mean)
    return out


def plot_noise_forest(frame: pd.DataFrame, fields: Sequence[str] = tuple(f for f, _, _ in COMPARED)):
    """Forest plot: per method (y) and metric (panel), the attack (filled) and the noise control
    (hollow) with 95% CIs, one row of panels per data set. None when there is nothing to draw."""
    from .figures import PAGE_WIDTH, _figure, _styled, method_palette

    @_styled
    def draw():
        frame_ = _shown(frame)
        datasets = list(dict.fromkeys(frame_["dataset"]))
        methods = list(dict.fromkeys(frame_["method"]))
        if not datasets or not methods:
            return None
        palette = method_palette(methods)
        labels = {f: (label, scale) for f, label, scale in COMPARED}
        fig = _figure(PAGE_WIDTH, 0.9 + (0.4 * len(methods) + 0.75) * len(datasets))
        axes = fig.subplots(len(datasets), len(fields), squeeze=False, sharey=True)
        for i, dataset in enumerate(datasets):
            part = {r["method"]: r for _, r in frame_[frame_["dataset"] == dataset].iterrows()}
            for j, field in enumerate(fields):
                ax, (label, scale) = axes[i][j], labels[field]
                for y, method in enumerate(methods):
                    row = part.get(method)
                    for side, offset, face in (("attack", -0.15, palette[method]), ("control", 0.15, "none")):
                        mean = math.nan if row is None else row[f"{field}_{side}_mean"]
                        if math.isnan(mean):
                            continue
                        low, high = row[f"{field}_{side}_ci_low"], row[f"{field}_{side}_ci_high"]
                        if not (math.isnan(low) or math.isnan(high)):
                            ax.plot([low * scale, high * scale], [y + offset] * 2, color=palette[method], linewidth=2)
                        ax.plot(mean * scale, y + offset, "o", markerfacecolor=face, markeredgecolor=palette[method],
                                markersize=6, markeredgewidth=1.4, zorder=3)
                ax.set_ylim(len(methods) - 0.5, -0.5)
                ax.set_yticks(range(len(methods)))
                ax.set_yticklabels([method_name(m) for m in methods])
                ax.grid(axis="y", visible=False)
                if i == 0:
                    ax.set_title(label, fontsize="medium")
                if j == 0 and len(datasets) > 1:
                    ax.set_ylabel(dataset_name(dataset), fontsize="medium", fontweight="bold")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", color="0.3", linewidth=2, markersize=6),
                   Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="0.3", color="0.3",
                          linewidth=2, markersize=6, markeredgewidth=1.4)]
        attack = frame_["attack"].iloc[0]
        fig.legend(handles, [f"{attack} attack: mean and 95% CI", f"{CONTROL} control (same ε)"],
                   loc="outside lower center", ncols=2, frameon=False, fontsize="small")
        return fig

    return draw()
