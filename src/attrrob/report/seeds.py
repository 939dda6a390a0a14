"""Statistics across training seeds: the seed is the unit of replication of a training method.

The workflow keeps one results tree per seed (`results/seed~<s>/<dataset>/<method>/...`, each laid
out as a one-seed run's). Over several seeds a table cell is the mean over seeds of each seed's
mean, with a t interval over seeds (`attrrob.intervals.mean_ci`) as its main interval; each seed's
value and its interval over test images stand beside it. A paired comparison is made per seed
(paired image by image, as with one seed: the evaluation's images and attack randomness do not
depend on the training seed), then averaged over seeds with a t interval over seeds. With one
seed everything is the one-seed table, noted as such.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from ..intervals import mean_ci
from .figures import plot_forest
from .lens import COMPARED, SIDES, lens_comparison
from .load import AUTOATTACK, METRICS, PathLike, dataset_name, method_name, spec
from .paired import PAIRED_METRICS, paired_comparison
from .tables import _CI_FIELDS, _fmt, collect_table

COUNTS = ("n_total", "n_attacked", "n_skipped", "n_zero_direction")
ONE_SEED_NOTE = "1 seed: intervals over test images only (none over training seeds)."


def report_note(seeds: Sequence[str | int]) -> str:
    """The HTML reports' line on seeds: they show one seed's runs (the first), tables.md all."""
    if len(seeds) == 1:
        return ONE_SEED_NOTE
    return (f"These pages' tables show the models of seed {seeds[0]}, one of {len(seeds)} training seeds "
            f"({', '.join(map(str, seeds))}); each attack's second forest plot, `results/table.md` and "
            "`results/metrics.json` give the means over seeds with t intervals over seeds.")


FOREST_CAPTION = ("Mean over training seeds with its 95% t interval over seeds (filled; clipped to the metric's "
                  "range); each seed's own value as a small hollow dot below its method's line.")


def results_root(results_dir: PathLike) -> Path:
    """The folder holding the `seed~<s>` trees, given it or one of them (the reports get seed 0's)."""
    path = Path(results_dir)
    return path.parent if path.name.startswith("seed~") else path


def forest(results_dir: PathLike, seeds: Sequence[str | int], dataset: str, methods: Sequence[str],
           attack: str = "topk"):
    """The forest plot over seeds (attrrob.report.plot_forest with each seed's dots) for one data set."""
    across, per_seed = table(results_root(results_dir), [int(s) for s in seeds], [dataset], methods, attack)
    return plot_forest(across, per_seed=per_seed)


def seed_dir(results_dir: PathLike, seed: int) -> Path:
    """One seed's results tree (the workflow's `results/seed~<s>`)."""
    return Path(results_dir) / f"seed~{seed}"


def note(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return ONE_SEED_NOTE
    return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): each cell is the mean over seeds with a 95% t "
            "interval over seeds (the training seed is the unit of replication; a seed without a value, e.g. "
            "no attacked image, counts out, and one seed left gives no interval); image counts are summed "
            "over seeds (the zero-direction share pools the seeds' attacked images); an interval is clipped to "
            "the metric's range (0–100%, τ and ρ to ±1); each seed's value with its interval over test images is "
            "listed below the table.")


def over_seeds(per_seed: dict, index: int, key: str) -> dict:
    """One table row's metric `key` over the seeds that have it: the mean of their means, its t
    interval over seeds clipped to the metric's range, and how many seeds (`n_seeds`)."""
    metric = spec(key)
    out = mean_ci([float(frame.iloc[index][f"{key}_mean"]) for frame in per_seed.values()],
                  bounds=metric.bounds if metric else None)
    return {"mean": out["mean"], "ci_low": out["ci_low"], "ci_high": out["ci_high"], "n_seeds": out["n"]}


def table(results_dir: PathLike, seeds: Sequence[int], datasets: Iterable[str], methods: Iterable[str],
          attack: str = "topk") -> tuple[pd.DataFrame, dict]:
    """`collect_table` over seeds, and each seed's table by seed.

    One seed: that seed's table unchanged. Several: per metric K, K_mean is the mean over seeds
    of the seeds' means and K_ci_low/K_ci_high its t interval over seeds; K_n and the image counts
    are summed over seeds; the other columns come from the first seed's table.
    """
    datasets, methods = list(datasets), list(methods)
    per_seed = {seed: collect_table(seed_dir(results_dir, seed), datasets, methods, attack) for seed in seeds}
    first = per_seed[seeds[0]].copy()
    if len(seeds) == 1:
        return first, per_seed
    for metric in (*METRICS.values(), AUTOATTACK):
        column = f"{metric.key}_mean"
        stacked = pd.concat([frame[column] for frame in per_seed.values()], axis=1).to_numpy(float)
        stats = [mean_ci(row, bounds=metric.bounds) for row in stacked]
        for field in ("mean", "ci_low", "ci_high"):
            first[f"{metric.key}_{field}"] = [s[field] for s in stats]
    # Counts (images evaluated, attacked, ...) are summed over the seeds that have them: the table's
    # "attacked / evaluated" then counts every such seed's images (a seed not yet run adds nothing).
    for column in (*(f"{m.key}_n" for m in (*METRICS.values(), AUTOATTACK)), *COUNTS):
        stacked = pd.concat([frame[column] for frame in per_seed.values()], axis=1)
        first[column] = stacked.sum(axis=1, min_count=1)
    # The share of attacked images whose walk met a zero direction pools the seeds' images (as the
    # counts do); the tie share and IN with ties by index are means over the seeds that have them.
    first["zero_direction_fraction"] = first["n_zero_direction"] / first["n_attacked"].where(first["n_attacked"] > 0)
    for column in ("ties_share", "IN_index_mean"):
        first[column] = pd.concat([frame[column] for frame in per_seed.values()], axis=1).mean(axis=1)
    first.attrs["seeds"] = len(seeds)
    return first, per_seed


