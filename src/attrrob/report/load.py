"""Reading result files: names, published numbers, and one reader per result file.

Readers return None for a file that does not exist yet (a report shows it as missing) and raise
`DataError` naming a file that exists but cannot be read. Values keep the units of the result
files (accuracies and IN as fractions, τ and ρ as is). Schemas: docs/DESIGN.md.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from .. import records, registry
from ..result_files import (EXAMPLE_ARRAYS, EXAMPLES, OPTIONAL_PER_EXAMPLE_COLUMNS, PER_EXAMPLE,  # noqa: F401
                            PER_EXAMPLE_COLUMNS, SUMMARY, TRACE, TRACE_ARRAYS, TRAIN_LOG, TRAIN_METRICS,
                            train_log_columns)
from ..errors import AttrrobError, ConfigError, DataError

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

    @property
    def bounds(self) -> tuple[float, float]:
        """The metric's range: a fraction (NA, AA, IN) in [0, 1], a rank correlation in [-1, 1]."""
        return (0.0, 1.0) if self.percent else (-1.0, 1.0)


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("NA", "NA (%)", "accuracy", "natural_accuracy", True, True),
    Metric("AA", "AA (%)", "accuracy", "adversarial_accuracy", True, True),
    Metric("IN", "IN (%)", "attack", "topk_intersection", True, True),
    Metric("CO", "CO (Kendall τ)", "attack", "kendall_tau", False, True),
    Metric("rho", "Spearman ρ", "attack", "spearman_rho", False, False),
)}
# Accuracy under AutoAttack (APGD-CE + APGD-T): optional, absent or null where it was not run, so
# it is kept out of METRICS (whose columns every table shows) and shown only where present.
AUTOATTACK = Metric("AA_auto", "AA AutoAttack (%)", "accuracy", "autoattack_accuracy", True, False)


def spec(key: str) -> Metric | None:
    """The metric a result column key names (the table's metrics and AA_auto), None for another key."""
    return AUTOATTACK if key == AUTOATTACK.key else METRICS.get(key)


_METRIC_ALIASES = {**{m.field: m.key for m in METRICS.values()}, **{k: k for k in METRICS}}

_LOG_FIXED_COLUMNS = tuple(train_log_columns(()))
_CI_FIELDS = ("mean", "ci_low", "ci_high", "n")


def dataset_name(dataset: str) -> str:
    """The data set's display name (registry), or its key for one this install does not know."""
    return registry.dataset(dataset).display if dataset in registry.dataset_names() else dataset


def method_name(method: str) -> str:
    """The method's display name (registry), or its key for a method this install does not know."""
    return registry.method(method).display if method in registry.method_names() else method


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


def has_published(dataset: str) -> bool:
    """Whether published.yaml gives any number for `dataset`."""
    return any(key[0] == dataset for key in _published()["values"])


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
    path = _result_dir(results_dir, dataset, method) / "accuracy" / SUMMARY
    doc = _read_json(path, dataset, method)
    if doc is not None:
        _require_ci(doc, path, "natural_accuracy", "adversarial_accuracy")
        if doc.get("autoattack_accuracy") is not None:  # absent or null: AutoAttack was not run
            _require_ci(doc, path, "autoattack_accuracy")
    return doc


