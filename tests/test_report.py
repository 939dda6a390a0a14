"""Tests of attrrob.report and the report notebooks, on a synthetic results/ tree that follows the
schemas of docs/DESIGN.md (2 data sets × 3 methods, the third method missing)."""

from __future__ import annotations

import itertools
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
HTML_TEMPLATE = REPO / "workflow" / "report" / "offline.html.j2"  # what report.smk renders with

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


def _write_method(root: Path, dataset: str, method: str, seed: int, n_images: int = 40, new: bool = False) -> dict:
    """Result files of one run; `new` adds what newer evaluators write (trace.npz, tie counts,
    AutoAttack AA), so that both the old and the new layout are rendered."""
    rng = np.random.default_rng(seed)
    folder = root / dataset / method
    correct = rng.random(n_images) < 0.9
    correct[:6] = True  # the stored example images (below) are attacked ones
    robust = correct & (rng.random(n_images) < 0.6)
    accuracy = {"dataset": dataset, "method": method,
                "natural_accuracy": _ci(correct.astype(float)), "adversarial_accuracy": _ci(robust.astype(float)),
                "settings": {"eps": 0.3}, "wall_time_s": 1.5, "device": "cpu"}
    if new:
        # natural: AutoAttack far below PGD (the report must flag it); ig_norm: AutoAttack not run (null).
        auto = robust & (rng.random(n_images) < (0.5 if method == "natural" else 0.97))
        accuracy["autoattack_accuracy"] = _ci(auto.astype(float)) if method == "natural" else None
    outputs.write_json(folder / "accuracy" / "summary.json", accuracy)

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
            if index in (attacked[1], attacked[2]):  # kept the original: step 0, τ = IN = 1
                rows[-1].update(step=0, topk_intersection=1.0, kendall_tau=1.0, spearman_rho=1.0, linf=0.0)
        else:
            rows.append({"index": index, "label": index % 10, "prediction": (index + 1) % 10,
                         "status": "skipped_misclassified", "topk_intersection": None, "kendall_tau": None,
                         "spearman_rho": None, "mass_center_shift": None, "linf": None, "restart": None,
                         "step": None, "zero_direction": 0})
    frame = pd.DataFrame(rows)
    if new:
        frame["topk_tied_slots"] = np.where(frame["status"] == "attacked", rng.integers(0, 3, n_images), np.nan)
    outputs.write_text(folder / "attack_topk" / "per_example.csv", frame.to_csv(index=False))
    done = frame[frame["status"] == "attacked"]
    metrics = {name: _ci(done[name].to_numpy(float))
               for name in ("topk_intersection", "kendall_tau", "spearman_rho", "mass_center_shift", "linf")}
    summary = {
        "dataset": dataset, "method": method, "attack": "topk", "settings": {"k_attack": 200, "eps": 0.3},
        "zero_direction": "random_sign",
        "counts": {"n_total": n_images, "n_attacked": int(len(done)), "n_skipped": int(n_images - len(done)),
                   "n_zero_direction": int(zero.sum())},
        "zero_direction_fraction": float(zero.sum() / len(done)), "metrics": metrics,
        "wall_time_s": 3.0, "images_per_s": 12.0, "device": "cpu"}
    if new:
        tied = int((done["topk_tied_slots"] > 0).sum())
        summary["ties"] = {"mode": "expected", "n_with_ties": tied, "share_with_ties": tied / len(done),
                           "topk_intersection_index": _ci(done["topk_intersection"].to_numpy(float) + 0.01)}
        summary["settings"].update(k_metric=100, iterations=10, ig_steps=20)
        # The kept criterion after t iterations: starts at 1 and never rises.
        iterations = np.arange(0, 11)
        drops = rng.uniform(0.0, 0.08, size=(len(done), len(iterations)))
        drops[:, 0] = 0.0
        tau = 1.0 - np.cumsum(drops, axis=1)
        inter = 1.0 - np.cumsum(rng.uniform(0.0, 0.06, size=tau.shape) * (drops > 0), axis=1)
        outputs.save_npz(folder / "attack_topk" / "trace.npz", indices=done["index"].to_numpy(np.int64),
                         iterations=iterations, kendall_tau=tau, topk_intersection=inter)
    outputs.write_json(folder / "attack_topk" / "summary.json", summary)

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
            written[(dataset, method)] = _write_method(root, dataset, method, seed=10 * i + j, new=dataset == "mnist")
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
    assert "[1]" not in text and "published" not in text.splitlines()[0]  # no number: no column


def test_html_table_and_settings_text(results):
    root, written, _ = results
    table = report.collect_table(root, DATASETS, METHODS)
    html = report.html_table(table)
    assert html.count("<tr") == 7 and "71.36 [1]" in html and "missing" in html
    settings = report.settings_markdown(table)
    counts = written[("mnist", "natural")]["attack"]["counts"]
    assert "`random_sign`" in settings
    assert f"{counts['n_zero_direction']} attacked images" in settings
    # newer results: the attack's settings and IN under the index tie-break
    assert "Attack `topk` (topk: k = 200, IN at k = 100, 10 iterations × 20 IG points)" in settings
    mnist = table[(table["dataset"] == "mnist") & (table["method"] == "natural")].iloc[0]
    assert mnist["IN_index_mean"] == pytest.approx(mnist["IN_mean"] + 0.01)
    assert (f"IN {100 * mnist['IN_mean']:.2f}% (`expected`) vs {100 * mnist['IN_index_mean']:.2f}% with ties "
            "broken by pixel index") in settings
    empty = report.collect_table(root, ["mnist"], ["sarkar"])
    assert "No `topk` attack results" in report.settings_markdown(empty)
    nothing = report.collect_table(root, [], METHODS)
    assert list(nothing.columns) == list(table.columns) and nothing.empty
    assert report.markdown_table(nothing).count("\n|") == 1 and report.plot_forest(nothing) is None
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