def per_seed_markdown(frame: pd.DataFrame, per_seed: dict, attack: str) -> str:
    """Each seed's value with its interval over test images, one line per data set × method."""
    if len(per_seed) == 1:
        return ""
    lines = [f"Per seed (`{attack}` attack; value [95% interval over test images]):", ""]
    for i, row in frame.iterrows():
        cells = []
        for metric in METRICS.values():
            values = []
            for seed, seed_frame in per_seed.items():
                one = seed_frame.iloc[i]
                mean, low, high = (one[f"{metric.key}_{f}"] for f in ("mean", "ci_low", "ci_high"))
                if math.isnan(mean):
                    values.append(f"seed {seed}: –")
                    continue
                interval = "" if math.isnan(low) else f" [{_fmt(low, metric.percent)}, {_fmt(high, metric.percent)}]"
                values.append(f"seed {seed}: {_fmt(mean, metric.percent)}{interval}")
            cells.append(f"{metric.key} " + "; ".join(values))
        lines.append(f"- {dataset_name(row['dataset'])}, {method_name(row['method'])}: " + " · ".join(cells))
    return "\n".join(lines) + "\n"


def metrics_entry(per_seed: dict, index: int, keys: Sequence[str]) -> dict:
    """metrics.json's across-seed record of one table row: per key, mean and t interval over seeds
    and each seed's mean with its interval over test images."""
    out: dict[str, Any] = {}
    for key in keys:
        seeds = {str(seed): {field: _json(frame.iloc[index][f"{key}_{field}"]) for field in _CI_FIELDS}
                 for seed, frame in per_seed.items()}
        out[key] = {**{k: _json(v) for k, v in over_seeds(per_seed, index, key).items()}, "per_seed": seeds}
    return out


def _json(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (int, str)) or value is None else float(value)


def paired(results_dir: PathLike, seeds: Sequence[int], datasets: Iterable[str],
           pairs: Sequence[tuple[str, str]], attack: str = "topk") -> pd.DataFrame:
    """`paired_comparison` per seed, then over seeds: per metric the mean over seeds of the per-seed
    paired mean difference with its t interval over seeds (`<metric>_{mean,ci_low,ci_high}`), the
    paired images summed over seeds (`<metric>_n`), and each seed's `{mean, ci_low, ci_high, n}`
    under `<metric>_per_seed`. One seed: that seed's comparison."""
    datasets = list(datasets)
    frames = {seed: paired_comparison(seed_dir(results_dir, seed), datasets, pairs, attack) for seed in seeds}
    first = frames[seeds[0]].copy()
    if len(seeds) == 1 or first.empty:
        return first
    keys = ["dataset", "a", "b"]
    for metric, _, _ in PAIRED_METRICS:
        means, per_seed = [], []
        for _, row in first.iterrows():
            found = {seed: frame[(frame[keys] == row[keys]).all(axis=1)] for seed, frame in frames.items()}
            values = {seed: ({f: float(rows.iloc[0][f"{metric}_{f}"]) for f in _CI_FIELDS} if len(rows) else None)
                      for seed, rows in found.items()}
            per_seed.append(values)
            means.append(mean_ci([v["mean"] for v in values.values() if v is not None]))
        for field in ("mean", "ci_low", "ci_high"):
            first[f"{metric}_{field}"] = [m[field] for m in means]
        first[f"{metric}_n_seeds"] = [m["n"] for m in means]
        first[f"{metric}_n"] = [sum(v["n"] for v in values.values() if v is not None) for values in per_seed]
        first[f"{metric}_per_seed"] = per_seed
    first.attrs["seeds"] = len(seeds)
    return first


