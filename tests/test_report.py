"""Tests of attrrob.report and the report notebooks, on a synthetic results/ tree that follows the
schemas of docs/DESIGN.md (2 data sets × 3 methods, the third method missing)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="the reports need the workflow extras (pandas, seaborn, matplotlib)")
pytest.importorskip("seaborn", reason="the reports need the workflow extras (pandas, seaborn, matplotlib)")
pytest.importorskip("matplotlib", reason="the reports need the workflow extras (pandas, seaborn, matplotlib)")

from attrrob import outputs, report  # noqa: E402
from attrrob.config import dataset_input  # noqa: E402
from attrrob.errors import AttrrobError, ConfigError, DataError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATTRROB_SHARED", REPO.parent / "shared"))
NOTEBOOKS = REPO / "workflow" / "notebooks"

DATASETS = ["mnist", "fashion_mnist"]
METHODS = ["natural", "ig_norm", "sarkar"]       # sarkar has no results: it must show as missing
PRESENT = ["natural", "ig_norm"]
CI_FIELDS = ("mean", "ci_low", "ci_high", "n")


# --------------------------------------------------------------------------- synthetic results tree

def _ci(values: np.ndarray) -> dict:
    """A 95% t-interval, computed with scipy (the oracle here; the report only copies it)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": int(len(values))}


