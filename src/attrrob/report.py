"""Reading result files into the reports' tables and figures.

The notebooks under workflow/notebooks only call this module: it reads the files written by
`attrrob evaluate-accuracy`, `attrrob evaluate` and `attrrob train` (schemas in docs/DESIGN.md)
and never recomputes a metric, so a report shows exactly what the evaluators measured. Published
numbers come only from `published.yaml` (transcribed from the source it cites); every other
published cell is a dash. Missing result files are reported as missing, never as an error; a
file that exists but cannot be read raises `DataError` naming it.

Values keep the units of the result files (accuracies and IN as fractions, τ and ρ as is);
formatting turns fractions into percentages for display.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml

from .config import METHODS, dataset_input
from .errors import AttrrobError, ConfigError, DataError

try:
    import pandas as pd
except ImportError:  # pandas, matplotlib and seaborn come with the workflow extras
    raise AttrrobError("attrrob.report needs pandas, matplotlib and seaborn: "
                       "pip install 'attrrob[workflow]'") from None

PathLike = str | os.PathLike

MISSING = "missing"
NO_PUBLISHED = "–"  # an en dash: "no published number", never a guessed value


@dataclass(frozen=True)
class Metric:
    key: str            # short name used in table columns (NA, AA, IN, CO, rho)
    label: str          # column header
    source: str         # "accuracy" or "attack": which summary.json holds it
    field: str          # name of the field in that summary.json
    percent: bool       # stored as a fraction, shown as a percentage
    published: bool     # whether published.yaml may hold a value for it


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("NA", "NA (%)", "accuracy", "natural_accuracy", True, True),
    Metric("AA", "AA (%)", "accuracy", "adversarial_accuracy", True, True),
    Metric("IN", "IN (%)", "attack", "topk_intersection", True, True),
    Metric("CO", "CO (Kendall τ)", "attack", "kendall_tau", False, True),
    Metric("rho", "Spearman ρ", "attack", "spearman_rho", False, False),
)}
_METRIC_ALIASES = {**{m.field: m.key for m in METRICS.values()}, **{k: k for k in METRICS}}

DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "gtsrb": "GTSRB",
                 "flower": "Flower-17", "digits": "digits (8×8)"}
METHOD_NAMES = {"natural": "Natural", "madry": "Madry PGD-AT", "ig_norm": "IG-NORM",
                "ig_sum_norm": "IG-SUM-NORM", "sarkar": "Sarkar (CACR + WACR)",
                "sarkar_cacr": "Sarkar, CACR only", "sarkar_wacr": "Sarkar, WACR only"}

PER_EXAMPLE_COLUMNS = ("index", "label", "prediction", "status", "topk_intersection", "kendall_tau",
                       "spearman_rho", "mass_center_shift", "linf", "restart", "step", "zero_direction")
EXAMPLE_ARRAYS = ("indices", "labels", "original", "attacked", "saliency_original",
                  "saliency_attacked", "height", "width")
_LOG_FIXED_COLUMNS = ("step", "lr", "total", "batch_accuracy", "examples_per_s")
_CI_FIELDS = ("mean", "ci_low", "ci_high", "n")


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def parse_list(value: str | Sequence[str], name: str) -> list[str]:
    """A notebook parameter given as a JSON list of strings (papermill passes strings), or a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"notebook parameter '{name}': expected a JSON list of strings such as "
                              f"'[\"mnist\"]', got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"notebook parameter '{name}': expected a list of strings, got {value!r}")
    return list(value)


# --------------------------------------------------------------------------- published numbers

@dataclass(frozen=True)
class Published:
    value: float   # in the units of the result files (fractions for percentages)
    text: str      # exactly as printed in the source, without the % sign
    source: str    # citation and where to find it


