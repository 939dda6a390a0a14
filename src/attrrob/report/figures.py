"""Figures of the reports, drawn from result files only (through `load` and `tables`).

Every function returns a bare matplotlib Figure (or None when there is nothing to draw) so that
helpers neither leak figures nor display them twice; `show` embeds one as an <img> with alt text
and a caption, which nbconvert keeps and which needs no network.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import registry
from ..config import dataset_input
from .load import dataset_name, method_name, spec
from ..intervals import mean_ci
from .tables import inline_markdown, unchanged_images

DPI = 110          # pixels per inch of the embedded PNGs
PAGE_WIDTH = 12.5  # inches: a figure this wide fills a 1,400 px window at DPI (less the margins)


# Each method's colour is the registry's (attrrob.registry: Okabe & Ito's colour-blind-safe palette
# for the built-ins, the only colour definition of the reports); methods without one get greys.
_OTHER_COLOURS = ("#777777", "#AAAAAA", "#444444")


def method_palette(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, fixed by the method's name, so that a method keeps its colour across
    figures even when another method has no results there."""
    from matplotlib.colors import to_rgb

    own = {m: registry.method(m).colour for m in methods if m in registry.method_names()}
    unknown = [m for m in methods if own.get(m) is None]
    return {m: to_rgb(own[m] if own.get(m) is not None
                      else _OTHER_COLOURS[unknown.index(m) % len(_OTHER_COLOURS)]) for m in methods}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _styled(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import seaborn as sns

        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
            return func(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------- forest plots

_FOREST_KEYS = ("NA", "AA", "AA_auto", "IN", "CO")
_FOREST_LABELS = {"NA": "NA (%)", "AA": "AA, PGD (%)", "AA_auto": "AA, AutoAttack (%)", "IN": "IN (%)",
                  "CO": "CO (Kendall τ)", "rho": "Spearman ρ"}


@_styled
def plot_forest(table: pd.DataFrame, metrics: Sequence[str] = _FOREST_KEYS,
                per_seed: Mapping[Any, pd.DataFrame] | None = None):
    """Point and 95% CI per method (y axis, in the table's order), one panel per metric (columns)
    and data set (rows); published values as hollow markers. Metrics without a value in any row are
    left out. With `per_seed` (seed → that seed's table, attrrob.report.seeds.table), each seed's
    value as a small dot just below its method's line. None when there is nothing to draw."""
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in metrics if len(table) and table[f"{k}_mean"].notna().any()]
    datasets = [d for d in dict.fromkeys(table["dataset"])
                if len(keys) and table.loc[table["dataset"] == d, [f"{k}_mean" for k in keys]].notna().any().any()]
    if not keys or not datasets:
        return None
    methods = list(dict.fromkeys(table["method"]))
    palette = method_palette(methods)
    fig = _figure(PAGE_WIDTH, 0.6 + (0.32 * len(methods) + 0.75) * len(datasets))
    axes = fig.subplots(len(datasets), len(keys), squeeze=False, sharey=True)
    by_key = {(r["dataset"], r["method"]): r for _, r in table.iterrows()}
    any_published = False
    for i, dataset in enumerate(datasets):
        for j, key in enumerate(keys):
            ax, metric = axes[i][j], spec(key)
            scale = 100.0 if metric.percent else 1.0
            for y, method in enumerate(methods):
                row = by_key.get((dataset, method))
                mean = math.nan if row is None else row[f"{key}_mean"]
                colour = palette[method]
                if not math.isnan(mean):
                    low, high = row[f"{key}_ci_low"], row[f"{key}_ci_high"]
                    if not (math.isnan(low) or math.isnan(high)):
                        ax.plot([low * scale, high * scale], [y, y], color=colour, linewidth=2.2,
                                solid_capstyle="butt")
                    ax.plot(mean * scale, y, "o", color=colour, markersize=5.5, zorder=3)
                _seed_dots(ax, per_seed, dataset, method, key, y, scale, colour)
                published = row.get(f"{key}_published", math.nan) if (row is not None and metric.published) else math.nan
                if not math.isnan(published):
                    ax.plot(published * scale, y, "o", markerfacecolor="none", markeredgecolor=colour,
                            markersize=8, markeredgewidth=1.4, zorder=4)
                    any_published = True
            if not any(not math.isnan(by_key[(dataset, m)][f"{key}_mean"]) for m in methods if (dataset, m) in by_key):
                ax.text(0.5, 0.5, "not run" if key == "AA_auto" else "no results", transform=ax.transAxes,
                        ha="center", va="center", color="0.45", fontsize="small")
                ax.set_xticks([])
            ax.set_ylim(len(methods) - 0.5, -0.5)
            ax.set_yticks(range(len(methods)))
            ax.set_yticklabels([method_name(m) for m in methods])
            ax.grid(axis="y", visible=False)
            if i == 0:
                ax.set_title(_FOREST_LABELS[key], fontsize="medium")
            if j == 0 and len(datasets) > 1:
                ax.set_ylabel(dataset_name(dataset), fontsize="medium", fontweight="bold")
            if ax.lines:
                _pad_xlim(ax, 0.0 if metric.percent else -1.0, 100.0 if metric.percent else 1.0)
                # Few ticks, none on the panel's edges: labels of neighbouring panels never meet.
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4, prune="both"))
    if any_published:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", color="0.3", linestyle="-", linewidth=2.2, markersize=5.5),
                   Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="0.3", linestyle="none",
                          markersize=8, markeredgewidth=1.4)]
        fig.legend(handles, ["reproduced: mean and 95% CI", "published"], loc="outside lower center",
                   ncols=2, frameon=False, fontsize="small")
    return fig