def test_forest_plot_draws_each_rows_ci_and_published_value(results):
    root, written, extra = results
    written = {**written, **extra}
    datasets = DATASETS + ["digits"]
    table = report.collect_table(root, datasets, METHODS)
    fig = report.plot_forest(table, ("NA", "IN"))
    axes = np.array(fig.axes).reshape(len(datasets), 2)
    assert [ax.get_title() for ax in axes[0]] == ["NA (%)", "IN (%)"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["MNIST", "Fashion-MNIST", "digits (8×8)"]
    assert [t.get_text() for t in axes[0][0].get_yticklabels()] == [report.method_name(m) for m in METHODS]
    for (i, dataset), (j, (key, field)) in itertools.product(
            enumerate(datasets), enumerate((("NA", "natural_accuracy"), ("IN", "topk_intersection")))):
        ax = axes[i][j]
        filled = [line for line in ax.lines if line.get_marker() == "o" and line.get_markerfacecolor() != "none"]
        segments = [line for line in ax.lines if line.get_marker() in ("None", "", None)]
        expected = [(y, written[(dataset, m)]) for y, m in enumerate(METHODS) if (dataset, m) in written]
        assert len(filled) == len(segments) == len(expected)  # the method without results draws nothing
        for (y, files), point, segment in zip(expected, filled, segments):
            holder = files["accuracy"][field] if key == "NA" else files["attack"]["metrics"][field]
            assert point.get_ydata()[0] == y and segment.get_ydata()[0] == y
            assert point.get_xdata()[0] == pytest.approx(100 * holder["mean"])
            assert list(segment.get_xdata()) == pytest.approx([100 * holder["ci_low"], 100 * holder["ci_high"]])
    # Hollow markers: the published values, only where published.yaml has them (MNIST natural, ig_norm).
    hollow = {(i, j): sorted(line.get_xdata()[0] for line in axes[i][j].lines if line.get_markerfacecolor() == "none")
              for i in range(len(datasets)) for j in range(2)}
    assert hollow[(0, 0)] == pytest.approx([98.74, 99.17]) and hollow[(0, 1)] == pytest.approx([46.61, 71.36])
    assert all(not v for k, v in hollow.items() if k[0] > 0)
    assert len(fig.legends) == 1 and fig.legends[0].get_texts()[1].get_text() == "published"
    # AutoAttack: a panel only where some row has it.
    assert report.plot_forest(table, ("AA_auto",)) is not None
    assert report.plot_forest(report.collect_table(root, ["fashion_mnist"], METHODS), ("AA_auto",)) is None
    assert report.plot_forest(report.collect_table(root, ["gtsrb"], METHODS)) is None


def test_distribution_figure(results):
    root, written, _ = results
    per_example = report.collect_per_example(root, DATASETS, METHODS)
    fig = report.plot_metric_distribution(per_example, "kendall_tau")
    assert [ax.get_title() for ax in fig.axes] == ["MNIST", "Fashion-MNIST"]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == [f"{report.method_name(m)}\nn={written[('mnist', m)]['attack']['counts']['n_attacked']}"
                     for m in PRESENT]
    assert report.plot_metric_distribution(per_example.iloc[0:0]) is None


def test_training_curves_show_only_the_terms_a_method_has(results):
    root, _, _ = results
    logs = {m: report.load_train_log(root, "mnist", m) for m in METHODS}
    assert report.loss_terms(logs["ig_norm"]) == ["ce", "ig_l1"]
    # A weight-decay column of zeros (no weight decay) must not become a flat panel.
    logs = {m: (log.assign(weight_decay=0.0) if log is not None else None) for m, log in logs.items()}
    settings = {"natural": {"batch_size": 50, "loss_reduction": "mean"}, "ig_norm": {"batch_size": 50}}
    fig = report.plot_training_curves(logs, "MNIST", settings)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["total loss", "cross-entropy", "‖IG‖₁", "batch accuracy"]
    assert all(ax.get_ylabel() and ax.get_xlabel() == "training step" for ax in shown)
    ig_panel = shown[2]
    assert [line.get_label() for line in ig_panel.lines] == ["IG-NORM"]  # natural has no ‖IG‖₁ term
    assert shown[3].get_ylabel() == "accuracy on the batch (%)"
    assert max(shown[3].lines[0].get_ydata()) == pytest.approx(100 * logs["natural"]["batch_accuracy"].max())
    assert shown[1].get_ylabel() == "CE (nats; reduction per method)"
    note = report.training_note(logs, settings)
    assert "CE mean over the batch of 50: Natural." in note and "CE summed over the batch of 50: IG-NORM." in note
    assert "IG-NORM ‖IG‖₁" in note and "weight decay" not in note
    same = report.plot_training_curves({"ig_norm": logs["ig_norm"]}, "", {"ig_norm": {}})
    assert same.axes[1].get_ylabel() == "CE (nats, batch sum)"
    assert report.ce_reduction("madry", {"loss_reduction": "mean", "batch_size": 32}) == "mean over the batch of 32"
    assert report.ce_reduction("sarkar", {"loss_reduction": "mean"}) == "summed over the batch"  # always sums
    assert report.plot_training_curves({"sarkar": None}) is None


def test_saliency_grid_shares_one_colour_scale_and_labels_each_attack(results):
    root, _, _ = results
    examples = {m: report.load_examples(root, "mnist", m) for m in METHODS}
    frames = {m: report.load_per_example(root, "mnist", m) for m in PRESENT}
    fig = report.plot_example_grid(examples, "mnist", frames, max_examples=2)
    images = [ax for ax in fig.axes if ax.get_images()]
    inputs, maps = images[:2], images[2:]
    assert len(inputs) == 2 and len(maps) == 2 * 2 * len(PRESENT)  # methods × examples × (original, attacked)
    shown = {m: [int(examples[m]["indices"][r]) for r in rows]
             for m, rows in report.common_example_indices(examples, 2).items()}
    assert [ax.get_title() for ax in inputs] == [f"test image #{i}, label {i % 10}" for i in shown["natural"]]
    # One colour scale for every map, capped at the 99th percentile of all maps shown, with a colour bar.
    values = np.concatenate([examples[m][k][r] for m, rows in report.common_example_indices(examples, 2).items()
                             for r in rows for k in ("saliency_original", "saliency_attacked")])
    top = float(np.percentile(values, report.figures.SALIENCY_PERCENTILE))
    for ax in maps:
        assert ax.get_images()[0].get_clim() == pytest.approx((0.0, top))
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    # Row labels are horizontal (not clipped when rotated), one per method.
    labels = [ax.get_ylabel() for ax in maps if ax.get_ylabel()]
    assert labels == [report.method_name(m) for m in PRESENT]
    # Under each attacked map, τ and IN from per_example.csv; "unchanged*" where the kept iterate is the original.
    for method, axes in zip(PRESENT, (maps[:4], maps[4:])):
        frame = frames[method].set_index("index")
        for index, ax in zip(shown[method], axes[1::2]):
            row = frame.loc[index]
            expected = ("unchanged*" if row["step"] == 0 else
                        f"τ {row['kendall_tau']:.2f} · IN {100 * row['topk_intersection']:.0f}%")
            assert ax.get_xlabel() == expected
    assert "unchanged*" in {ax.get_xlabel() for ax in maps}  # the synthetic tree has such images
    assert report.plot_example_grid({"sarkar": None}, "mnist") is None


def test_unchanged_images_are_counted_with_their_cause():
    frame = pd.DataFrame({"index": range(6), "status": ["attacked"] * 5 + ["skipped_misclassified"],
                          "step": [0, 0, 3, 0, 7, None], "zero_direction": [1, 0, 1, 1, 0, 0]})
    assert report.unchanged_images(frame, "stay") == {"n_attacked": 5, "unchanged": 3, "zero_direction": 2,
                                                      "no_eligible_iterate": 1}
    # random_sign moves zero-direction images: an unchanged one had no eligible iterate.
    assert report.unchanged_images(frame, "random_sign") == {"n_attacked": 5, "unchanged": 3, "zero_direction": 0,
                                                             "no_eligible_iterate": 3}
    caption = report.example_caption({"natural": frame, "madry": frame.assign(step=5), "sarkar": None},
                                     {"natural": "stay", "madry": "stay"}, "topk")
    assert "unchanged: Natural 3 of 5; Madry PGD-AT 0 of 5." in caption and "Sarkar" not in caption
    assert "Of these, 1 had no eligible iterate" in caption and "2 met an exactly zero attack direction" in caption


def test_paired_difference_equals_scipys_paired_t_interval():
    from scipy import stats

    rng = np.random.default_rng(5)
    n = 60
    base = rng.uniform(0.2, 0.9, n)
    a = pd.DataFrame({"index": np.arange(n), "status": "attacked", "topk_intersection": base + rng.normal(0.03, 0.05, n)})
    b = pd.DataFrame({"index": np.arange(n)[::-1], "status": "attacked", "topk_intersection": base[::-1]})
    a.loc[[3, 7], "status"] = "skipped_misclassified"   # attacked only under b: not a pair
    a.loc[[3, 7], "topk_intersection"] = np.nan
    b.loc[b["index"] == 11, "status"] = "skipped_misclassified"
    b.loc[b["index"] == 11, "topk_intersection"] = np.nan
    keep = np.setdiff1d(np.arange(n), [3, 7, 11])
    diff = a.set_index("index").loc[keep, "topk_intersection"] - b.set_index("index").loc[keep, "topk_intersection"]
    test = stats.ttest_rel(a.set_index("index").loc[keep, "topk_intersection"],
                           b.set_index("index").loc[keep, "topk_intersection"])
    low, high = test.confidence_interval(0.95)
    found = report.paired.paired_difference(a, b, "topk_intersection")
    assert found["n"] == len(keep)
    assert found["mean"] == pytest.approx(float(diff.mean()))
    assert (found["ci_low"], found["ci_high"]) == pytest.approx((low, high))
    # Pairing matters: the unpaired interval of these correlated values is far wider.
    assert found["ci_high"] - found["ci_low"] < 0.5 * (2 * stats.t.ppf(0.975, 2 * len(keep) - 2)
                                                        * math.sqrt(a["topk_intersection"].var() / len(keep)
                                                                    + b["topk_intersection"].var() / len(keep)))
    one = report.paired.paired_difference(a.iloc[:1], b, "topk_intersection")
    assert one["n"] == 1 and math.isnan(one["ci_low"])
    assert report.paired.paired_difference(None, b, "kendall_tau")["n"] == 0


def test_paired_comparison_and_delta_view(results):
    root, _, _ = results
    frame = report.paired_comparison(root, DATASETS, [("ig_norm", "natural"), ("sarkar", "natural")])
    assert list(zip(frame["dataset"], frame["a"])) == [("mnist", "ig_norm"), ("fashion_mnist", "ig_norm")]
    a = report.load_per_example(root, "mnist", "ig_norm")
    b = report.load_per_example(root, "mnist", "natural")
    for metric in ("topk_intersection", "kendall_tau"):
        expected = report.paired.paired_difference(a, b, metric)
        assert frame.iloc[0][f"{metric}_mean"] == pytest.approx(expected["mean"])
        assert frame.iloc[0][f"{metric}_n"] == expected["n"]
    text = report.paired_markdown(frame)
    row = next(line for line in text.splitlines() if line.startswith("| MNIST"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ci = report.paired.paired_difference(a, b, "topk_intersection")
    assert cells[1] == "IG-NORM − Natural" and cells[2] == str(ci["n"])
    assert cells[3] == f"{100 * ci['mean']:+.2f} [{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]"
    delta = report.delta_vs_reference(root, DATASETS, METHODS, reference="natural")
    html = report.delta_html(delta, METHODS, DATASETS, reference="natural")
    assert html.count("<tr>") == 2 + 1  # two header rows, one method (sarkar has no results)
    assert f"{100 * ci['mean']:+.2f}" in html and "Fashion-MNIST" in html
    assert "No paired comparison yet" in report.delta_html(frame.iloc[0:0], METHODS, DATASETS)


def _cells(html: str) -> list[list[str]]:
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in body.split("</tr>") if row.strip()]


def test_paper_table_layout(results):
    root, written, _ = results
    table = report.collect_table(root, DATASETS + ["gtsrb"], METHODS)
    html = report.paper_table_html(table)
    head = html.split("<tbody>")[0]
    assert re.findall(r"class='group'>(.*?)</th>", head) == ["MNIST", "Fashion-MNIST"]
    # MNIST has AutoAttack (natural only); Fashion-MNIST's results predate it: no all-dash column.
    assert re.findall(r"<th>(.*?)</th>", head) == ["NA (%)", "AA (%)", "AA AutoAttack (%)", "IN (%)", "CO (Kendall τ)",
                                                   "NA (%)", "AA (%)", "IN (%)", "CO (Kendall τ)"]
    assert "AutoAttack: not run for Fashion-MNIST" in html and "No results yet for GTSRB" in html
    rows = _cells(html)
    assert [re.sub("<.*?>", "", r[0]) for r in rows] == [report.method_name(m) for m in METHODS]
    keys = [("mnist", "NA", "natural_accuracy"), ("mnist", "AA", "adversarial_accuracy"),
            ("mnist", "AA_auto", "autoattack_accuracy"), ("mnist", "IN", "topk_intersection"),
            ("mnist", "CO", "kendall_tau"), ("fashion_mnist", "NA", "natural_accuracy"),
            ("fashion_mnist", "AA", "adversarial_accuracy"), ("fashion_mnist", "IN", "topk_intersection"),
            ("fashion_mnist", "CO", "kendall_tau")]
    for column, (dataset, key, field) in enumerate(keys, start=1):
        values = {}
        for method, row in zip(METHODS, rows):
            cell = row[column]
            if (dataset, method) not in written:
                assert cell.startswith("missing")
                continue
            files = written[(dataset, method)]
            holder = (files["accuracy"] if key in ("NA", "AA", "AA_auto") else files["attack"]["metrics"])[field]
            if holder is None:
                assert cell.startswith("not run")
                continue
            percent = key != "CO"
            main = f"{100 * holder['mean']:.2f}" if percent else f"{holder['mean']:.4f}"
            ci = (f"{100 * holder['ci_low']:.1f}–{100 * holder['ci_high']:.1f}" if percent
                  else f"{holder['ci_low']:.3f}–{holder['ci_high']:.3f}")
            assert main in cell and f"<div class='ci'>{ci}</div>" in cell
            values[method] = (holder["mean"], cell)
        if len(values) > 1:  # the best mean of the column in bold, and only it
            best = max(v for v, _ in values.values())
            for value, cell in values.values():
                assert ("<b>" in cell) == (value == best)
    # Published values, muted, exactly where published.yaml has them (MNIST natural and ig_norm).
    published = [(m, c) for m, row in zip(METHODS, rows) for c, cell in enumerate(row) if "class='pub'" in cell]
    assert published == [(m, c) for m in ("natural", "ig_norm") for c in (1, 2, 4, 5)]
    assert "71.36 [1]" in rows[1][4] and "poster.pdf" in html
    # natural's AutoAttack AA is far below its PGD AA: flagged.
    assert html.count("class='flag'") == 1 and "MNIST, Natural: AutoAttack AA" in html
    assert report.paper_table_html(report.collect_table(root, ["gtsrb"], METHODS)).startswith("<p><em>No results yet")


def test_paper_table_splits_a_wide_grid_into_blocks(results):
    root, _, _ = results
    table = report.collect_table(root, DATASETS, METHODS)
    wide = pd.concat([table, table.assign(dataset="gtsrb"), table.assign(dataset="flower")], ignore_index=True)
    html = report.paper_table_html(wide)
    blocks = html.split("<table")[1:]
    groups = [re.findall(r"class='group'>(.*?)</th>", block) for block in blocks]
    # MNIST 5 columns (AutoAttack), Fashion-MNIST 4, GTSRB and Flower 5 each (their rows mix both):
    # 9 + 5 > 12 starts a second block; data sets stay whole and in order.
    assert groups == [["MNIST", "Fashion-MNIST"], ["GTSRB", "Flower-17"]]
    assert all(len(re.findall(r"<th>", b.split("<tbody>")[0])) <= report.tables.PAPER_MAX_COLUMNS for b in blocks)
    assert len(blocks) > 1 and sum(b.count("class='method'") for b in blocks) == len(blocks) * len(METHODS)


def test_autoattack_and_ties_reach_the_tables(results):
    root, written, _ = results
    table = report.collect_table(root, ["mnist"], METHODS)
    row = table.set_index("method").loc["natural"]
    auto = json.loads((root / "mnist/natural/accuracy/summary.json").read_text())["autoattack_accuracy"]
    assert row["AA_auto_mean"] == pytest.approx(auto["mean"])
    assert math.isnan(table.set_index("method").loc["ig_norm", "AA_auto_mean"])  # null: not run
    ties = written[("mnist", "natural")]["attack"]["ties"]
    assert row["ties_mode"] == "expected" and row["ties_share"] == pytest.approx(ties["share_with_ties"])
    flags = report.autoattack_flags(table)
    pgd = row["AA_mean"]
    assert len(flags) == (1 if pgd - auto["mean"] > 0.05 else 0) == 1
    assert f"{100 * (pgd - auto['mean']):.1f} points below" in flags[0]
    text = report.markdown_table(table)
    assert "AA AutoAttack (%)" in text and "not run" in text and "expected: " in text and "gradient masking" in text
    assert "top-k ties (`expected`)" in report.settings_markdown(table)
    old = report.markdown_table(report.collect_table(root, ["fashion_mnist"], METHODS))
    assert "AutoAttack" not in old and "ties" not in old  # results that predate them keep the old columns
    assert report.load_per_example(root, "mnist", "natural")["topk_tied_slots"].notna().any()


def test_trace_curves(results):
    from scipy import stats

    root, _, _ = results
    trace = report.load_trace(root, "mnist", "natural")
    assert report.load_trace(root, "fashion_mnist", "natural") is None  # older results: no trace
    curve = report.trace_curve(trace, "kendall_tau")
    assert list(curve["iteration"]) == list(trace["iterations"])
    t = 5
    values = trace["kendall_tau"][:, t]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert curve.loc[t, "mean"] == pytest.approx(values.mean())
    assert (curve.loc[t, "ci_low"], curve.loc[t, "ci_high"]) == pytest.approx((low, high))
    assert curve.loc[0, "mean"] == 1.0 and math.isnan(curve.loc[0, "ci_low"]) is False
    fig = report.plot_attack_strength({m: report.load_trace(root, "mnist", m) for m in METHODS})
    left, right = fig.axes[:2]
    assert left.get_ylabel() == "top-k intersection IN (%)" and right.get_ylabel() == "Kendall τ (CO)"
    assert [line.get_label() for line in right.lines] == [
        f"{report.method_name(m)} (n={len(report.load_trace(root, 'mnist', m)['indices'])})" for m in PRESENT]
    assert list(right.lines[0].get_ydata()) == pytest.approx(list(curve["mean"]))
    assert len(right.collections) == len(PRESENT)  # one CI band per method
    assert report.plot_attack_strength({m: report.load_trace(root, "fashion_mnist", m) for m in METHODS}) is None


def test_trace_reader_names_a_broken_file(tmp_path):
    folder = tmp_path / "mnist" / "natural" / "attack_topk"
    folder.mkdir(parents=True)
    np.savez(folder / "trace.npz", indices=np.arange(3), iterations=np.arange(5),
             kendall_tau=np.ones((3, 4)), topk_intersection=np.ones((3, 5)))
    with pytest.raises(DataError, match=r"trace\.npz: kendall_tau and topk_intersection must be"):
        report.load_trace(tmp_path, "mnist", "natural")


def test_eps_curves_only_where_several_eps_exist(results):
    root, _, _ = results
    table = report.collect_table(root, DATASETS, METHODS)
    points = report.collect_eps_points({"topk": table})
    assert set(points["eps"]) == {0.3} and report.plot_eps_curves(points) is None
    wider = points.assign(eps=0.1, mean=points["mean"] + 0.1, ci_low=points["ci_low"] + 0.1,
                          ci_high=points["ci_high"] + 0.1)
    fig = report.plot_eps_curves(pd.concat([points, wider]))
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["AA, PGD (%)", "IN (%)"]


def test_figures_are_embedded_with_alt_text(results):
    root, _, _ = results
    fig = report.plot_forest(report.collect_table(root, ["mnist"], METHODS))
    text = report.figure_html(fig, "A forest plot's 'alt' text", caption="Under `topk`.")
    assert "alt='A forest plot&#x27;s &#x27;alt&#x27; text'" in text and "<code>topk</code>" in text
    import base64

    png = base64.b64decode(re.search(r"base64,([^']+)'", text).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- notebooks

def _run_notebook(name: str, out_dir: Path, parameters: dict) -> tuple[dict, str]:
    papermill = pytest.importorskip("papermill", reason="papermill is not installed (workflow extras)")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (workflow extras)")
    exporters = pytest.importorskip("nbconvert.exporters", reason="nbconvert is not installed (workflow extras)")
    executed = out_dir / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(executed), parameters=parameters,
                               kernel_name="python3", progress_bar=False, cwd=str(out_dir))
    notebook = nbformat.read(executed, as_version=4)
    exporter = exporters.HTMLExporter(exclude_input=True, template_file=str(HTML_TEMPLATE))
    body, _ = exporter.from_notebook_node(notebook)
    return notebook, body


def _assert_clean(notebook) -> None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            assert not (output["output_type"] == "stream" and output["name"] == "stderr"), output["text"]


def _images(body: str) -> list[str]:
    return re.findall(r"<img [^>]*>", body)


def test_notebooks_render_tables_without_errors(results, tmp_path):
    root, written, _ = results
    common = {"results_dir": str(root), "methods": json.dumps(METHODS), "attacks": '["topk"]',
              "config_name": "synthetic"}
    notebook, body = _run_notebook("summary.ipynb", tmp_path,
                                   {**common, "datasets": json.dumps(DATASETS + ["gtsrb"])})
    _assert_clean(notebook)
    assert "attrrob-paper" in body and "71.36 [1]" in body and "missing" in body
    assert "approximately 3% to 9%" in body and "random_sign" in body and "synthetic" in body
    assert "Δ vs IG-SUM-NORM" in body and "gradient masking" in body and "No results yet for GTSRB" in body
    # Every table states its protocol (results, Δ, attack vs noise, compute: four times per data set).
    assert body.count("Protocol, MNIST") == 4 and "1000 training steps" in body
    images = _images(body)
    # forest plot, attack strength (MNIST only: Fashion-MNIST predates trace.npz), τ violins, 2 training figures
    assert len(images) == 5, [i[:80] for i in images]
    assert all(re.search(r"alt=[\"'][^\"']{20,}", i) for i in images)  # every image says what it shows
    assert "No results yet for the attack trace on Fashion-MNIST" in body
    assert "cdnjs" not in body and "require.min.js" not in body  # offline: nothing fetched from a CDN
    assert "e+0" not in body.split("Compute")[-1]  # the compute table in human units

    notebook, body = _run_notebook("dataset.ipynb", tmp_path, {**common, "dataset": "mnist"})
    _assert_clean(notebook)
    assert "attrrob-paper" in body and "71.36 [1]" in body
    assert "Fashion-MNIST" not in body
    assert body.count("Protocol, MNIST") == 4  # results, Δ, attack vs noise, compute
    images = _images(body)
    assert len(images) == 6  # forest, saliency grid, attack strength, 2 violins, training curves
    assert all(re.search(r"alt=[\"'][^\"']{20,}", i) for i in images)
    assert "Attacked images left unchanged: Natural 2 of" in body  # the step-0 images, with their cause
    assert "Of these, 4 had no eligible iterate" in body  # random_sign: two per method, both methods


def test_example_grid_shows_colour_images_in_their_range():
    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, size=(2, 3, 32, 32)).astype(np.float32)  # GTSRB: [0, 255]
    maps = rng.random((2, 32 * 32)).astype(np.float32)
    examples = {"natural": {"indices": np.array([7, 9]), "labels": np.array([1, 2]), "original": original,
                            "attacked": np.clip(original + 8, 0, 255), "saliency_original": maps,
                            "saliency_attacked": maps[::-1].copy(), "height": 32, "width": 32}}
    fig = report.plot_example_grid(examples, "gtsrb", max_examples=1)
    shown = fig.axes[0].get_images()[0].get_array()  # the input row
    np.testing.assert_allclose(shown, np.transpose(original[0], (1, 2, 0)) / 255.0)
    # Both maps of the image share the figure's one colour scale, so that their intensities compare.
    top = float(np.percentile(np.concatenate([maps[0], maps[1]]), report.figures.SALIENCY_PERCENTILE))
    for panel in (1, 2):
        assert fig.axes[panel].get_images()[0].get_clim() == pytest.approx((0.0, top))


def test_collect_timings_reads_recorded_costs_and_shows_human_units(results):
    root, written, _ = results
    timings = report.collect_timings(root, DATASETS, METHODS, ["topk", "random"])
    assert len(timings) == len(written)  # the method without results is left out
    first = timings.iloc[0]
    assert first["train_steps"] == 1000 and first["device"] == "cpu"
    assert first["train_wall_time_s"] == 2.0 and first["topk_images_per_s"] == 12.0
    assert first["random_images_per_s"] is None
    assert [report.format_duration(s) for s in (0.000599 * 3600, 8.51e-05 * 3600, 75, 600, 5400, 7200)] == [
        "2.2 s", "0.3 s", "75 s", "10.0 min", "1.5 h", "2.0 h"]
    assert [report.format_rate(v) for v in (5.08e3, 12.0, 250.4, 1234567.0, None)] == [
        "5,080", "12.0", "250", "1,234,567", "–"]
    html = report.timings_html(timings.assign(train_wall_time_s=5400.0, train_steps=25000), ["topk", "random"])
    assert "<td>1.5 h</td>" in html and "<td>25,000</td>" in html and "<td>500</td>" in html
    assert "<td>3.0 s<div class='ci'>12.0 images/s</div></td>" in html  # topk: time, rate below it
    assert "e+0" not in html and "Data set" in html  # two data sets: a data-set column
    assert "<td>–</td>" in html  # no random attack was run
    assert "<th>topk attack</th><th>random attack</th>" in html


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


def test_collect_results_readme_has_the_table_and_the_paired_comparison(tmp_path):
    from attrrob.cli import collect_results

    root = tmp_path / "results"
    for j, method in enumerate(("natural", "ig_sum_norm", "sarkar")):
        _write_method(root, "mnist", method, seed=40 + j, new=True)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{collect_results.README_START}\nold\n{collect_results.README_END}\nafter\n")
    collect_results.main(["--results-dir", str(root), "--datasets", "mnist", "--methods", "natural",
                          "ig_sum_norm", "sarkar", "--readme", str(readme), "--table", str(tmp_path / "table.md")])
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{collect_results.README_END}\nafter\n")
    assert "| MNIST | Sarkar (CACR + WACR) |" in text and "Paired comparison on the same attacked images" in text
    frames = {m: report.load_per_example(root, "mnist", m) for m in ("natural", "ig_sum_norm", "sarkar")}
    for a, b in (("sarkar", "ig_sum_norm"), ("ig_sum_norm", "natural")):
        line = next(row for row in text.splitlines()
                    if row.startswith(f"| MNIST | {report.method_name(a)} − {report.method_name(b)} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        ins = report.paired.paired_difference(frames[a], frames[b], "topk_intersection")
        tau = report.paired.paired_difference(frames[a], frames[b], "kendall_tau")
        assert cells[2] == str(ins["n"]) and ins["n"] > 20
        assert cells[3] == f"{100 * ins['mean']:+.2f} [{100 * ins['ci_low']:+.2f}, {100 * ins['ci_high']:+.2f}]"
        assert cells[4] == f"{tau['mean']:+.3f} [{tau['ci_low']:+.3f}, {tau['ci_high']:+.3f}]"
    assert (tmp_path / "table.md").read_text() in text
    collect_results.main(["--results-dir", str(root), "--datasets", "mnist", "--methods", "natural", "sarkar",
                          "--metrics", str(tmp_path / "metrics.json")])
    written = json.loads((tmp_path / "metrics.json").read_text())["mnist"]
    auto = json.loads((root / "mnist/natural/accuracy/summary.json").read_text())["autoattack_accuracy"]
    assert written["natural"]["AA_autoattack"] == pytest.approx(auto["mean"])
    assert "AA_autoattack" not in written["sarkar"]  # null: AutoAttack not run


def test_examples_of_length_zero_draw_no_grid():
    empty = {"indices": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64),
             "original": np.zeros((0, 1, 8, 8), np.float32), "attacked": np.zeros((0, 1, 8, 8), np.float32),
             "saliency_original": np.zeros((0, 64), np.float32), "saliency_attacked": np.zeros((0, 64), np.float32),
             "height": 8, "width": 8}
    assert report.plot_example_grid({"natural": empty, "madry": None}, "digits") is None


def test_regularizer_magnitudes_from_training_logs():
    steps = np.arange(50, 1001, 50)  # 20 logged steps: the windows are the first and last 2
    cacr = np.linspace(-1e-6, -3e-6, len(steps))
    wacr = np.linspace(40.0, 4.0, len(steps))
    logs = {"natural": pd.DataFrame({"step": steps, "ce": 1.0, "total": 1.0}),
            "sarkar": pd.DataFrame({"step": steps, "ce": 9.0, "cacr": cacr, "wacr": wacr, "total": 1.0}),
            "ig_sum_norm": pd.DataFrame({"step": steps, "ce": 5.0, "ig_l1": 50.0, "total": 1.0}),
            "madry": None}
    settings = {"sarkar": {"lam": 0.1}, "ig_sum_norm": {"beta": 0.1, "lam": 7.0}}
    frame = report.regularizer_magnitudes(logs, settings)
    assert list(frame["method"]) == ["sarkar", "sarkar", "ig_sum_norm"]
    cacr_row, wacr_row, ig_row = (frame.iloc[i] for i in range(3))
    assert cacr_row["start"] == pytest.approx(cacr[:2].mean()) and cacr_row["end"] == pytest.approx(cacr[-2:].mean())
    assert wacr_row["min"] == pytest.approx(4.0) and wacr_row["max"] == pytest.approx(40.0)
    ratio = abs(cacr[-2:].mean()) / wacr[-2:].mean()
    assert cacr_row["cacr_over_wacr_end"] == pytest.approx(ratio) == wacr_row["cacr_over_wacr_end"]
    share = 0.1 * wacr[-2:].mean() / (9.0 + 0.1 * wacr[-2:].mean())
    assert wacr_row["weighted_share_end"] == pytest.approx(share)
    # ig_sum_norm is weighed by β, not by λ
    assert (ig_row["weight_name"], ig_row["weight"]) == ("β", 0.1)
    assert ig_row["weighted_share_end"] == pytest.approx(5.0 / 10.0) and math.isnan(ig_row["cacr_over_wacr_end"])
    html = report.regularizer_html(frame)
    assert html.count("<tr>") == 4 and "R_CACR" in html and "λ = 0.1" in html and "β = 0.1" in html
    assert "No method" in report.regularizer_html(report.regularizer_magnitudes({"natural": logs["natural"]}, {}))


def test_published_numbers_only_beside_results_of_the_papers_protocol(tmp_path):
    root = tmp_path / "results"
    _write_method(root, "mnist", "ig_norm", seed=3, new=True)
    table = report.collect_table(root, ["mnist"], ["ig_norm"])
    assert table.iloc[0]["IN_published"] == pytest.approx(0.7136) and table.iloc[0]["protocol_differs"] == ""
    # the same results evaluated at ε = 0.1 (the protocol: 0.3), and attacked with k = 75
    for kind, extra in (("accuracy", {"eps": 0.1}), ("attack_topk", {"eps": 0.1, "k_attack": 75})):
        path = root / "mnist" / "ig_norm" / kind / "summary.json"
        doc = json.loads(path.read_text())
        doc["settings"].update(extra)
        path.write_text(json.dumps(doc))
    table = report.collect_table(root, ["mnist"], ["ig_norm"])
    row = table.iloc[0]
    assert all(math.isnan(row[f"{key}_published"]) for key in ("NA", "AA", "IN", "CO"))
    assert row["protocol_differs"] == "ε 0.1 (protocol 0.3); ε 0.1 (protocol 0.3); k_attack 75 (protocol 200)"
    note = "MNIST: evaluated off the paper's protocol (k_attack 75 (protocol 200), ε 0.1 (protocol 0.3))"
    assert note in report.markdown_table(table) and "71.36" not in report.markdown_table(table)
    import html as html_module

    assert note in html_module.unescape(report.paper_table_html(table))
    # a data set without published numbers gets no such note: nothing was left out
    _write_method(root, "digits", "ig_norm", seed=4, new=True)
    digits = report.collect_table(root, ["digits"], ["ig_norm"])
    assert digits.iloc[0]["protocol_differs"] != "" and report.protocol_notes(digits) == []


def test_fewer_attack_runs_than_the_protocols_are_off_protocol(tmp_path):
    """RAR keeps the best of 3 runs; a result of 1 run is listed as off the protocol, unless its
    zero-direction mode (stay) makes the attack deterministic, where 1 run is the protocol."""
    root = tmp_path / "results"
    _write_method(root, "mnist", "ig_norm", seed=3, new=True)
    path = root / "mnist" / "ig_norm" / "attack_topk" / "summary.json"
    doc = json.loads(path.read_text())
    for runs, mode, differs in ((3, "random_sign", ""), (1, "random_sign", "runs 1 (protocol 3)"), (1, "stay", "")):
        doc["settings"].update(runs=runs, zero_direction=mode)
        path.write_text(json.dumps(doc))
        table = report.collect_table(root, ["mnist"], ["ig_norm"])
        assert table.iloc[0]["protocol_differs"] == differs
    doc["settings"].update(runs=1, zero_direction="random_sign")
    path.write_text(json.dumps(doc))
    table = report.collect_table(root, ["mnist"], ["ig_norm"])
    assert "runs 1 (protocol 3)" in report.markdown_table(table) and math.isnan(table.iloc[0]["IN_published"])


def test_flower_table_names_the_aa_protocol_of_each_row(tmp_path):
    """The Sarkar authors evaluated Flower AA with PGD on their training loss, RAR with PGD on CE: the
    Flower table says which one produced each row (older summaries without the field ran CE)."""
    root = tmp_path / "results"
    for method in ("madry", "sarkar"):
        _write_method(root, "flower", method, seed=3, new=True)
    path = root / "flower" / "sarkar" / "accuracy" / "summary.json"
    doc = json.loads(path.read_text())
    doc["pgd_protocol"] = "PGD-7 on CE + 0.1·‖IG_approx‖₁ (5 of 50 points)"
    path.write_text(json.dumps(doc))
    shown, _ = report.display_table(report.collect_table(root, ["flower"], ["madry", "sarkar"]))
    assert list(shown["AA protocol"]) == ["PGD on CE", "PGD-7 on CE + 0.1·‖IG_approx‖₁ (5 of 50 points)"]
    _write_method(root, "digits", "madry", seed=4, new=True)
    digits, _ = report.display_table(report.collect_table(root, ["digits"], ["madry"]))
    assert "AA protocol" not in digits.columns  # CE only, not Flower: nothing to tell apart
