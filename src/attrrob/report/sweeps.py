"""Sweeps in the reports: every sweep point's test numbers beside the main runs, the chosen point
marked (with the validation value that chose it), and a sensitivity plot per swept setting.

A sweep is described by the workflow's `results/sweeps/<dataset>/<method>/sweep.json`
(attrrob.experiments) and, with `select:`, its `selection.json` (attrrob.selection). A point's
value of a metric is the mean over its sweep seeds of each seed's mean over test images; its
interval is a 95% t interval over seeds when it has more than one seed, else the interval over test
images of its one run (each entry says which).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import registry
from ..errors import DataError
from ..intervals import mean_ci
from ..result_files import SUMMARY
from .load import (dataset_name, load_run_per_example, load_run_train_log, load_run_train_metrics, method_name,
                   spec as metric_spec)
from .paired import REFERENCE_METHOD, paired_difference

# (label, evaluation, summary key, percent?)
SWEEP_METRICS = (("NA", "accuracy", "natural_accuracy", True), ("AA", "accuracy", "adversarial_accuracy", True),
                 ("IN", "attack", "topk_intersection", True), ("τ", "attack", "kendall_tau", False))
# Each metric's range, to which an interval is clipped as in the tables (τ is the tables' CO).
_BOUNDS = {label: metric_spec("CO" if label == "τ" else label).bounds for label, *_ in SWEEP_METRICS}


NO_RESULT = "no result"  # a point's Interval entry before any of its runs is evaluated


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None


def load(sweeps_root: str | Path, datasets: Iterable[str], methods: Iterable[str],
         base: str | Path = ".") -> list[dict]:
    """The sweeps of these data sets and methods: each sweep.json with its `selection` (or None).

    sweep.json names its runs' folders relative to the workflow's root (`results/seed~0/...`);
    they are read relative to `base`: the working directory in the workflow, the study folder
    for a committed study (attrrob.study.regenerate), which keeps the same layout below it."""
    found = []
    for dataset in datasets:
        for method in methods:
            folder = Path(sweeps_root) / dataset / method
            spec = _read_json(folder / "sweep.json")
            if spec is not None:
                spec["main_runs"] = _based(spec["main_runs"], base)
                for point in spec["points"]:
                    point["runs"] = _based(point["runs"], base)
                spec["selection"] = _read_json(folder / "selection.json")
                found.append(spec)
    return found


def _based(runs: Mapping[str, str], base: str | Path) -> dict[str, str]:
    return {seed: str(Path(base) / run) for seed, run in runs.items()}


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def run_values(runs: Mapping[str, str], attack: str) -> dict:
    """Per metric over the runs of one point (seed → run folder): mean, interval, which, per seed."""
    out = {}
    for label, kind, key, _ in SWEEP_METRICS:
        per_seed = {}
        for seed, run in runs.items():
            folder = Path(run) / ("accuracy" if kind == "accuracy" else f"attack_{attack}")
            summary = _read_json(folder / SUMMARY)
            if summary is None:
                continue
            entry = summary.get(key) if kind == "accuracy" else (summary.get("metrics") or {}).get(key)
            if entry:
                per_seed[seed] = {name: _finite(entry.get(name)) for name in ("mean", "ci_low", "ci_high")}
        low, high = _BOUNDS[label]
        if len(per_seed) > 1:
            over = mean_ci([value["mean"] for value in per_seed.values()], bounds=(low, high))
            interval = f"t interval over {over['n']} seeds"
            value = {"mean": over["mean"], "ci_low": over["ci_low"], "ci_high": over["ci_high"]}
        elif per_seed:
            value, interval = dict(next(iter(per_seed.values()))), "over test images (1 seed)"
            value["ci_low"], value["ci_high"] = max(value["ci_low"], low), min(value["ci_high"], high)
        else:
            value, interval = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}, NO_RESULT
        out[label] = {**value, "interval": interval, "per_seed": {s: v["mean"] for s, v in per_seed.items()}}
    return out


def run_loss_shares(runs: Mapping[str, str], dataset: str, method: str) -> dict:
    """Per regulariser term the method logs (label 'λ·R_WACR'), its weighted share of the loss at the
    end of training (attrrob.report.magnitudes): the mean over the point's seeds that have a training
    log, and how many (`n`); {} for a method without such terms or before any training is done."""
    from .magnitudes import regularizer_magnitudes

    shares: dict[str, list[float]] = {}
    for seed in sorted(runs, key=int):
        log = load_run_train_log(runs[seed], dataset, method)
        settings = (load_run_train_metrics(runs[seed], dataset, method) or {}).get("settings")
        for row in regularizer_magnitudes({method: log}, {method: settings}).to_dict("records"):
            if math.isfinite(row["weighted_share_end"]):
                shares.setdefault(f"{row['weight_name']}·{row['term']}", []).append(float(row["weighted_share_end"]))
    return {label: {"mean": sum(values) / len(values), "n": len(values)} for label, values in shares.items()}


def paired_with_reference(runs: Mapping[str, str], main_runs: Mapping[str, str], dataset: str, method: str,
                          attack: str) -> dict | None:
    """The point's ΔIN against the reference method (IG-SUM-NORM, what Sarkar et al. compare with)
    trained with the same seed, on the test images both attacked: with one seed its mean and paired
    interval over those images, with several the mean over seeds of each seed's paired mean and its
    t interval over seeds; None for the reference's own sweep. The reference's run of a seed lies
    beside the method's main run of that seed."""
    if method == REFERENCE_METHOD:
        return None
    per_seed = {}
    for seed in sorted(runs, key=int):
        if seed not in main_runs:
            continue
        reference = Path(main_runs[seed]).parent / REFERENCE_METHOD
        found = paired_difference(load_run_per_example(runs[seed], dataset, method, attack),
                                  load_run_per_example(reference, dataset, REFERENCE_METHOD, attack),
                                  "topk_intersection")
        if found["n"]:
            per_seed[seed] = found
    if len(per_seed) > 1:
        over = mean_ci([value["mean"] for value in per_seed.values()])
        value, interval = over, f"t interval over {over['n']} seeds"
    elif per_seed:
        value, interval = next(iter(per_seed.values())), "over the paired test images, 1 seed"
    else:
        value, interval = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}, NO_RESULT
    return {"reference": REFERENCE_METHOD, "mean": value["mean"], "ci_low": value["ci_low"],
            "ci_high": value["ci_high"], "interval": interval, "images": sum(v["n"] for v in per_seed.values()),
            "per_seed": {seed: v["mean"] for seed, v in per_seed.items()}}