def _seed_dots(ax, per_seed, dataset: str, method: str, key: str, y: float, scale: float, colour) -> None:
    """Each seed's mean of one method and metric, as small hollow dots 0.25 below the method's line."""
    for frame in (per_seed or {}).values():
        rows = frame[(frame["dataset"] == dataset) & (frame["method"] == method)]
        if len(rows) and not math.isnan(rows.iloc[0][f"{key}_mean"]):
            ax.plot(rows.iloc[0][f"{key}_mean"] * scale, y + 0.25, "o", markerfacecolor="none",
                    markeredgecolor=colour, markersize=3.5, markeredgewidth=1.0, zorder=3)


def forest_shows_published(table: pd.DataFrame, metrics: Sequence[str] = _FOREST_KEYS) -> bool:
    """Whether plot_forest draws any published (hollow) marker for this table."""
    return any(f"{k}_published" in table and table[f"{k}_published"].notna().any()
               for k in metrics if spec(k).published)


def forest_caption(table: pd.DataFrame, metrics: Sequence[str] = _FOREST_KEYS) -> str:
    """The forest plot's caption; it mentions published markers only where the plot has some."""
    text = "Mean and 95% CI per method (filled)"
    if forest_shows_published(table, metrics):
        return text + "; published values hollow, where a source gives one."
    return text + "; no published value applies to these results."


def _pad_xlim(ax, lo_bound: float, hi_bound: float) -> None:
    """A little room around the data, never past the metric's range."""
    lo, hi = ax.get_xlim()
    span = max(hi - lo, 1e-6)
    ax.set_xlim(max(lo_bound, lo - 0.08 * span), min(hi_bound, hi + 0.08 * span))


# --------------------------------------------------------------------------- attack strength

def trace_curve(trace: Mapping[str, np.ndarray], metric: str) -> pd.DataFrame:
    """Mean and 95% CI over the traced images of the kept `metric` after each iteration."""
    values = np.asarray(trace[metric], dtype=np.float64)
    rows = [{"iteration": int(t), **mean_ci(values[:, j])} for j, t in enumerate(trace["iterations"])]
    return pd.DataFrame(rows, columns=["iteration", "mean", "ci_low", "ci_high", "n"])