def paired_per_seed_markdown(frame: pd.DataFrame) -> str:
    """Each seed's paired difference with its interval over the paired images."""
    column = f"{PAIRED_METRICS[0][0]}_per_seed"
    if frame.empty or column not in frame:
        return ""
    lines = ["Per seed (paired difference [95% interval over the paired images]):", ""]
    for _, row in frame.iterrows():
        cells = []
        for metric, label, scale in PAIRED_METRICS:
            values = []
            for seed, value in row[f"{metric}_per_seed"].items():
                if value is None or math.isnan(value["mean"]):
                    values.append(f"seed {seed}: –")
                    continue
                interval = ("" if math.isnan(value["ci_low"])
                            else f" [{scale * value['ci_low']:+.2f}, {scale * value['ci_high']:+.2f}]")
                values.append(f"seed {seed}: {scale * value['mean']:+.2f}{interval}")
            cells.append(f"{label} " + "; ".join(values))
        lines.append(f"- {dataset_name(row['dataset'])}, {method_name(row['a'])} − {method_name(row['b'])}: "
                     + " · ".join(cells))
    return "\n".join(lines) + "\n"


def _lens_bounds(side: str, scale: float) -> tuple[float, float]:
    """The range of a compared metric (IN-like fractions in [0, 1], τ in [−1, 1]) or of an attack − noise
    difference of it (twice as wide around 0)."""
    low = 0.0 if scale == 100.0 else -1.0
    return (low - 1.0, 1.0 - low) if side == "diff" else (low, 1.0)


def lens(results_dir: PathLike, seeds: Sequence[int], datasets: Iterable[str], methods: Iterable[str],
         attack: str = "topk", control: str = "noise") -> pd.DataFrame:
    """`lens_comparison` per seed, then over seeds: per compared field and side (attack, control,
    attack − control paired per seed), the mean over seeds of each seed's mean with its t interval
    over seeds (`<field>_<side>_{mean,ci_low,ci_high}`, clipped to the metric's range), images
    summed over seeds (`_n`), seeds with a value (`_n_seeds`) and, for the difference, each seed's
    `{mean, ci_low, ci_high, n}` under `<field>_diff_per_seed`. One seed: that seed's comparison."""
    datasets, methods = list(datasets), list(methods)
    frames = {seed: lens_comparison(seed_dir(results_dir, seed), datasets, methods, attack, control)
              for seed in seeds}
    first = frames[seeds[0]].copy()
    first.attrs["seeds"] = len(seeds)
    if len(seeds) == 1 or first.empty:
        return first
    # Rows are data set × method in the same order in every seed's frame (lens_comparison's loop).
    for found in ("attack_found", "control_found"):
        first[found] = pd.concat([frame[found] for frame in frames.values()], axis=1).any(axis=1)
    for column in ("window", "k"):  # evaluation settings: the first seed that recorded them
        first[column] = pd.concat([frame[column] for frame in frames.values()], axis=1).bfill(axis=1).iloc[:, 0]
    for field, _, scale in COMPARED:
        for side in SIDES:
            prefix = f"{field}_{side}"
            means = pd.concat([frame[f"{prefix}_mean"] for frame in frames.values()], axis=1).to_numpy(float)
            stats = [mean_ci(row, bounds=_lens_bounds(side, scale)) for row in means]
            for name in ("mean", "ci_low", "ci_high"):
                first[f"{prefix}_{name}"] = [s[name] for s in stats]
            first[f"{prefix}_n_seeds"] = [s["n"] for s in stats]
            first[f"{prefix}_n"] = pd.concat([frame[f"{prefix}_n"] for frame in frames.values()],
                                             axis=1).sum(axis=1, min_count=1)
        first[f"{field}_diff_per_seed"] = [
            {seed: {name: float(frame.iloc[i][f"{field}_diff_{name}"]) for name in _CI_FIELDS}
             for seed, frame in frames.items()} for i in range(len(first))]
    return first


def lens_per_seed_markdown(frame: pd.DataFrame) -> str:
    """Each seed's attack − control difference with its interval over that seed's paired images."""
    column = f"{COMPARED[0][0]}_diff_per_seed"
    if frame.empty or column not in frame:
        return ""
    shown = frame[frame["attack_found"] & frame["control_found"]]
    if shown.empty:
        return ""
    lines = [f"Per seed ({shown['attack'].iloc[0]} − {shown['control'].iloc[0]}, paired; difference "
             "[95% interval over the seed's paired images]):", ""]
    for _, row in shown.iterrows():
        cells = []
        for field, label, scale in COMPARED:
            digits = 2 if scale == 100.0 else 3
            values = []
            for seed, value in row[f"{field}_diff_per_seed"].items():
                if math.isnan(value["mean"]):
                    values.append(f"seed {seed}: –")
                    continue
                interval = ("" if math.isnan(value["ci_low"]) else
                            f" [{scale * value['ci_low']:+.{digits}f}, {scale * value['ci_high']:+.{digits}f}]")
                values.append(f"seed {seed}: {scale * value['mean']:+.{digits}f}{interval}")
            cells.append(f"{label} " + "; ".join(values))
        lines.append(f"- {dataset_name(row['dataset'])}, {method_name(row['method'])}: " + " · ".join(cells))
    return "\n".join(lines) + "\n"