def summarise(spec: Mapping, attack: str) -> dict:
    """A sweep's test numbers and loss shares: each point (chosen marked) and the method's main runs.

    `selection` is the choice made (None without one); `pending` the sweep's `select:` settings
    while its choice is still to be made (the study's points not all run yet), else None."""
    selection = spec.get("selection") or {}
    chosen = (selection.get("chosen") or {}).get("label")
    validation = {c["label"]: c for c in selection.get("candidates", [])}
    points = []
    for point in spec["points"]:
        entry = {"label": point["label"], "point": point["point"], "seeds": sorted(point["runs"], key=int),
                 "test": run_values(point["runs"], attack), "chosen": point["label"] == chosen,
                 "loss_shares": run_loss_shares(point["runs"], spec["dataset"], spec["method"]),
                 "paired": paired_with_reference(point["runs"], spec["main_runs"], spec["dataset"], spec["method"],
                                                 attack)}
        if point["label"] in validation:
            entry["validation"] = {"metric": selection["metric"], "value": validation[point["label"]]["value"],
                                   "ci_low": validation[point["label"]]["ci_low"],
                                   "ci_high": validation[point["label"]]["ci_high"],
                                   "interval": validation[point["label"]]["interval"]}
        points.append(entry)
    return {"dataset": spec["dataset"], "method": spec["method"], "attack": attack, "swept": spec["swept"],
            "points": points, "main": {"seeds": sorted(spec["main_runs"], key=int),
                                       "test": run_values(spec["main_runs"], attack),
                                       "loss_shares": run_loss_shares(spec["main_runs"], spec["dataset"],
                                                                      spec["method"]),
                                       "paired": paired_with_reference(spec["main_runs"], spec["main_runs"],
                                                                       spec["dataset"], spec["method"], attack)},
            "selection": None if not selection else {key: selection[key] for key in
                                                     ("metric", "attack", "rule", "split", "num_examples", "chosen")},
            "pending": spec.get("select") if not selection and spec.get("select") else None}


def _paired_cell(paired: Mapping | None) -> str:
    if not paired or not math.isfinite(paired["mean"]):
        return "—"
    text = f"{100 * paired['mean']:+.2f}"
    if math.isfinite(paired["ci_low"]):
        text += f" [{100 * paired['ci_low']:+.2f}, {100 * paired['ci_high']:+.2f}]"
    return text + f" ({paired['images']})"


def _share_cell(shares: Mapping, label: str) -> str:
    entry = shares.get(label)
    return "—" if not entry else f"{100 * entry['mean']:.3g}%"  # 3 significant digits: R_CACR's share can be 1e-5


def _seeds_cell(planned: Sequence[Any], test: Mapping) -> str:
    """The seeds a row's numbers come from, and those planned but without a result yet (a study in progress)."""
    done = {str(seed) for value in test.values() for seed in value.get("per_seed", {})}
    have = [str(seed) for seed in planned if str(seed) in done]
    missing = [str(seed) for seed in planned if str(seed) not in done]
    if not missing:
        return ", ".join(have)
    return f"{', '.join(have) or '—'} ({', '.join(missing)}: no result yet)"