@_styled
def plot_attack_strength(traces: Mapping[str, Mapping[str, np.ndarray] | None], title: str = ""):
    """Mean IN (%) and Kendall τ of the kept iterate against attack iteration, one line per method,
    95% CI bands. None when no method has a trace."""
    traces = {m: t for m, t in traces.items() if t is not None and len(t["indices"])}
    if not traces:
        return None
    palette = method_palette(list(traces))
    fig = _figure(PAGE_WIDTH * 0.82, 3.3)
    axes = fig.subplots(1, 2)
    panels = (("topk_intersection", "top-k intersection IN (%)", 100.0), ("kendall_tau", "Kendall τ (CO)", 1.0))
    for ax, (metric, label, scale) in zip(axes, panels):
        for method, trace in traces.items():
            curve = trace_curve(trace, metric)
            colour = palette[method]
            ax.plot(curve["iteration"], curve["mean"] * scale, color=colour, linewidth=1.6,
                    label=f"{method_name(method)} (n={int(curve['n'].iloc[0])})")
            ax.fill_between(curve["iteration"], curve["ci_low"] * scale, curve["ci_high"] * scale,
                            color=colour, alpha=0.15, linewidth=0)
        ax.set_xlabel("attack iteration (0 = original image)")
        ax.set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def collect_eps_points(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """AA (from accuracy summaries) and IN (from attack summaries) against the ε their settings
    record, one row per method × metric × distinct ε, over the given collect_table frames."""
    rows = []
    for frame in tables.values():
        for _, row in frame.iterrows():
            for key, eps_field in (("AA", "eps_accuracy"), ("IN", "eps_attack")):
                if not math.isnan(row[f"{key}_mean"]) and not math.isnan(row[eps_field]):
                    rows.append({"method": row["method"], "metric": key, "eps": row[eps_field],
                                 **{f: row[f"{key}_{f}"] for f in ("mean", "ci_low", "ci_high", "n")}})
    frame = pd.DataFrame(rows, columns=["method", "metric", "eps", "mean", "ci_low", "ci_high", "n"])
    return frame.drop_duplicates(subset=["method", "metric", "eps"])


@_styled
def plot_eps_curves(points: pd.DataFrame):
    """IN and AA against ε, one line per method; only metrics measured at two or more ε.
    None when every metric has a single ε (the usual configuration)."""
    metrics = [k for k in ("AA", "IN") if points[points["metric"] == k]["eps"].nunique() > 1]
    if not metrics:
        return None
    methods = list(dict.fromkeys(points["method"]))
    palette = method_palette(methods)
    fig = _figure(PAGE_WIDTH * 0.82, 3.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, key in zip(axes, metrics):
        for method in methods:
            part = points[(points["metric"] == key) & (points["method"] == method)].sort_values("eps")
            if part.empty:
                continue
            ax.errorbar(part["eps"], part["mean"] * 100, yerr=[(part["mean"] - part["ci_low"]) * 100,
                                                               (part["ci_high"] - part["mean"]) * 100],
                        color=palette[method], marker="o", markersize=4, capsize=2, label=method_name(method))
        ax.set_xlabel("ε (L∞)")
        ax.set_ylabel(_FOREST_LABELS[key])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize="small", frameon=False)
    return fig


# --------------------------------------------------------------------------- distributions

_DISTRIBUTION_RANGES = {"topk_intersection": (0.0, 100.0), "kendall_tau": (-1.0, 1.0), "spearman_rho": (-1.0, 1.0)}
_PERCENT_COLUMNS = {"topk_intersection"}  # shown in %, as in the tables
_COLUMN_LABELS = {"topk_intersection": "IN, top-k intersection (%)", "kendall_tau": "Kendall τ",
                  "spearman_rho": "Spearman ρ", "mass_center_shift": "mass-centre shift (pixels)",
                  "linf": "L∞ perturbation"}


@_styled
def plot_metric_distribution(per_example: pd.DataFrame, column: str = "kendall_tau"):
    """Violins of a per-example metric (default Kendall τ) over the attacked images, one per method,
    one panel per data set; quartiles drawn inside, image counts under the method names.
    None when there are no rows."""
    import seaborn as sns

    data = per_example.dropna(subset=[column])
    if data.empty:
        return None
    if column in _PERCENT_COLUMNS:
        data = data.assign(**{column: 100.0 * data[column]})
    datasets = list(dict.fromkeys(data["dataset"]))
    methods = list(dict.fromkeys(data["method"]))
    palette = method_palette(methods)
    fig = _figure(min(PAGE_WIDTH, max(5.0, 1.45 * len(methods) + 1.2)), 2.7 * len(datasets))
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for ax, dataset in zip(axes, datasets):
        part = data[data["dataset"] == dataset]
        present = [m for m in methods if m in set(part["method"])]
        sns.violinplot(data=part, x="method", y=column, hue="method", order=present, hue_order=present,
                       palette=palette, cut=0, inner="quart", density_norm="width", linewidth=0.8,
                       legend=False, ax=ax)
        counts = part.groupby("method").size()
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels([f"{method_name(m)}\nn={counts[m]}" for m in present], fontsize="small")
        ax.set_xlabel("")
        ax.set_ylabel(_COLUMN_LABELS.get(column, column))
        if column in _DISTRIBUTION_RANGES:
            # The data's own range (a little padding), never past the metric's: a forced −1…1
            # squashes distributions that span a tenth of it.
            low, high = _DISTRIBUTION_RANGES[column]
            lo, hi = part[column].min(), part[column].max()
            pad = max(hi - lo, 0.02 * (high - low)) * 0.08
            ax.set_ylim(max(low, lo - pad), min(high, hi + pad))
        ax.set_title(dataset_name(dataset), fontsize="medium")
    return fig


# --------------------------------------------------------------------------- training curves

_TERM_LABELS = {"total": "total loss", "ce": "cross-entropy", "ig_l1": "‖IG‖₁", "cacr": "R_CACR",
                "wacr": "R_WACR", "weight_decay": "weight decay"}
# The logged terms are the unweighted values (objectives.compute_loss); the loss multiplies them.
_TERM_UNITS = {"total": "CE + weighted terms", "ig_l1": "batch sum, before β or λ", "cacr": "batch sum, before λ",
               "wacr": "batch sum, before λ", "weight_decay": "as added to the loss"}
_LOG_FIXED_COLUMNS = ("step", "lr", "total", "batch_accuracy", "examples_per_s")


def loss_terms(log: pd.DataFrame) -> list[str]:
    """The loss-term columns of a training log (everything but step, lr, total, accuracy, speed)."""
    return [c for c in log.columns if c not in _LOG_FIXED_COLUMNS]


def _nonzero(series: pd.Series) -> bool:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return bool(len(values)) and bool((values != 0).any())


def ce_reduction(method: str, settings: Mapping[str, Any] | None) -> str:
    """How the method's CE is reduced over a batch: natural and madry follow `loss_reduction`;
    the attribution objectives always sum (the spec)."""
    settings = settings or {}
    batch = settings.get("batch_size")
    per = f" of {batch}" if isinstance(batch, int) else ""
    reduction = settings.get("loss_reduction", "sum") if method in ("natural", "madry") else "sum"
    return f"mean over the batch{per}" if reduction == "mean" else f"summed over the batch{per}"


def _ce_axis(reductions: set[str]) -> str:
    if len(reductions) == 1:
        return "CE (nats, batch " + ("mean" if next(iter(reductions)).startswith("mean") else "sum") + ")"
    return "CE (nats; reduction per method)"


@_styled
def plot_training_curves(logs: Mapping[str, pd.DataFrame | None], title: str = "",
                         settings: Mapping[str, Mapping[str, Any] | None] | None = None):
    """Total loss, each loss term and batch accuracy against step, one line per method that has
    the term (a term that is zero throughout, such as weight decay at 0, is not drawn; a panel no
    method has is left out). `settings`: each method's train_metrics settings, for the CE
    reduction stated on the axis. None when no log has rows."""
    logs = {m: log for m, log in logs.items() if log is not None and len(log)}
    if not logs:
        return None
    settings = settings or {}
    panels = ["total"]
    for log in logs.values():
        panels += [t for t in loss_terms(log) if t not in panels and any(
            t in other.columns and _nonzero(other[t]) for other in logs.values())]
    panels.append("batch_accuracy")
    palette = method_palette(list(logs))
    reductions = {ce_reduction(m, settings.get(m)) for m in logs}
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = _figure(PAGE_WIDTH, 2.55 * rows + 0.5)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for method, log in logs.items():
            if panel in log.columns and (panel in ("total", "batch_accuracy") or _nonzero(log[panel])):
                scale = 100.0 if panel == "batch_accuracy" else 1.0
                ax.plot(log["step"], log[panel] * scale, color=palette[method], label=method_name(method),
                        linewidth=1.2)
        ax.set_title(_TERM_LABELS.get(panel, panel.replace("_", " ")), fontsize="medium")
        ax.set_xlabel("training step")
        if panel == "batch_accuracy":
            ax.set_title("batch accuracy", fontsize="medium")
            ax.set_ylabel("accuracy on the batch (%)")
        elif panel == "ce":
            ax.set_ylabel(_ce_axis(reductions))
        else:
            ax.set_ylabel(_TERM_UNITS.get(panel, "value"))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = {}, {}
    for ax in axes[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 7),
               fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def training_note(logs: Mapping[str, pd.DataFrame | None], settings: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The training figure's caption: how CE is reduced (grouped over methods), which terms each
    method has, and that logged terms are unweighted."""
    by_reduction: dict[str, list[str]] = {}
    terms = []
    for method, log in logs.items():
        if log is None or not len(log):
            continue
        by_reduction.setdefault(ce_reduction(method, settings.get(method)), []).append(method_name(method))
        extra = [_TERM_LABELS.get(t, t) for t in loss_terms(log) if t != "ce" and _nonzero(log[t])]
        if extra:
            terms.append(f"{method_name(method)} {' + '.join(extra)}")
    if not by_reduction:
        return ""
    if len(by_reduction) == 1:
        text = f"CE {next(iter(by_reduction))} for every method."
    else:
        text = " ".join(f"CE {r}: {', '.join(m)}." for r, m in by_reduction.items())
    if terms:
        text += (" Terms beside CE: " + "; ".join(terms) + " (plotted unweighted; the loss multiplies them by "
                 "β or λ). A panel a method lacks has no line for it.")
    return text


# --------------------------------------------------------------------------- saliency maps

def common_example_indices(examples: Mapping[str, Mapping[str, np.ndarray] | None],
                           max_examples: int) -> dict[str, list[int]]:
    """For each method, the rows of its examples.npz to show: the test images all methods stored
    (in the first method's order) where there are any, else each method's first images."""
    # An examples.npz of length 0 (`--save-examples 0`) has nothing to show.
    present = {m: e for m, e in examples.items() if e is not None and len(e["indices"])}
    if not present:
        return {}
    shared = None
    for arrays in present.values():
        indices = [int(i) for i in arrays["indices"]]
        shared = indices if shared is None else [i for i in shared if i in set(indices)]
    chosen = {}
    for method, arrays in present.items():
        position = {int(i): row for row, i in enumerate(arrays["indices"])}
        if shared:
            chosen[method] = [position[i] for i in shared[:max_examples]]
        else:
            chosen[method] = list(range(min(max_examples, len(arrays["indices"]))))
    return chosen


def _as_image(array: np.ndarray, max_value: float) -> tuple[np.ndarray, str | None]:
    image = np.clip(np.asarray(array, dtype=np.float64) / max_value, 0.0, 1.0)
    if image.shape[0] == 1:
        return image[0], "gray"
    return np.transpose(image, (1, 2, 0)), None


def _per_example_row(per_example: Mapping[str, pd.DataFrame | None] | None, method: str, index: int):
    frame = (per_example or {}).get(method)
    if frame is None:
        return None
    match = frame[frame["index"] == index]
    if match.empty or match["status"].iloc[0] != "attacked":
        return None
    return match.iloc[0]


SALIENCY_PERCENTILE = 99.0  # the shared colour scale tops out here, so one hot pixel cannot wash out the rest


@_styled
def plot_example_grid(examples: Mapping[str, Mapping[str, np.ndarray] | None], dataset: str,
                      per_example: Mapping[str, pd.DataFrame | None] | None = None, max_examples: int = 4):
    """Saliency maps of the original and the attacked image, methods as rows, test images as
    column pairs (the same images for every method where their examples.npz share them), the
    test images themselves on top. All maps share one colour scale (a colour bar); τ and IN of
    each attack (from per_example.csv) stand under its attacked map, "unchanged" where the kept
    iterate is the original. None when no method has examples."""
    chosen = common_example_indices(examples, max_examples)
    if not chosen:
        return None
    max_value = float(dataset_input(dataset)["max_value"])
    methods = list(chosen)
    columns = max(len(rows) for rows in chosen.values())
    first = examples[methods[0]]
    height, width = first["height"], first["width"]
    maps = [examples[m][key][r] for m in methods for r in chosen[m] for key in ("saliency_original", "saliency_attacked")]
    top = float(np.percentile(np.concatenate(maps), SALIENCY_PERCENTILE)) or 1.0
    cell = min(0.82, (PAGE_WIDTH - 3.2) / (2 * columns))
    fig = _figure(3.2 + 2 * columns * cell, 0.5 + (len(methods) + 1) * (cell + 0.22))
    grid = fig.add_gridspec(len(methods) + 1, 2 * columns)
    image = None
    # Top row: each test image once (the original input is the same for every method).
    for c in range(columns):
        ax = fig.add_subplot(grid[0, 2 * c:2 * c + 2])
        method = next((m for m in methods if c < len(chosen[m])), None)
        if method is None:
            ax.set_visible(False)
            continue
        row = chosen[method][c]
        picture, cmap = _as_image(examples[method]["original"][row], max_value)
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"test image #{int(examples[method]['indices'][row])}, label {int(examples[method]['labels'][row])}",
                     fontsize="small")
        if c == 0:
            ax.set_ylabel("input", rotation=0, ha="right", va="center", fontsize="small")
    for r, method in enumerate(methods, start=1):
        arrays = examples[method]
        for c, row in enumerate(chosen[method]):
            index = int(arrays["indices"][row])
            info = _per_example_row(per_example, method, index)
            for half, key in enumerate(("saliency_original", "saliency_attacked")):
                ax = fig.add_subplot(grid[r, 2 * c + half])
                image = ax.imshow(arrays[key][row].reshape(height, width), cmap="inferno", vmin=0.0, vmax=top,
                                  interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 1:
                    ax.set_title("original map" if half == 0 else "attacked map", fontsize="x-small")
                if half == 0 and c == 0:
                    ax.set_ylabel(method_name(method), rotation=0, ha="right", va="center", fontsize="small")
                if half == 1 and info is not None:
                    note = f"τ {info['kendall_tau']:.2f} · IN {100 * info['topk_intersection']:.0f}%"
                    if not pd.isna(info["step"]) and int(info["step"]) == 0:
                        note = "unchanged*"  # the caption says why
                    ax.set_xlabel(note, fontsize="x-small", labelpad=2)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes, location="right", shrink=0.45, aspect=25, extend="max", pad=0.02)
        bar.set_label(f"saliency (Σ|IG| over channels, mean 1 per map);\nscale capped at the "
                      f"{SALIENCY_PERCENTILE:.0f}th percentile", fontsize="x-small")
        bar.ax.tick_params(labelsize="x-small")
    return fig


def example_caption(per_example: Mapping[str, pd.DataFrame | None], zero_direction: Mapping[str, str],
                    attack: str) -> str:
    """The saliency figure's caption: what it shows, and how many attacked images per method the
    attack left unchanged (the kept iterate is the original), with the causes counted once."""
    shares, zero, no_iterate = [], 0, 0
    for method, frame in per_example.items():
        counts = unchanged_images(frame, zero_direction.get(method, ""))
        if counts["n_attacked"] == 0:
            continue
        shares.append(f"{method_name(method)} {counts['unchanged']} of {counts['n_attacked']}")
        zero += counts["zero_direction"]
        no_iterate += counts["no_eligible_iterate"]
    text = (f"Saliency maps (integrated gradients of the true-class logit) of each test image and of its "
            f"`{attack}`-attacked version, per method; one colour scale for all maps. Under each attacked "
            "map: Kendall τ and top-k intersection IN between the two maps.")
    if shares:
        text += (" *unchanged: the attack kept the original image (τ = 1, IN = 100%). Attacked images left "
                 "unchanged: " + "; ".join(shares) + ".")
        causes = []
        if no_iterate:
            causes.append(f"{no_iterate} had no eligible iterate (every iterate changed the label, or none "
                          "lowered τ below 1)")
        if zero:
            causes.append(f"{zero} met an exactly zero attack direction and, under `stay`, never moved")
        if causes:
            text += " Of these, " + "; ".join(causes) + "."
    return text


# --------------------------------------------------------------------------- embedding

def figure_html(figure, alt: str, caption: str = "") -> str:
    """A figure as an embedded PNG in a <figure>, with alt text and an optional caption."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    width_px = int(round(figure.get_figwidth() * 96))  # CSS pixels at the figure's size in inches
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    caption_html = f"<figcaption>{inline_markdown(caption)}</figcaption>" if caption else ""
    return (f"<figure class='attrrob-figure'><img src='data:image/png;base64,{data}' alt='{html.escape(alt, quote=True)}'"
            f" style='width:{width_px}px;max-width:100%;height:auto'>{caption_html}</figure>")


def show(figure, what: str, alt: str | None = None, caption: str = "") -> None:
    """Display a figure in a notebook (an <img> with alt text), or say that there is nothing to show yet."""
    from IPython.display import HTML, Markdown, display

    if figure is None:
        display(Markdown(f"*No results yet for {what}.*"))
    else:
        display(HTML(figure_html(figure, alt or what, caption)))