@functools.lru_cache(maxsize=1)
def _published() -> dict:
    """published.yaml, checked: every value names a known source, metric and parseable number."""
    text = resources.files("attrrob").joinpath("published.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    sources = doc["sources"]
    table: dict[tuple[str, str, str], Published] = {}
    for dataset, rows in doc["values"].items():
        for method, row in rows.items():
            where = f"published.yaml: values.{dataset}.{method}"
            if row.get("source") not in sources:
                raise ConfigError(f"{where}: source {row.get('source')!r} is not listed under 'sources'")
            source = sources[row["source"]]
            citation = f"{' '.join(source['citation'].split())}; {' '.join(source['location'].split())}"
            for key, printed in row.items():
                if key == "source":
                    continue
                metric = METRICS.get(key)
                if metric is None or not metric.published:
                    raise ConfigError(f"{where}.{key}: unknown metric (known: NA, AA, IN, CO)")
                printed = str(printed).strip()
                if printed.endswith("%") != metric.percent:
                    raise ConfigError(f"{where}.{key}: {printed!r} must {'' if metric.percent else 'not '}"
                                      "end with % (the unit of the source)")
                number = printed.rstrip("%")
                try:
                    value = float(number) / (100.0 if metric.percent else 1.0)
                except ValueError:
                    raise ConfigError(f"{where}.{key}: {printed!r} is not a number") from None
                table[(dataset, method, key)] = Published(value, number, citation)
    claim = doc["sarkar_claim"]
    return {"values": table, "claim": {k: " ".join(str(v).split()) for k, v in claim.items()}}


def _metric(metric: str) -> Metric:
    try:
        return METRICS[_METRIC_ALIASES[metric]]
    except KeyError:
        raise AttrrobError(f"unknown metric '{metric}' (known: {', '.join(_METRIC_ALIASES)})") from None


def published_value(dataset: str, method: str, metric: str) -> Published | None:
    """The published number for dataset × method × metric, or None where the source has none.

    `metric` is a short key (NA, AA, IN, CO, rho) or a result-file field name (natural_accuracy, ...).
    """
    return _published()["values"].get((dataset, method, _metric(metric).key))


def sarkar_claim_markdown() -> str:
    """The Sarkar et al. abstract sentence, quoted: the only claim of that paper the reports show."""
    claim = _published()["claim"]
    return (f"> The proposed method “{claim['text']}” ({claim['context']}).\n>\n"
            f"> — {claim['citation']}. No per-cell result table of this paper could be read, "
            "so its rows show no published numbers.")


# --------------------------------------------------------------------------- reading result files

def _result_dir(results_dir: PathLike, dataset: str, method: str) -> Path:
    return Path(results_dir) / dataset / method


def _read_json(path: Path, dataset: str, method: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); delete it and re-run the step that writes it") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object; delete it and re-run the step that writes it")
    # A file copied into the wrong folder would silently put numbers in the wrong row.
    for key, expected in (("dataset", dataset), ("method", method)):
        if key in doc and doc[key] != expected:
            raise DataError(f"{path}: says {key} '{doc[key]}' but lies under {dataset}/{method}; "
                            "move or re-create it")
    return doc


def _require_ci(doc: dict, path: Path, *names: str, within: str | None = None) -> None:
    holder = doc if within is None else doc.get(within)
    prefix = "" if within is None else f"{within}."
    for name in names:
        entry = holder.get(name) if isinstance(holder, dict) else None
        if (not isinstance(entry, dict) or any(f not in entry for f in _CI_FIELDS)
                or not all(_is_number_or_null(entry[f]) for f in _CI_FIELDS)):
            raise DataError(f"{path}: field '{prefix}{name}' must hold numbers {', '.join(_CI_FIELDS)}; "
                            "re-run the step that writes it")


def _is_number_or_null(value: Any) -> bool:
    # null stands for an undefined CI (e.g. one image); booleans are not numbers here.
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def load_accuracy(results_dir: PathLike, dataset: str, method: str) -> dict | None:
    """`{results_dir}/{dataset}/{method}/accuracy/summary.json`, or None if it does not exist yet."""
    path = _result_dir(results_dir, dataset, method) / "accuracy" / "summary.json"
    doc = _read_json(path, dataset, method)
    if doc is not None:
        _require_ci(doc, path, "natural_accuracy", "adversarial_accuracy")
    return doc