def _write_method(root: Path, dataset: str, method: str, seed: int, n_images: int = 40) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / dataset / method
    correct = rng.random(n_images) < 0.9
    correct[:6] = True  # the stored example images (below) are attacked ones
    robust = correct & (rng.random(n_images) < 0.6)
    outputs.write_json(folder / "accuracy" / "summary.json", {
        "dataset": dataset, "method": method,
        "natural_accuracy": _ci(correct.astype(float)), "adversarial_accuracy": _ci(robust.astype(float)),
        "settings": {"eps": 0.3}, "wall_time_s": 1.5, "device": "cpu"})

    attacked = np.flatnonzero(correct)
    zero = np.zeros(n_images, dtype=int)
    zero[attacked[: len(attacked) // 4]] = 1
    rows = []
    attacked_set = set(attacked.tolist())
    for index in range(n_images):
        if index in attacked_set:
            rows.append({"index": index, "label": index % 10, "prediction": index % 10, "status": "attacked",
                         "topk_intersection": rng.uniform(0.2, 0.9), "kendall_tau": rng.uniform(-0.2, 0.8),
                         "spearman_rho": rng.uniform(-0.2, 0.9), "mass_center_shift": rng.uniform(0, 3),
                         "linf": 0.3, "restart": 0, "step": int(rng.integers(1, 100)),
                         "zero_direction": int(zero[index])})
        else:
            rows.append({"index": index, "label": index % 10, "prediction": (index + 1) % 10,
                         "status": "skipped_misclassified", "topk_intersection": None, "kendall_tau": None,
                         "spearman_rho": None, "mass_center_shift": None, "linf": None, "restart": None,
                         "step": None, "zero_direction": 0})
    frame = pd.DataFrame(rows)
    outputs.write_text(folder / "attack_topk" / "per_example.csv", frame.to_csv(index=False))
    done = frame[frame["status"] == "attacked"]
    metrics = {name: _ci(done[name].to_numpy(float))
               for name in ("topk_intersection", "kendall_tau", "spearman_rho", "mass_center_shift", "linf")}
    outputs.write_json(folder / "attack_topk" / "summary.json", {
        "dataset": dataset, "method": method, "attack": "topk", "settings": {"k_attack": 200},
        "zero_direction": "random_sign",
        "counts": {"n_total": n_images, "n_attacked": int(len(done)), "n_skipped": int(n_images - len(done)),
                   "n_zero_direction": int(zero.sum())},
        "zero_direction_fraction": float(zero.sum() / len(done)), "metrics": metrics,
        "wall_time_s": 3.0, "images_per_s": 12.0, "device": "cpu"})

    # Methods store partly different images, so the grid must find the common ones.
    indices = attacked[:4] if method == "natural" else attacked[1:5]
    shape = dataset_input(dataset)
    height, width = shape["height"], shape["width"]
    original = rng.random((4, shape["channels"], height, width)).astype(np.float32)
    attacked_images = np.clip(original + rng.uniform(-0.3, 0.3, original.shape), 0, 1).astype(np.float32)
    maps = rng.random((2, 4, height * width)).astype(np.float32)
    maps *= height * width / maps.sum(axis=2, keepdims=True)
    outputs.save_npz(folder / "attack_topk" / "examples.npz", indices=indices, labels=indices % 10,
                original=original, attacked=attacked_images, saliency_original=maps[0],
                saliency_attacked=maps[1], height=np.int64(height), width=np.int64(width))

    steps = np.arange(0, 1001, 100)
    log = pd.DataFrame({"step": steps, "lr": 1e-4, "total": 2.3 * np.exp(-steps / 500) + 0.1,
                        "ce": 2.0 * np.exp(-steps / 500) + 0.05,
                        "batch_accuracy": 1 - 0.9 * np.exp(-steps / 300), "examples_per_s": 500.0})
    if method == "ig_norm":
        log["ig_l1"] = 0.3 * np.exp(-steps / 400) + 0.05
    outputs.write_text(folder / "train_log.csv", log.to_csv(index=False))
    outputs.write_json(folder / "train_metrics.json", {"dataset": dataset, "method": method, "steps": 1000,
                                                  "final": {"ce": 0.05}, "examples_per_s": 500.0,
                                                  "wall_time_s": 2.0, "device": "cpu", "settings": {}})
    return {"accuracy": json.loads((folder / "accuracy" / "summary.json").read_text()),
            "attack": json.loads((folder / "attack_topk" / "summary.json").read_text())}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    written = {}
    for i, dataset in enumerate(DATASETS):
        for j, method in enumerate(PRESENT):
            written[(dataset, method)] = _write_method(root, dataset, method, seed=10 * i + j)
    # A data set with one method only: figures must not shift the other methods' bars onto it.
    extra = {("digits", "ig_norm"): _write_method(root, "digits", "ig_norm", seed=99)}
    return root, written, extra


# --------------------------------------------------------------------------- published numbers

def _published_md_rows() -> list[list[str]]:
    path = SHARED / "spec" / "published.md"
    if not path.is_file():
        pytest.skip(f"{path} is absent (set ATTRROB_SHARED to the shared folder to check the transcription)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ("MNIST", "GTSRB", "Flower"):
            rows.append(cells)
    return rows


def test_published_yaml_transcribes_published_md_exactly_and_nothing_else():
    names = {"MNIST": "mnist", "GTSRB": "gtsrb", "Flower": "flower"}
    rows = _published_md_rows()
    assert len(rows) == 9
    expected = {}
    for dataset, method, *values in rows:
        for key, printed in zip(("NA", "AA", "IN", "CO"), values):
            expected[(names[dataset], method, key)] = printed
    for (dataset, method, key), printed in expected.items():
        found = report.published_value(dataset, method, key)
        assert found is not None, (dataset, method, key)
        assert found.text == printed.rstrip("%")
        assert found.value == pytest.approx(float(printed.rstrip("%")) / (100 if printed.endswith("%") else 1))
    # Every other cell is empty: other data sets, Madry, the Sarkar rows, and Spearman throughout.
    for dataset in ("mnist", "fashion_mnist", "gtsrb", "flower", "digits"):
        for method in ("natural", "madry", "ig_norm", "ig_sum_norm", "sarkar", "sarkar_cacr", "sarkar_wacr"):
            for key in report.METRICS:
                if (dataset, method, key) not in expected:
                    assert report.published_value(dataset, method, key) is None, (dataset, method, key)


def test_published_value_units_aliases_and_source():
    found = report.published_value("mnist", "ig_norm", "IN")
    assert found.value == pytest.approx(0.7136) and found.text == "71.36"
    assert "NeurIPS 2019" in found.source and "poster" in found.source
    assert report.published_value("mnist", "ig_norm", "topk_intersection") == found
    assert report.published_value("gtsrb", "natural", "kendall_tau").value == pytest.approx(0.6790)
    assert report.published_value("fashion_mnist", "ig_norm", "IN") is None
    assert report.published_value("mnist", "madry", "NA") is None
    with pytest.raises(AttrrobError, match="unknown metric"):
        report.published_value("mnist", "natural", "accuracy")


def test_sarkar_claim_is_the_abstract_sentence():
    text = report.sarkar_claim_markdown()
    assert "approximately 3% to 9%" in text and "AAAI 2021" in text
    assert re.search(r"\d+\.\d+%", text) is None  # no per-cell numbers


# --------------------------------------------------------------------------- the table

def test_collect_table_copies_values_and_marks_missing(results):
    root, written, _ = results
    table = report.collect_table(root, DATASETS, METHODS)
    assert list(zip(table["dataset"], table["method"])) == [(d, m) for d in DATASETS for m in METHODS]
    for _, row in table.iterrows():
        key = (row["dataset"], row["method"])
        if key not in written:
            assert not row["accuracy_found"] and not row["attack_found"]
            assert all(math.isnan(row[f"{k}_mean"]) for k in report.METRICS)
            continue
        assert row["accuracy_found"] and row["attack_found"]
        for metric in report.METRICS.values():
            holder = written[key]["accuracy"] if metric.source == "accuracy" else written[key]["attack"]["metrics"]
            for field in CI_FIELDS:
                assert row[f"{metric.key}_{field}"] == pytest.approx(holder[metric.field][field])
            assert row[f"{metric.key}_ci_low"] <= row[f"{metric.key}_mean"] <= row[f"{metric.key}_ci_high"]
        attack = written[key]["attack"]
        assert row["zero_direction"] == "random_sign"
        assert row["zero_direction_fraction"] == pytest.approx(attack["zero_direction_fraction"])
        assert row["n_attacked"] == attack["counts"]["n_attacked"] and row["n_total"] == 40
    by_key = table.set_index(["dataset", "method"])
    assert by_key.loc[("mnist", "ig_norm"), "IN_published"] == pytest.approx(0.7136)
    assert by_key.loc[("mnist", "natural"), "CO_published"] == pytest.approx(0.1758)
    assert "NeurIPS 2019" in by_key.loc[("mnist", "ig_norm"), "source"]
    # Fashion-MNIST and Sarkar have no published numbers, even where results exist.
    for key in [("fashion_mnist", m) for m in METHODS] + [("mnist", "sarkar")]:
        assert all(math.isnan(by_key.loc[key, f"{k}_published"]) for k in ("NA", "AA", "IN", "CO"))
        assert by_key.loc[key, "source"] == ""
    assert "rho_published" not in table.columns


def test_markdown_table_cells(results):
    root, written, _ = results
    table = report.collect_table(root, DATASETS, METHODS)
    text = report.markdown_table(table)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert re.fullmatch(r"\|(---\|)+", lines[1]) and lines[1].count("---") == len(header)
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert len(rows) == 6
    cell = {(r["Data set"], r["Method"]): r for r in rows}
    mnist_ig = cell[("MNIST", "IG-NORM")]
    assert mnist_ig["IN published"] == "71.36 [1]"
    assert mnist_ig["CO published"] == "0.2841 [1]"
    stored = written[("mnist", "ig_norm")]["attack"]["metrics"]["topk_intersection"]
    assert mnist_ig["IN (%)"] == (f"{100 * stored['mean']:.2f} [{100 * stored['ci_low']:.2f}, "
                                  f"{100 * stored['ci_high']:.2f}]")
    tau = written[("mnist", "ig_norm")]["attack"]["metrics"]["kendall_tau"]
    assert mnist_ig["CO (Kendall τ)"].startswith(f"{tau['mean']:.4f} [")
    fashion = cell[("Fashion-MNIST", "IG-NORM")]
    assert all(fashion[f"{k} published"] == "–" for k in ("NA", "AA", "IN", "CO"))
    assert fashion["IN (%)"] != "missing"
    sarkar = cell[("MNIST", "Sarkar (CACR + WACR)")]
    assert all(sarkar[m.label] == "missing" for m in report.METRICS.values())
    counts = written[("mnist", "ig_norm")]["attack"]["counts"]
    assert mnist_ig["Attacked / evaluated"] == f"{counts['n_attacked']} / 40"
    assert mnist_ig["Zero direction (setting: share)"].startswith("random_sign: ")
    assert "[1] Chen et al., \"Robust Attribution Regularization\"" in text and "poster.pdf" in text


def test_markdown_table_without_published_rows_cites_nothing(results):
    root, _, _ = results
    text = report.markdown_table(report.collect_table(root, ["fashion_mnist"], PRESENT))
    assert "[1]" not in text and "–" in text


def test_html_table_and_settings_text(results):
    root, written, _ = results
    table = report.collect_table(root, DATASETS, METHODS)
    html = report.html_table(table)
    assert html.count("<tr") == 7 and "71.36 [1]" in html and "missing" in html
    settings = report.settings_markdown(table)
    counts = written[("mnist", "natural")]["attack"]["counts"]
    assert "`random_sign`" in settings
    assert f"{counts['n_zero_direction']} attacked images" in settings
    empty = report.collect_table(root, ["mnist"], ["sarkar"])
    assert "No `topk` attack results" in report.settings_markdown(empty)
    nothing = report.collect_table(root, [], METHODS)
    assert list(nothing.columns) == list(table.columns) and nothing.empty
    assert report.markdown_table(nothing).count("\n|") == 1 and report.plot_metric_bars(nothing, "NA") is None
    assert report.settings_markdown(nothing) == "No attack results found yet."


# --------------------------------------------------------------------------- readers

def test_readers_return_none_for_missing_files(results):
    root, _, _ = results
    assert report.load_accuracy(root, "mnist", "sarkar") is None
    assert report.load_attack(root, "mnist", "natural", "random") is None
    assert report.load_per_example(root, "gtsrb", "natural") is None
    assert report.load_train_log(root, "mnist", "sarkar") is None
    assert report.load_examples(root, "mnist", "sarkar") is None
    assert report.load_train_metrics(root, "mnist", "natural")["steps"] == 1000


def test_readers_name_the_broken_file(tmp_path):
    folder = tmp_path / "mnist" / "natural"
    (folder / "accuracy").mkdir(parents=True)
    (folder / "accuracy" / "summary.json").write_text("{not json")
    with pytest.raises(DataError, match=r"accuracy/summary\.json: cannot be read"):
        report.load_accuracy(tmp_path, "mnist", "natural")
    (folder / "accuracy" / "summary.json").write_text(json.dumps(
        {"dataset": "gtsrb", "method": "natural", "natural_accuracy": {}, "adversarial_accuracy": {}}))
    with pytest.raises(DataError, match="says dataset 'gtsrb' but lies under mnist/natural"):
        report.load_accuracy(tmp_path, "mnist", "natural")
    (folder / "accuracy" / "summary.json").write_text(json.dumps(
        {"dataset": "mnist", "natural_accuracy": {"mean": 0.9, "ci_low": 0.8, "ci_high": "x", "n": 3},
         "adversarial_accuracy": {"mean": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n": 3}}))
    with pytest.raises(DataError, match="'natural_accuracy' must hold numbers"):
        report.load_accuracy(tmp_path, "mnist", "natural")
    (folder / "attack_topk").mkdir()
    (folder / "attack_topk" / "per_example.csv").write_text("index,label\n0,1\n")
    with pytest.raises(DataError, match="columns prediction, status"):
        report.load_per_example(tmp_path, "mnist", "natural")
    np.savez(folder / "attack_topk" / "examples.npz", indices=np.arange(2), labels=np.arange(2),
             original=np.zeros((2, 1, 28, 28)), attacked=np.zeros((2, 1, 28, 28)),
             saliency_original=np.zeros((2, 100)), saliency_attacked=np.zeros((2, 784)),
             height=28, width=28)
    with pytest.raises(DataError, match="array shapes disagree"):
        report.load_examples(tmp_path, "mnist", "natural")


def test_collect_per_example_keeps_attacked_rows(results):
    root, written, _ = results
    frame = report.collect_per_example(root, DATASETS, METHODS)
    for (dataset, method), files in written.items():
        part = frame[(frame["dataset"] == dataset) & (frame["method"] == method)]
        assert len(part) == files["attack"]["counts"]["n_attacked"]
        assert part["kendall_tau"].mean() == pytest.approx(files["attack"]["metrics"]["kendall_tau"]["mean"])
    assert set(frame["status"]) == {"attacked"}
    everything = report.collect_per_example(root, ["mnist"], ["natural"], attacked_only=False)
    assert len(everything) == 40
    assert report.collect_per_example(root, ["gtsrb"], METHODS).empty


def test_parse_list():
    assert report.parse_list('["mnist", "gtsrb"]', "datasets") == ["mnist", "gtsrb"]
    assert report.parse_list(["topk"], "attacks") == ["topk"]
    with pytest.raises(ConfigError, match="notebook parameter 'methods'"):
        report.parse_list("natural", "methods")
    with pytest.raises(ConfigError, match="list of strings"):
        report.parse_list("[1, 2]", "methods")


def test_common_example_indices_prefers_shared_images(results):
    root, _, _ = results
    examples = {m: report.load_examples(root, "mnist", m) for m in METHODS}
    chosen = report.common_example_indices(examples, max_examples=2)
    assert set(chosen) == set(PRESENT)  # the method without results is left out
    shown = {m: [int(examples[m]["indices"][r]) for r in rows] for m, rows in chosen.items()}
    assert shown["natural"] == shown["ig_norm"] and len(shown["natural"]) == 2
    assert set(shown["natural"]) <= set(examples["natural"]["indices"][1:4].tolist())
    disjoint = {"a": {"indices": np.array([1, 2])}, "b": {"indices": np.array([3, 4, 5])}}
    assert report.common_example_indices(disjoint, 2) == {"a": [0, 1], "b": [0, 1]}


# --------------------------------------------------------------------------- figures

def test_metric_bars_draw_each_rows_ci_and_published_value(results):
    root, written, extra = results
    written = {**written, **extra}
    table = report.collect_table(root, DATASETS + ["digits"], METHODS)
    fig = report.plot_metric_bars(table, "IN")
    ax = fig.axes[0]
    from matplotlib.container import BarContainer

    bars = [bar for c in ax.containers if isinstance(c, BarContainer) for bar in c]
    assert len(bars) == len(written)
    by_height = {round(100 * files["attack"]["metrics"]["topk_intersection"]["mean"], 9): files
                 for files in written.values()}
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    for bar in bars:
        files = by_height[round(bar.get_height(), 9)]
        ci = files["attack"]["metrics"]["topk_intersection"]
        centre = bar.get_x() + bar.get_width() / 2
        (x0, y0), (x1, y1) = next(s for s in segments if abs(s[0][0] - centre) < 1e-9)
        assert (min(y0, y1), max(y0, y1)) == pytest.approx((100 * ci["ci_low"], 100 * ci["ci_high"]))
    # Only MNIST natural and ig_norm have published IN values.
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert sorted(line.get_ydata()[0] for line in crosses) == pytest.approx([46.61, 71.36])
    empty = report.collect_table(root, ["gtsrb"], METHODS)
    assert report.plot_metric_bars(empty, "IN") is None


def test_distribution_training_and_example_figures(results):
    root, written, _ = results
    per_example = report.collect_per_example(root, DATASETS, METHODS)
    fig = report.plot_metric_distribution(per_example, "kendall_tau")
    assert [ax.get_title() for ax in fig.axes] == ["MNIST", "Fashion-MNIST"]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == [f"{report.method_name(m)}\nn={written[('mnist', m)]['attack']['counts']['n_attacked']}"
                     for m in PRESENT]
    assert report.plot_metric_distribution(per_example.iloc[0:0]) is None

    logs = {m: report.load_train_log(root, "mnist", m) for m in METHODS}
    assert report.loss_terms(logs["ig_norm"]) == ["ce", "ig_l1"]
    fig = report.plot_training_curves(logs, "MNIST")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["total", "ce", "ig l1", "batch accuracy"]
    assert report.plot_training_curves({"sarkar": None}) is None

    examples = {m: report.load_examples(root, "mnist", m) for m in METHODS}
    frames = {m: report.load_per_example(root, "mnist", m) for m in PRESENT}
    fig = report.plot_example_grid(examples, "mnist", frames, max_examples=2)
    assert len(fig.axes) == 2 * len(PRESENT) * 4
    assert "τ=" in fig.axes[3].get_xlabel()
    assert report.plot_example_grid({"sarkar": None}, "mnist") is None


# --------------------------------------------------------------------------- notebooks

def _run_notebook(name: str, out_dir: Path, parameters: dict) -> tuple[dict, str]:
    papermill = pytest.importorskip("papermill", reason="papermill is not installed (workflow extras)")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (workflow extras)")
    exporters = pytest.importorskip("nbconvert.exporters", reason="nbconvert is not installed (workflow extras)")
    executed = out_dir / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(executed), parameters=parameters,
                               kernel_name="python3", progress_bar=False, cwd=str(out_dir))
    notebook = nbformat.read(executed, as_version=4)
    exporter = exporters.HTMLExporter(exclude_input=True)
    body, _ = exporter.from_notebook_node(notebook)
    return notebook, body


def _assert_clean(notebook) -> None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            assert not (output["output_type"] == "stream" and output["name"] == "stderr"), output["text"]


def test_notebooks_render_tables_without_errors(results, tmp_path):
    root, written, _ = results
    common = {"results_dir": str(root), "methods": json.dumps(METHODS), "attacks": '["topk"]',
              "config_name": "synthetic"}
    notebook, body = _run_notebook("summary.ipynb", tmp_path,
                                   {**common, "datasets": json.dumps(DATASETS + ["gtsrb"])})
    _assert_clean(notebook)
    assert "attrrob-results" in body and "71.36 [1]" in body and "missing" in body
    assert "approximately 3% to 9%" in body and "random_sign" in body and "synthetic" in body
    assert body.count("data:image/png") >= 6  # 5 metric bars, τ distributions, training curves

    notebook, body = _run_notebook("dataset.ipynb", tmp_path, {**common, "dataset": "mnist"})
    _assert_clean(notebook)
    assert "attrrob-results" in body and "71.36 [1]" in body
    assert "Fashion-MNIST" not in body
    assert body.count("data:image/png") >= 2  # example grid, τ distribution


def test_example_grid_shows_colour_images_in_their_range():
    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, size=(2, 3, 32, 32)).astype(np.float32)  # GTSRB: [0, 255]
    maps = rng.random((2, 32 * 32)).astype(np.float32)
    examples = {"natural": {"indices": np.array([7, 9]), "labels": np.array([1, 2]), "original": original,
                            "attacked": np.clip(original + 8, 0, 255), "saliency_original": maps,
                            "saliency_attacked": maps[::-1].copy(), "height": 32, "width": 32}}
    fig = report.plot_example_grid(examples, "gtsrb", max_examples=1)
    shown = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(shown, np.transpose(original[0], (1, 2, 0)) / 255.0)
    # Both maps of a row share one colour scale, so that their intensities compare.
    top = max(float(maps[0].max()), float(maps[1].max()))  # row 0: original map 0, attacked map 1
    for panel in (2, 3):
        assert fig.axes[panel].get_images()[0].get_clim() == pytest.approx((0.0, top))


def test_collect_timings_reads_recorded_costs(results):
    root, written, _ = results
    timings = report.collect_timings(root, DATASETS, METHODS, ["topk", "random"])
    assert len(timings) == len(written)  # the method without results is left out
    first = timings.iloc[0]
    assert first["Training steps"] == 1000 and first["Training device"] == "cpu"
    assert first["Training wall time (h)"] == pytest.approx(2.0 / 3600)
    assert first["topk attack images/s"] == 12.0 and first["random attack images/s"] is None


def test_reports_only_read_results():
    """Notebooks import nothing of the package but attrrob.report, and that pulls in no torch:
    a report never retrains or recomputes (docs/DESIGN.md, architecture)."""
    import ast
    import subprocess
    import sys

    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (workflow extras)")
    for name in ("summary.ipynb", "dataset.ipynb"):
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells), name
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and node.module == "attrrob":
                    assert [a.name for a in node.names] == ["report"], (name, ast.unparse(node))
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    assert not any(m.startswith(("attrrob", "torch")) for m in modules), (name, ast.unparse(node))
    probe = "import sys, attrrob.report; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_results_without_images_show_not_available(tmp_path):
    nothing = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    outputs.write_json(tmp_path / "mnist" / "natural" / "attack_topk" / "summary.json", {
        "dataset": "mnist", "method": "natural", "attack": "topk", "zero_direction": "stay",
        "counts": {"n_total": 3, "n_attacked": 0, "n_skipped": 3, "n_zero_direction": 0},
        "zero_direction_fraction": math.nan,
        "metrics": {name: nothing for name in ("topk_intersection", "kendall_tau", "spearman_rho")}})
    table = report.collect_table(tmp_path, ["mnist"], ["natural"])
    shown, _ = report.display_table(table)
    row = shown.iloc[0]
    assert row["NA (%)"] == "missing" and row["IN (%)"] == "n/a (no images)"
    assert row["Attacked / evaluated"] == "0 / 3" and row["Zero direction (setting: share)"] == "stay: n/a"


def test_method_colours_do_not_depend_on_which_methods_have_results():
    everything = report.method_palette(["natural", "madry", "ig_norm", "sarkar"])
    some = report.method_palette(["sarkar", "ig_norm"])
    assert some == {m: everything[m] for m in some}
    assert len(set(everything.values())) == 4