def load_attack(results_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> dict | None:
    """`{results_dir}/{dataset}/{method}/attack_{attack}/summary.json`, or None if it does not exist yet."""
    path = _result_dir(results_dir, dataset, method) / f"attack_{attack}" / SUMMARY
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
    ties = doc.get("ties")
    if ties is not None and (not isinstance(ties, dict)
                             or not all(_is_number_or_null(ties.get(k)) for k in ("n_with_ties", "share_with_ties"))):
        raise DataError(f"{path}: 'ties' must hold mode, n_with_ties and share_with_ties (numbers); "
                        "re-run `attrrob evaluate`")
    return doc


def _check_record(path: Path, summary_path: Path, dataset: str, method: str, producer: str) -> None:
    """`path` (when present) matches the record its run's summary keeps of it (attrrob.records)."""
    if path.is_file():
        records.check(path, _read_json(summary_path, dataset, method), summary_path, producer)


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
    return load_run_per_example(_result_dir(results_dir, dataset, method), dataset, method, attack)


def load_run_per_example(run_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> pd.DataFrame | None:
    """`load_per_example` of one run's folder: a main run's, or a sweep point's below its method's."""
    path = Path(run_dir) / f"attack_{attack}" / PER_EXAMPLE
    _check_record(path, path.with_name(SUMMARY), dataset, method, "attrrob evaluate")
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
    return load_run_train_log(_result_dir(results_dir, dataset, method), dataset, method)


def load_run_train_log(run_dir: PathLike, dataset: str, method: str) -> pd.DataFrame | None:
    """`load_train_log` of one run's folder: a main run's, or a sweep point's below its method's."""
    path = Path(run_dir) / TRAIN_LOG
    _check_record(path, path.with_name(TRAIN_METRICS), dataset, method, "attrrob train")
    return _read_csv(path, ("step", "total", "batch_accuracy"), "attrrob train")


def loss_terms(log: pd.DataFrame) -> list[str]:
    """The loss-term columns of a training log (everything but step, lr, total, accuracy, speed)."""
    return [c for c in log.columns if c not in _LOG_FIXED_COLUMNS]


def load_train_metrics(results_dir: PathLike, dataset: str, method: str) -> dict | None:
    """`train_metrics.json`, or None if it does not exist yet."""
    return load_run_train_metrics(_result_dir(results_dir, dataset, method), dataset, method)


def load_run_train_metrics(run_dir: PathLike, dataset: str, method: str) -> dict | None:
    """`load_train_metrics` of one run's folder."""
    return _read_json(Path(run_dir) / TRAIN_METRICS, dataset, method)


def _read_npz(path: Path, required) -> dict | None:
    """An evaluator's .npz as a dict of arrays, None if absent; one-line errors when unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); re-run `attrrob evaluate`") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DataError(f"{path}: arrays {', '.join(missing)} are missing; re-run `attrrob evaluate`")
    return arrays


def load_examples(results_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> dict | None:
    """`attack_{attack}/examples.npz` as a dict of arrays (height, width as ints), or None."""
    path = _result_dir(results_dir, dataset, method) / f"attack_{attack}" / EXAMPLES
    _check_record(path, path.with_name(SUMMARY), dataset, method, "attrrob evaluate")
    arrays = _read_npz(path, EXAMPLE_ARRAYS)
    if arrays is None:
        return None
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


def load_trace(results_dir: PathLike, dataset: str, method: str, attack: str = "topk") -> dict | None:
    """`attack_{attack}/trace.npz`: the kept criterion per attacked image after each iteration.

    Arrays: `indices` [N] (test-set indices), `iterations` [T+1] (0 = the original),
    `kendall_tau` and `topk_intersection` [N, T+1] (the kept iterate's values after t iterations,
    so non-increasing in the criterion; 1 at t = 0). None when the file does not exist (results
    of evaluators older than the trace).
    """
    path = _result_dir(results_dir, dataset, method) / f"attack_{attack}" / TRACE
    _check_record(path, path.with_name(SUMMARY), dataset, method, "attrrob evaluate")
    arrays = _read_npz(path, TRACE_ARRAYS)
    if arrays is None:
        return None
    shape = (len(arrays["indices"]), len(arrays["iterations"]))
    if arrays["kendall_tau"].shape != shape or arrays["topk_intersection"].shape != shape:
        raise DataError(f"{path}: kendall_tau and topk_intersection must be [indices, iterations] = "
                        f"{list(shape)}; re-run `attrrob evaluate`")
    return arrays
