"""What a study's committed runs show, in sentences whose every number is computed here from the
committed files (the README's prose would otherwise go stale, or cite numbers no file backs).

Each sentence appears once its runs are committed and says how many seeds it rests on; a difference
is said to be resolved only when its 95% t interval over training seeds excludes zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from attrrob.intervals import mean_ci
from attrrob.report import lens as report_lens
from attrrob.report import load, magnitudes, seeds as report_seeds
from attrrob.report import sweeps as report_sweeps
from attrrob.report.tables import AUTOATTACK_GAP

# The comparisons the reports pair image by image (collect-results' PAIRED), baseline second.
PAIRS = (("ig_sum_norm", "natural"), ("sarkar", "ig_sum_norm"), ("ig_norm", "ig_sum_norm"))
BASELINES = ("natural", "madry")


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}"


def _interval(stats: Mapping[str, float], scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """'m [lo, hi]' (scaled), or 'm' alone when there is no interval."""
    form = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = form.format(scale * stats["mean"])
    if not (math.isnan(stats.get("ci_low", math.nan)) or math.isnan(stats.get("ci_high", math.nan))):
        text += f" [{form.format(scale * stats['ci_low'])}, {form.format(scale * stats['ci_high'])}]"
    return text


def _seeds_text(n: int) -> str:
    return "1 seed, so no interval over seeds" if n == 1 else f"{n} seeds, t interval over seeds"


def _resolved(stats: Mapping[str, float], n: int) -> str:
    if n < 2:
        return "one seed so far: nothing is resolved across seeds yet"
    low, high = stats["ci_low"], stats["ci_high"]
    if math.isnan(low):
        return "no interval"
    if low > 0 or high < 0:
        return "the interval over seeds excludes 0: the seeds resolve a difference"
    return "the interval over seeds includes 0: the seeds do not resolve a difference"


def _paired_text(paired: Mapping[str, Any] | None) -> str:
    """', ΔIN vs IG-SUM-NORM +0.08 [-0.15, +0.31] points (535 paired images, ...)' or ''."""
    if not paired or math.isnan(paired["mean"]):
        return ""
    return (f", ΔIN vs {load.method_name(paired['reference'])} {_interval(paired, digits=2, signed=True)} points "
            f"({paired['images']} paired images; interval {paired['interval']})")


class Findings:
    """The sentences of one study: its committed results tree (seed~<s>/ folders), data sets,
    methods and attacks (as collect-results takes them), its seeds and its sweeps' summaries."""

    def __init__(self, results: Path, datasets: Sequence[str], methods: Sequence[str], attacks: Sequence[str], *,
                 seeds: Sequence[int], sweeps: Sequence[Mapping] = ()):
        self.results, self.seeds = results, list(seeds)
        self.datasets, self.methods, self.attacks = list(datasets), list(methods), list(attacks)
        self.sweeps = list(sweeps)
        self.searched = [a for a in self.attacks if a != report_lens.CONTROL]
        self._tables: dict[str, tuple[pd.DataFrame, dict]] = {}

    # ---------------------------------------------------------------- helpers over seeds
    def _table(self, attack: str) -> tuple[pd.DataFrame, dict]:
        """The table over seeds of one attack, read once (several sentences use it)."""
        if attack not in self._tables:
            self._tables[attack] = report_seeds.table(self.results, self.seeds, self.datasets, self.methods, attack)
        return self._tables[attack]

    def _row(self, frame: pd.DataFrame, dataset: str, method: str) -> int | None:
        found = frame.index[(frame["dataset"] == dataset) & (frame["method"] == method)]
        return int(found[0]) if len(found) else None

    # ---------------------------------------------------------------- the sentences
    def baselines(self, dataset: str) -> str | None:
        if not self.searched:
            return None
        frame, per_seed = self._table(self.searched[0])
        parts = []
        for method in BASELINES:
            index = self._row(frame, dataset, method)
            if index is None:
                continue
            na = report_seeds.over_seeds(per_seed, index, "NA")
            aa = report_seeds.over_seeds(per_seed, index, "AA")
            if n := na["n_seeds"]:
                parts.append(f"{load.method_name(method)}: AA {_interval(aa)}%, NA {_interval(na)}% "
                             f"({_seeds_text(n)})")
        return ("**The baselines.** " + "; ".join(parts) + ".") if parts else None

    def autoattack(self, dataset: str) -> str | None:
        if not self.searched:
            return None
        frame, _ = self._table(self.searched[0])
        gaps = {row["method"]: row["AA_mean"] - row["AA_auto_mean"] for _, row in frame.iterrows()
                if row["dataset"] == dataset and not math.isnan(row["AA_mean"] - row["AA_auto_mean"])}
        if not gaps:
            return None
        flagged = [load.method_name(m) for m, gap in gaps.items() if gap > AUTOATTACK_GAP]
        low, high = min(gaps.values()), max(gaps.values())
        text = (f"**AutoAttack.** Its AA is {_pct(low)} to {_pct(high)} points below PGD's across the "
                f"{len(gaps)} methods run (means over their seeds); ")
        if flagged:
            return text + f"{', '.join(flagged)} lie more than {_pct(AUTOATTACK_GAP, 0)} points below: a sign of gradient masking."
        return text + f"none is flagged for gradient masking (the flag is at {_pct(AUTOATTACK_GAP, 0)} points)."

    def paired(self, dataset: str) -> list[str]:
        out = []
        for a, b in PAIRS:
            cells = []
            for attack in self.searched:
                frame = report_seeds.paired(self.results, self.seeds, [dataset], [(a, b)], attack)
                if frame.empty:
                    continue
                row = frame.iloc[0]
                stats = {f: row[f"topk_intersection_{f}"] for f in ("mean", "ci_low", "ci_high")}
                per = row.get("topk_intersection_per_seed")
                found = [v for v in per.values() if v] if isinstance(per, dict) else []
                n = len(found) if isinstance(per, dict) else 1
                listed = "; per seed " + ", ".join(f"{100 * v['mean']:+.2f}" for v in found) if n > 1 else ""
                if n == 1 and found:  # one seed of several so far: its interval over the paired images
                    stats = {f: found[0][f] for f in ("mean", "ci_low", "ci_high")}
                over = "" if n > 1 else ", interval over its paired images"
                cells.append(f"`{attack}` {_interval(stats, digits=2, signed=True)} points "
                             f"({_seeds_text(n)}{over}{listed}; {_resolved(stats, n)})")
            if cells:
                out.append(f"**{load.method_name(a)} − {load.method_name(b)}, ΔIN on the same images.** "
                           + "; ".join(cells) + ".")
        return out

    def walk(self, dataset: str) -> str | None:
        cells = []
        for attack in self.searched:
            frame, _ = self._table(attack)
            rows = frame[frame["dataset"] == dataset]
            attacked, zero = rows["n_attacked"].sum(min_count=1), rows["n_zero_direction"].sum(min_count=1)
            if not (attacked and attacked == attacked and zero == zero):
                continue
            k = rows["k_attack"].dropna()
            where = f"k = {int(k.iloc[0])}" if len(k) else attack
            cells.append(f"{_pct(zero / attacked)}% at {where} (`{attack}`)")
        if not cells:
            return None
        return ("**How often the walk had no direction.** Of all attacked images of every committed run, the "
                "share whose attack met an exactly zero direction (the top-k mask covered the saliency support) "
                "and took seeded random-sign steps instead: " + "; ".join(cells) + ".")

    def control(self, dataset: str) -> str | None:
        if report_lens.CONTROL not in self.attacks:
            return None
        cells = []
        for attack in self.searched:
            frame = report_seeds.lens(self.results, self.seeds, [dataset], self.methods, attack)
            per_method = []
            for _, row in frame.iterrows():
                stats = {f: row[f"topk_intersection_diff_{f}"] for f in ("mean", "ci_low", "ci_high")}
                if not math.isnan(stats["mean"]):
                    per_method.append((row["method"], stats, int(row.get("topk_intersection_diff_n_seeds", 1))))
            if per_method:
                listed = ", ".join(f"{load.method_name(m)} {_interval(s, digits=1, signed=True)} ({n} seed"
                                   f"{'' if n == 1 else 's'})" for m, s, n in per_method)
                cells.append(f"`{attack}`: {listed}")
        if not cells:
            return None
        return ("**The attack against same-ε random noise.** ΔIN (attack − noise, points, paired per image, "
                "then the mean over seeds): " + "; ".join(cells) + ".")

    def sweep(self, summary: Mapping[str, Any]) -> str | None:
        chosen = next((p for p in summary["points"] if p["chosen"]), None)
        shown = [p for p in summary["points"] if not math.isnan(p["test"]["IN"]["mean"])]
        if not shown:
            return None
        name = load.method_name(summary["method"])
        shares = any(p.get("loss_shares") for p in shown)
        text = (f"**{name}'s sweep** (test numbers under `{summary['attack']}`"
                + (", and each regulariser's weighted share of the loss at the end of training as in the last "
                   "item" if shares else "") + "; one entry per point): ")
        text += "; ".join(f"{p['label']}: IN {_interval(p['test']['IN'], digits=1)}%, τ "
                          f"{p['test']['τ']['mean']:.3f}, AA {_pct(p['test']['AA']['mean'])}%"
                          + _paired_text(p.get("paired"))
                          + "".join(f", {label} {100 * share['mean']:.3g}%"
                                    for label, share in p.get("loss_shares", {}).items()) for p in shown)
        if summary.get("pending"):
            text += (f". The choice on validation is made once every point is run ({len(shown)} of "
                     f"{len(summary['points'])} so far)")
        if chosen is not None and summary["selection"]:
            selection = summary["selection"]
            value = chosen.get("validation", {}).get("value")
            finite = isinstance(value, (int, float)) and math.isfinite(value)
            number = f"{value:.3f}" if selection["metric"] == "tau" else f"{_pct(value)}%"
            shown_value = f" (validation {selection['metric']} {number})" if finite else ""
            text += (f". Chosen on {selection['num_examples']} {selection['split']} images by {selection['rule']}: "
                     f"**{chosen['label']}**{shown_value}")
            edge = report_sweeps.edge_note(summary)
            if edge:
                text += f"; {edge[:-1]}"
        return text + "."

    def regularizers(self, dataset: str) -> str | None:
        rows = []
        for seed in self.seeds:
            tree = report_seeds.seed_dir(self.results, seed)
            logs = {m: load.load_train_log(tree, dataset, m) for m in self.methods}
            settings = {m: (load.load_train_metrics(tree, dataset, m) or {}).get("settings") for m in self.methods}
            frame = magnitudes.regularizer_magnitudes(logs, settings)
            rows += [{**row, "seed": seed} for row in frame.to_dict("records")]
        if not rows:
            return None
        frame = pd.DataFrame(rows)
        cells = []
        for (method, term), group in frame.groupby(["method", "term"], sort=False):
            # A share lies in [0, 1]: a t interval over a few seeds of a near-zero share would reach below 0.
            share = mean_ci(group["weighted_share_end"].astype(float).tolist(), bounds=(0.0, 1.0))
            weight = group["weight"].iloc[0]
            cells.append(f"{load.method_name(method)}'s {group['weight_name'].iloc[0]}·{term} "
                         f"({group['weight_name'].iloc[0]} = {weight:g}): {_interval(share, digits=2)}% "
                         f"({len(group)} seed{'' if len(group) == 1 else 's'})")
        ratios = frame.dropna(subset=["cacr_over_wacr_end"]) if "cacr_over_wacr_end" in frame else frame.iloc[:0]
        text = ("**The regularisers' share of the loss at the end of training** (|weight × term| / "
                "(CE + |weight × term|), last 10% of logged steps, mean over seeds): " + "; ".join(cells))
        if len(ratios):
            text += f". |R_CACR| / |R_WACR| at the end: {ratios['cacr_over_wacr_end'].astype(float).median():.2g} (median)"
        return text + "."

    def markdown(self) -> str:
        """The sentences as a Markdown list, per data set ("" when no run is committed)."""
        lines = []
        for dataset in self.datasets:
            items = [self.baselines(dataset), self.autoattack(dataset), *self.paired(dataset), self.walk(dataset),
                     self.control(dataset),
                     *[self.sweep(s) for s in self.sweeps if s["dataset"] == dataset],
                     self.regularizers(dataset)]
            items = [item for item in items if item]
            if items:
                lines += [f"What the committed runs on {load.dataset_name(dataset)} show (every number computed "
                          "from them by `attrrob study report`; intervals are 95%):", ""]
                lines += [f"- {item}" for item in items] + [""]
        return "\n".join(lines)