def _cell(value: Mapping, percent: bool) -> str:
    if not math.isfinite(value["mean"]):
        return "—"
    scale = 100 if percent else 1
    text = f"{scale * value['mean']:.2f}" if percent else f"{value['mean']:.3f}"
    if math.isfinite(value["ci_low"]):
        low, high = scale * value["ci_low"], scale * value["ci_high"]
        text += f" [{low:.2f}, {high:.2f}]" if percent else f" [{low:.3f}, {high:.3f}]"
    return text


def markdown(summary: Mapping) -> str:
    """A sweep as a Markdown table: each point's test NA, AA, IN, τ (and the main runs' row)."""
    selection, edge = summary["selection"], edge_note(summary)
    lines = [f"### Sweep: {dataset_name(summary['dataset'])}, {method_name(summary['method'])}", ""]
    if selection:
        lines.append(f"Chosen on the {selection['split']} split ({selection['num_examples']} images), never "
                     f"test: {selection['rule']}. Chosen: **{selection['chosen']['label']}**; the main runs "
                     "train with it." + (f" Note: {edge}" if edge else ""))
    elif summary.get("pending"):
        pending = summary["pending"]
        lines.append(f"Selection pending: made on the validation split ({pending['num_examples']} images, "
                     f"{pending['metric']} under `{pending['attack']}`, rule {pending['rule']}) once every point "
                     "is run; a point not run yet shows —, and the main runs train with the chosen point.")
    else:
        lines.append("No selection: every point is reported; the main runs keep the configured settings.")
    shares = list(dict.fromkeys(label for entry in (*summary["points"], summary["main"])
                                for label in entry.get("loss_shares", {})))
    lines += ["", f"Test numbers, `{summary['attack']}` attack for IN and τ; 95% intervals over seeds with "
              "several seeds, else over test images (the Interval column says which)."
              + (" Loss share: the regulariser's weighted share of the loss at the end of training "
                 "(|weight × term| / (CE + |weight × term|), last 10% of logged steps, mean over the seeds)."
                 if shares else ""), ""]
    paired = [entry["paired"] for entry in (*summary["points"], summary["main"])
              if entry.get("paired") and math.isfinite(entry["paired"]["mean"])]
    reference = method_name(paired[0]["reference"]) if paired else ""
    if paired:
        lines[-2] += (f" ΔIN vs {reference}: the point minus {reference} trained with the same seed, in points, on "
                      "the test images both attacked (interval over those images with one seed, over seeds with "
                      "several; the image count in brackets after it).")
    validation = f" | validation {selection['metric']}" if selection else ""
    lines.append("| Point | Seeds | " + " | ".join(label for label, *_ in SWEEP_METRICS) + validation
                 + "".join(f" | {label} share" for label in shares) + (f" | ΔIN vs {reference}" if paired else "")
                 + " | Interval |")
    lines.append("|" + "---|" * (3 + len(SWEEP_METRICS) + (1 if selection else 0) + len(shares) + bool(paired)))

    def row(name, seeds, entry, extra):
        test = entry["test"]
        seeds = _seeds_cell(seeds, test)
        cells = [_cell(test[label], percent) for label, _, _, percent in SWEEP_METRICS]
        interval = test["NA"]["interval"]
        extra += "".join(f" | {_share_cell(entry.get('loss_shares', {}), label)}" for label in shares)
        if paired:
            extra += f" | {_paired_cell(entry.get('paired'))}"
        return f"| {name} | {seeds} | " + " | ".join(cells) + extra + f" | {interval} |"

    for point in summary["points"]:
        name = f"**{point['label']}** (chosen)" if point["chosen"] else point["label"]
        extra = ""
        if selection:
            v = point.get("validation")
            extra = " | " + (_cell({"mean": _finite(v["value"]), "ci_low": _finite(v["ci_low"]),
                                    "ci_high": _finite(v["ci_high"])}, v["metric"] != "tau") if v else "—")
        lines.append(row(name, point["seeds"], point, extra))
    lines.append(row("main runs", summary["main"]["seeds"], summary["main"], " | —" if selection else ""))
    return "\n".join(lines) + "\n"


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_sensitivity(summary: Mapping, key_index: int):
    """NA, AA, IN and τ on test against the swept setting `swept[key_index]`, one line per
    combination of the other swept settings; intervals as in `summarise`; the chosen point ringed."""
    from .figures import _figure

    section, key, values = summary["swept"][key_index]
    fig = _figure(12.5, 3.2)
    axes = fig.subplots(1, len(SWEEP_METRICS))
    numeric = _numeric(values)
    positions = {json.dumps(v): (v if numeric else i) for i, v in enumerate(values)}
    groups: dict[str, list] = {}
    for point in summary["points"]:
        rest = [f"{k}={v}" for i, (s, k, v) in enumerate(point["point"]) if i != key_index]
        groups.setdefault(", ".join(rest), []).append(point)
    log_x = numeric and min(values) > 0 and max(values) / min(values) >= 10
    for ax, (label, _, _, percent) in zip(axes, SWEEP_METRICS):
        scale = 100 if percent else 1
        for name, points in groups.items():
            xs = [positions[json.dumps(p["point"][key_index][2])] for p in points]
            ys = [scale * p["test"][label]["mean"] for p in points]
            lows = [scale * p["test"][label]["ci_low"] for p in points]
            highs = [scale * p["test"][label]["ci_high"] for p in points]
            err = [[max(0.0, y - lo) if math.isfinite(lo) else 0.0 for y, lo in zip(ys, lows)],
                   [max(0.0, hi - y) if math.isfinite(hi) else 0.0 for y, hi in zip(ys, highs)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name or None)
            for x, y, p in zip(xs, ys, points):
                if p["chosen"]:
                    ax.plot([x], [y], marker="o", markersize=14, markerfacecolor="none", color="black",
                            label="chosen (validation)")
        if log_x:
            ax.set_xscale("log")
        if numeric and min(values) < max(values):  # every swept value in view, run or not yet
            if log_x:
                ax.set_xlim(min(values) / 1.5, max(values) * 1.5)
            else:
                margin = 0.05 * (max(values) - min(values))
                ax.set_xlim(min(values) - margin, max(values) + margin)
        if numeric:  # ticks at the swept values, which a log axis's decades would miss
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlabel(swept_label(section, key))
        ax.set_ylabel(f"test {label}" + (" (%)" if percent else ""))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        unique = dict(zip(labels, handles))
        axes[0].legend(unique.values(), unique.keys(), fontsize="small")
    return fig


def edge_note(summary: Mapping) -> str:
    """A sentence when the chosen point sits at an end of a numeric swept range (at least 3 values): the
    sweep then does not bracket the best value, and the selection metric may go on rising past it. "" else."""
    chosen = next((p for p in summary["points"] if p["chosen"]), None)
    if chosen is None:
        return ""
    notes = []
    for index, (section, key, values) in enumerate(summary["swept"]):
        if len(set(map(json.dumps, values))) < 3 or not _numeric(values):
            continue
        value = chosen["point"][index][2]
        end = "largest" if value == max(values) else "smallest" if value == min(values) else None
        if end:
            notes.append(f"{swept_label(section, key)} = {value:g} is the {end} value swept: the sweep does not "
                         "bracket the best value, and the selection metric may go on rising past it")
    return "; ".join(notes) + "." if notes else ""


def interval_note(summary: Mapping) -> str:
    """The sensitivity plots' note: what the error bars are, and which point is ringed (if any yet)."""
    kinds = sorted({p["test"]["NA"]["interval"] for p in summary["points"]} - {NO_RESULT})
    text = "Error bars: 95% " + "; ".join(kinds) + "." if kinds else "No point has a test result yet."
    if any(p["chosen"] for p in summary["points"]):
        return text + " The ringed point is the one chosen on validation data."
    if summary.get("pending"):
        return text + " No point is chosen yet: the choice on validation waits for every point's run."
    return text


def swept_label(section: str, key: str) -> str:
    """A swept setting as a reader knows it: a loss weight by its symbol with the config key beside it
    ("λ (lam)"), another training key by its name, an evaluation's as section.key."""
    if section != "train":
        return f"{section}.{key}"
    symbol = registry.WEIGHT_SYMBOLS.get(key)
    return f"{symbol} ({key})" if symbol else key


def figure_title(summary: Mapping, key_index: int) -> str:
    section, key, _ = summary["swept"][key_index]
    return (f"{dataset_name(summary['dataset'])}, {method_name(summary['method'])}: test NA, AA, IN, τ "
            f"({summary['attack']} attack) against {swept_label(section, key)}")


def html(sweeps_root: str | Path, dataset: str, methods: Iterable[str], attack: str,
         base: str | Path = ".") -> list[tuple[str, Any, str]]:
    """For a data set's report: per sweep, (Markdown table, sensitivity figures, their note)."""
    out = []
    for spec in load(sweeps_root, [dataset], methods, base):
        summary = summarise(spec, attack)
        figures = [(plot_sensitivity(summary, i), figure_title(summary, i)) for i in range(len(summary["swept"]))]
        out.append((markdown(summary), figures, interval_note(summary)))
    return out