def load_attack(results_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> dict | None:
    """`{results_dir}/{dataset}/{method}/attack_{attack}/summary.json`, or None if it does not exist yet."""
    path = _result_dir(results_dir, dataset, method) / f"attack_{attack}" / "summary.json"
    doc = _read_json(path, dataset, method)
    if doc is None:
        return None
    _require_ci(doc, path, "topk_intersection", "kendall_tau", "spearman_rho", within="metrics")
    for key in ("counts", "zero_direction", "zero_direction_fraction"):
        if key not in doc:
            raise DataError(f"{path}: field '{key}' is missing; re-run `attrrob evaluate`")
    counts = doc["counts"]
    count_keys = ("n_total", "n_attacked", "n_skipped", "n_zero_direction")
    if (not isinstance(counts, dict) or not all(_is_number_or_null(counts.get(k)) for k in count_keys)
            or not _is_number_or_null(doc["zero_direction_fraction"])):
        raise DataError(f"{path}: 'counts' ({', '.join(count_keys)}) and 'zero_direction_fraction' "
                        "must be numbers; re-run `attrrob evaluate`")
    return doc


def _read_csv(path: Path, required: Iterable[str], producer: str) -> pd.DataFrame | None:
    """A result CSV with its `required` columns, None when absent; unreadable → DataError naming it."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); re-run `{producer}`") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: columns {', '.join(missing)} are missing; re-run `{producer}`")
    return frame


def load_per_example(results_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> pd.DataFrame | None:
    """`attack_{attack}/per_example.csv` as a DataFrame (metric cells NaN for skipped images), or None."""
    path = _result_dir(results_dir, dataset, method) / f"attack_{attack}" / "per_example.csv"
    return _read_csv(path, PER_EXAMPLE_COLUMNS, "attrrob evaluate")


def collect_per_example(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str],
                        attack: str = "topk", attacked_only: bool = True) -> pd.DataFrame:
    """All per-example rows found, stacked, with `dataset` and `method` columns first."""
    frames = []
    methods = list(methods)
    for dataset in datasets:
        for method in methods:
            frame = load_per_example(results_dir, dataset, method, attack)
            if frame is None:
                continue
            if attacked_only:
                frame = frame[frame["status"] == "attacked"]
            frames.append(frame.assign(dataset=dataset, method=method))
    if not frames:
        return pd.DataFrame(columns=["dataset", "method", *PER_EXAMPLE_COLUMNS])
    stacked = pd.concat(frames, ignore_index=True)
    return stacked[["dataset", "method", *PER_EXAMPLE_COLUMNS]]


def load_train_log(results_dir: PathLike, dataset: str, method: str) -> pd.DataFrame | None:
    """`train_log.csv` (step, lr, total, one column per loss term, batch_accuracy, examples_per_s), or None."""
    return _read_csv(_result_dir(results_dir, dataset, method) / "train_log.csv",
                     ("step", "total", "batch_accuracy"), "attrrob train")


def loss_terms(log: pd.DataFrame) -> list[str]:
    """The loss-term columns of a training log (everything but step, lr, total, accuracy, speed)."""
    return [c for c in log.columns if c not in _LOG_FIXED_COLUMNS]


def load_train_metrics(results_dir: PathLike, dataset: str, method: str) -> dict | None:
    """`train_metrics.json`, or None if it does not exist yet."""
    return _read_json(_result_dir(results_dir, dataset, method) / "train_metrics.json", dataset, method)


def load_examples(results_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> dict | None:
    """`attack_{attack}/examples.npz` as a dict of arrays (height, width as ints), or None."""
    path = _result_dir(results_dir, dataset, method) / f"attack_{attack}" / "examples.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); re-run `attrrob evaluate`") from None
    missing = [name for name in EXAMPLE_ARRAYS if name not in arrays]
    if missing:
        raise DataError(f"{path}: arrays {', '.join(missing)} are missing; re-run `attrrob evaluate`")
    arrays["height"], arrays["width"] = int(arrays["height"]), int(arrays["width"])
    count = len(arrays["indices"])
    pixels = arrays["height"] * arrays["width"]
    shapes_ok = (arrays["original"].shape == arrays["attacked"].shape
                 and arrays["original"].ndim == 4 and arrays["original"].shape[0] == count
                 and arrays["original"].shape[2:] == (arrays["height"], arrays["width"])
                 and arrays["saliency_original"].shape == (count, pixels)
                 and arrays["saliency_attacked"].shape == (count, pixels)
                 and len(arrays["labels"]) == count)
    if not shapes_ok:
        raise DataError(f"{path}: array shapes disagree with each other; re-run `attrrob evaluate`")
    return arrays


# --------------------------------------------------------------------------- the table

def collect_table(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str],
                  attack: str = "topk") -> pd.DataFrame:
    """One row per dataset × method (in the order given), reproduced values beside published ones.

    Columns: dataset, method, attack; for each metric key K of METRICS: K_mean, K_ci_low, K_ci_high,
    K_n (NaN where the result file is missing) and, for the published metrics, K_published (NaN
    where the source has none) and K_published_text; source (citation of the row's published
    values, "" if none); accuracy_found, attack_found; zero_direction, zero_direction_fraction,
    n_total, n_attacked, n_skipped, n_zero_direction (from the attack's summary.json).
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
            for metric in METRICS.values():
                found = (accuracy if metric.source == "accuracy"
                         else (attacked or {}).get("metrics"))
                entry = (found or {}).get(metric.field) or {}
                for field in _CI_FIELDS:
                    row[f"{metric.key}_{field}"] = _number(entry.get(field))
                if metric.published:
                    published = published_value(dataset, method, metric.key)
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
            rows.append(row)
    return pd.DataFrame(rows, columns=_table_columns())


def _table_columns() -> list[str]:
    columns = ["dataset", "method", "attack", "accuracy_found", "attack_found"]
    for metric in METRICS.values():
        columns += [f"{metric.key}_{field}" for field in _CI_FIELDS]
        if metric.published:
            columns += [f"{metric.key}_published", f"{metric.key}_published_text"]
    return columns + ["source", "zero_direction", "zero_direction_fraction",
                      "n_total", "n_attacked", "n_skipped", "n_zero_direction"]


def _number(value: Any) -> float:
    """JSON numbers to float; absent or null (e.g. a CI of one image) to NaN."""
    return math.nan if value is None else float(value)


def _fmt(value: float, percent: bool) -> str:
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _cell(row: Mapping[str, Any], metric: Metric) -> str:
    found = row["accuracy_found"] if metric.source == "accuracy" else row["attack_found"]
    mean = row[f"{metric.key}_mean"]
    if not found:
        return MISSING
    if _isnan(mean):
        return "n/a (no images)"  # the file exists but averaged nothing (e.g. none classified correctly)
    low, high = row[f"{metric.key}_ci_low"], row[f"{metric.key}_ci_high"]
    text = _fmt(mean, metric.percent)
    if not (_isnan(low) or _isnan(high)):
        text += f" [{_fmt(low, metric.percent)}, {_fmt(high, metric.percent)}]"
    return text


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def display_table(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table as strings for people, and the sources its published cells cite (numbered [1], ...).

    Reproduced cells read "mean [95% CI]" (percentages for NA, AA, IN); "missing" where the result
    file does not exist; published cells carry the printed number and a source mark, or a dash.
    """
    sources: list[str] = []
    out = []
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
        if row["attack_found"]:
            cells["Attacked / evaluated"] = f"{_int(row['n_attacked'])} / {_int(row['n_total'])}"
            fraction = row["zero_direction_fraction"]
            share = "n/a" if _isnan(fraction) else f"{100 * fraction:.1f}%"
            cells["Zero direction (setting: share)"] = f"{row['zero_direction']}: {share}"
        else:
            cells["Attacked / evaluated"] = MISSING
            cells["Zero direction (setting: share)"] = MISSING
        out.append(cells)
    columns = ["Data set", "Method"]
    for metric in METRICS.values():
        columns.append(metric.label)
        if metric.published:
            columns.append(f"{metric.key} published")
    columns += ["Attacked / evaluated", "Zero direction (setting: share)"]
    return pd.DataFrame(out, columns=columns), sources


def _int(value: float) -> str:
    return "?" if _isnan(value) else str(int(value))


_TABLE_NOTE = ("Reproduced: mean [95% CI]; NA and AA over the evaluated test images, IN, CO and ρ over "
               "the attacked (correctly classified) ones; NA, AA, IN in %. "
               f"Published: {NO_PUBLISHED} where the source has no number; \"missing\": no result file yet.")


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
        if cited:
            text += "\n" + "\n".join(f"{line}  " for line in _sources_lines(cited)) + "\n"
    return text


def _markdown_cell(text: Any) -> str:
    return str(text).replace("|", "\\|")  # a bare pipe would split the cell


def html_table(df: pd.DataFrame, sources: bool = True) -> str:
    """The same table as HTML (for the notebooks), with the sources of its published cells below."""
    import html

    shown, cited = display_table(df)
    text = shown.to_html(index=False, escape=True, border=0, classes="attrrob-results", na_rep=MISSING)
    if sources:
        notes = [_TABLE_NOTE]
        notes += _sources_lines(cited)
        text += "".join(f"<p><small>{html.escape(note)}</small></p>" for note in notes)
    return text


def settings_markdown(df: pd.DataFrame) -> str:
    """The evaluation settings behind a table: zero-direction setting, share of zero directions, images."""
    lines = []
    found = df[df["attack_found"].astype(bool)]
    if found.empty:
        attack = f"`{df['attack'].iloc[0]}` " if len(df) else ""
        return f"No {attack}attack results found yet."
    for _, row in found.iterrows():
        fraction = row["zero_direction_fraction"]
        share = "n/a (no image attacked)" if _isnan(fraction) else f"{100 * fraction:.1f}%"
        accuracy = f"accuracy on {_int(row['NA_n'])} test images; " if row["accuracy_found"] else ""
        lines.append(f"- {dataset_name(row['dataset'])}, {method_name(row['method'])}: {accuracy}attack on "
                     f"{_int(row['n_total'])} test images, {_int(row['n_attacked'])} attacked "
                     f"(correctly classified), {_int(row['n_skipped'])} skipped; zero-direction setting "
                     f"`{row['zero_direction']}`; {_int(row['n_zero_direction'])} attacked images "
                     f"({share}) met an exactly zero attack direction.")
    settings = sorted(set(found["zero_direction"]))
    head = (f"Attack `{found['attack'].iloc[0]}`, zero-direction setting: "
            + ", ".join(f"`{s}`" for s in settings)
            + ". `random_sign` takes a seeded random-sign step where the attack direction is exactly "
              "zero (what RAR's code does in effect); `stay` leaves such an image in place, so it "
              "scores IN = τ = ρ = 1.")
    return head + "\n\n" + "\n".join(lines)


def collect_timings(results_dir: PathLike, datasets: Iterable[str], methods: Iterable[str],
                    attacks: Iterable[str] = ("topk",)) -> pd.DataFrame:
    """Measured cost per dataset × method, as the result files report it: training steps, wall time,
    examples/s and device; accuracy evaluation wall time; per attack, wall time and images/s.
    Rows without any result file are left out."""
    methods, attacks = list(methods), list(attacks)
    rows = []
    for dataset in datasets:
        for method in methods:
            train = load_train_metrics(results_dir, dataset, method) or {}
            accuracy = load_accuracy(results_dir, dataset, method) or {}
            found = {a: load_attack(results_dir, dataset, method, a) or {} for a in attacks}
            if not (train or accuracy or any(found.values())):
                continue
            row = {"Data set": dataset_name(dataset), "Method": method_name(method),
                   "Training steps": train.get("steps"), "Training wall time (h)": _hours(train.get("wall_time_s")),
                   "Training examples/s": train.get("examples_per_s"), "Training device": train.get("device"),
                   "Accuracy eval. wall time (h)": _hours(accuracy.get("wall_time_s"))}
            for attack, summary in found.items():
                row[f"{attack} attack wall time (h)"] = _hours(summary.get("wall_time_s"))
                row[f"{attack} attack images/s"] = summary.get("images_per_s")
            rows.append(row)
    return pd.DataFrame(rows)


def _hours(seconds: Any) -> float | None:
    return None if not isinstance(seconds, (int, float)) else seconds / 3600.0


# --------------------------------------------------------------------------- figures

def method_palette(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, fixed by the method's place in config.METHODS, so that a method keeps
    its colour across figures even when another method has no results there."""
    import seaborn as sns

    colours = sns.color_palette("colorblind", n_colors=10)
    unknown = [m for m in methods if m not in METHODS]
    return {m: colours[(METHODS.index(m) if m in METHODS else len(METHODS) + unknown.index(m)) % len(colours)]
            for m in methods}


def _figure(width: float, height: float):
    # A bare Figure (not pyplot) so that helpers neither leak figures nor display them twice.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _styled(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import seaborn as sns

        with sns.axes_style("whitegrid"):
            return func(*args, **kwargs)
    return wrapper


@_styled
def plot_metric_bars(table: pd.DataFrame, metric: str):
    """Bars of one metric per data set (x) and method (hue), error bars from the 95% CIs of the
    result files, published values as black crosses. None when no row has the metric."""
    import seaborn as sns

    spec = _metric(metric)
    scale = 100.0 if spec.percent else 1.0
    rows = table[~table[f"{spec.key}_mean"].isna()].copy()
    if rows.empty:
        return None
    methods = [m for m in dict.fromkeys(table["method"]) if m in set(rows["method"])]
    datasets = [d for d in dict.fromkeys(table["dataset"]) if d in set(rows["dataset"])]
    rows["value"] = rows[f"{spec.key}_mean"] * scale
    rows["Data set"] = rows["dataset"].map(dataset_name)
    rows["Method"] = rows["method"].map(method_name)
    palette = {method_name(m): c for m, c in method_palette(methods).items()}
    fig = _figure(1.2 + 0.55 * len(datasets) * len(methods), 3.4)
    ax = fig.add_subplot()
    sns.barplot(data=rows, x="Data set", y="value", hue="Method", ax=ax, errorbar=None,
                order=[dataset_name(d) for d in datasets], hue_order=[method_name(m) for m in methods],
                palette=palette)
    # Seaborn draws one bar container per hue level; find each bar's row by its hue level and the
    # nearest x tick, then draw the CI and the published value the result files give for that row.
    ticks = ax.get_xticks()
    by_key = {(r.dataset, r.method): r for r in rows.itertuples()}
    drew_published = False
    bar_containers = list(ax.containers)  # before errorbar() appends its own containers
    for method, container in zip(methods, bar_containers):
        for bar in container:
            if math.isnan(bar.get_height()):
                continue
            centre = bar.get_x() + bar.get_width() / 2
            dataset = datasets[int(np.argmin(np.abs(ticks - centre)))]
            row = by_key[(dataset, method)]
            low, high = getattr(row, f"{spec.key}_ci_low"), getattr(row, f"{spec.key}_ci_high")
            if not (math.isnan(low) or math.isnan(high)):
                value = row.value
                ax.errorbar(centre, value, yerr=[[value - low * scale], [high * scale - value]],
                            color="black", capsize=3, linewidth=1)
            published = getattr(row, f"{spec.key}_published", math.nan) if spec.published else math.nan
            if not math.isnan(published):
                ax.plot(centre, published * scale, marker="x", color="black", markersize=7, linestyle="none",
                        label=None if drew_published else "published")
                drew_published = True
    ax.set_xlabel("")
    ax.set_ylabel(spec.label)
    attack = f", {rows['attack'].iloc[0]} attack" if spec.source == "attack" else ""
    ax.set_title(f"{spec.label}{attack}: mean and 95% CI" + (" (× published)" if drew_published else ""),
                 fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    return fig


_DISTRIBUTION_RANGES = {"topk_intersection": (0.0, 1.0), "kendall_tau": (-1.0, 1.0), "spearman_rho": (-1.0, 1.0)}
_COLUMN_LABELS = {"topk_intersection": "top-k intersection (fraction)", "kendall_tau": "Kendall τ",
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
    datasets = list(dict.fromkeys(data["dataset"]))
    methods = list(dict.fromkeys(data["method"]))
    palette = method_palette(methods)
    fig = _figure(max(5.0, 1.5 * len(methods) + 1.0), 2.8 * len(datasets))
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
            low, high = _DISTRIBUTION_RANGES[column]
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        ax.set_title(dataset_name(dataset), fontsize="medium")
    return fig


@_styled
def plot_training_curves(logs: Mapping[str, pd.DataFrame], title: str = ""):
    """Total loss, each loss term and batch accuracy against step, one line per method.
    None when no log has rows."""
    logs = {m: log for m, log in logs.items() if log is not None and len(log)}
    if not logs:
        return None
    panels = ["total"]
    for log in logs.values():
        panels += [t for t in loss_terms(log) if t not in panels]
    panels.append("batch_accuracy")
    palette = method_palette(list(logs))
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = _figure(3.3 * columns, 2.6 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for method, log in logs.items():
            if panel in log.columns:
                ax.plot(log["step"], log[panel], color=palette[method], label=method_name(method), linewidth=1)
        ax.set_title(panel.replace("_", " "), fontsize="small")
        ax.set_xlabel("step")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def common_example_indices(examples: Mapping[str, Mapping[str, np.ndarray] | None],
                           max_examples: int) -> dict[str, list[int]]:
    """For each method, the rows of its examples.npz to show: the test images all methods stored
    (in the first method's order) where there are any, else each method's first images."""
    present = {m: e for m, e in examples.items() if e is not None}
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


def plot_example_grid(examples: Mapping[str, Mapping[str, np.ndarray] | None], dataset: str,
                      per_example: Mapping[str, pd.DataFrame | None] | None = None, max_examples: int = 3):
    """Original vs attacked image and their saliency maps, one row per (test image, method), the same
    test images across methods where possible. Per-example τ and IN come from per_example.csv when
    given. Each row's two maps share one colour scale. None when no method has examples."""
    chosen = common_example_indices(examples, max_examples)
    if not chosen:
        return None
    max_value = float(dataset_input(dataset)["max_value"])
    # Rows grouped by test image so that methods sit next to each other for the same input.
    order = []
    for rank in range(max(len(rows) for rows in chosen.values())):
        for method, rows in chosen.items():
            if rank < len(rows):
                order.append((method, rows[rank]))
    fig = _figure(8.4, 2.1 * len(order) + 0.4)
    axes = fig.subplots(len(order), 4, squeeze=False)
    headers = ("original", "attacked", "saliency (original)", "saliency (attacked)")
    for line, (method, row) in enumerate(order):
        arrays = examples[method]
        index, label = int(arrays["indices"][row]), int(arrays["labels"][row])
        height, width = arrays["height"], arrays["width"]
        original, cmap = _as_image(arrays["original"][row], max_value)
        attacked, _ = _as_image(arrays["attacked"][row], max_value)
        maps = [arrays["saliency_original"][row].reshape(height, width),
                arrays["saliency_attacked"][row].reshape(height, width)]
        top = max(float(m.max()) for m in maps) or 1.0
        panels = [(original, cmap, 0.0, 1.0), (attacked, cmap, 0.0, 1.0),
                  (maps[0], "inferno", 0.0, top), (maps[1], "inferno", 0.0, top)]
        for column, (ax, (picture, colours, vmin, vmax)) in enumerate(zip(axes[line], panels)):
            ax.imshow(picture, cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if line == 0:
                ax.set_title(headers[column], fontsize="small")
        axes[line][0].set_ylabel(f"{method_name(method)}\n#{index}, label {label}", fontsize="x-small")
        note = _example_note(per_example, method, index)
        if note:
            axes[line][3].set_xlabel(note, fontsize="x-small")
    fig.suptitle(f"{dataset_name(dataset)}: attacked examples", fontsize="medium")
    return fig


def _example_note(per_example: Mapping[str, pd.DataFrame | None] | None, method: str, index: int) -> str:
    frame = (per_example or {}).get(method)
    if frame is None:
        return ""
    match = frame[frame["index"] == index]
    if match.empty or match["status"].iloc[0] != "attacked":
        return ""
    row = match.iloc[0]
    note = f"τ={row['kendall_tau']:.3f}, IN={100 * row['topk_intersection']:.0f}%"
    if int(row["zero_direction"]):
        note += ", zero dir."
    return note


def show(figure, what: str) -> None:
    """Display a figure in a notebook, or say that there is nothing to show yet."""
    from IPython.display import Markdown, display

    if figure is None:
        display(Markdown(f"*No results yet for {what}.*"))
    else:
        display(figure)
