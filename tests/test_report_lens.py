"""The reports' LENS / noise-control comparison (attrrob.report.lens) and its collect-results output.

Synthetic result files; the oracle for the paired difference is numpy + scipy's t quantile on
differences matched by test index by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attrrob import outputs, report
from attrrob.cli import collect_results

FIELDS = ("topk_intersection", "kendall_tau", "spearman_rho", "mass_center_shift", "linf", "lens_recall",
          "lens_precision", "topk_div_intersection", "lens_recall_div", "lens_precision_div")


def _ci(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return {"mean": float(values.mean()), "ci_low": float(values.mean() - half),
            "ci_high": float(values.mean() + half), "n": len(values)}


def _write(root, method: str, attack: str, values: dict[str, np.ndarray], attacked: np.ndarray) -> None:
    folder = root / "digits" / method / f"attack_{attack}"
    rows = []
    for index in range(len(attacked)):
        row = {"index": index, "label": 1, "prediction": 1 if attacked[index] else 2,
               "status": "attacked" if attacked[index] else "skipped_misclassified",
               "restart": 0, "step": 1, "zero_direction": 0}
        row.update({f: (float(values[f][index]) if attacked[index] else None) for f in FIELDS})
        rows.append(row)
    outputs.write_text(folder / "per_example.csv", pd.DataFrame(rows).to_csv(index=False))
    summary = {"dataset": "digits", "method": method, "attack": attack, "settings": {"eps": 0.1, "k_metric": 8},
               "zero_direction": "random_sign", "zero_direction_fraction": 0.0,
               "counts": {"n_total": len(attacked), "n_attacked": int(attacked.sum()),
                          "n_skipped": int((~attacked).sum()), "n_zero_direction": 0},
               "metrics": {f: _ci(values[f][attacked]) for f in FIELDS},
               "lens": {"window": 3, "k": 8, "ties": "expected", "topk_div_max_k": 8, "n_topk_div_completed": 0}}
    outputs.write_json(folder / "summary.json", summary)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("lens_results")
    rng = np.random.default_rng(0)
    attacked = rng.random(30) < 0.85
    written = {}
    for method, drop in (("natural", 0.4), ("madry", 0.0)):
        noise = {f: rng.uniform(0.6, 1.0, 30) for f in FIELDS}
        # natural: the attack lowers every metric by ~drop below noise; madry: about as much as noise.
        attack = {f: noise[f] - drop * rng.uniform(0.5, 1.0, 30) + rng.normal(0, 0.02, 30) for f in FIELDS}
        _write(root, method, "noise", noise, attacked)
        _write(root, method, "topk", attack, attacked)
        written[method] = (attack, noise)
    return root, written, attacked


def test_comparison_copies_means_and_pairs_by_image(results):
    root, written, attacked = results
    frame = report.lens_comparison(root, ["digits"], ["natural", "madry", "sarkar"], "topk")
    assert list(frame["method"]) == ["natural", "madry", "sarkar"]
    sarkar = frame.iloc[2]
    assert not sarkar["attack_found"] and math.isnan(sarkar["lens_recall_diff_mean"])
    for i, method in enumerate(("natural", "madry")):
        attack, noise = written[method]
        row = frame.iloc[i]
        for field, _, _ in report.lens.COMPARED:
            assert row[f"{field}_attack_mean"] == pytest.approx(attack[field][attacked].mean())
            assert row[f"{field}_control_mean"] == pytest.approx(noise[field][attacked].mean())
            want = _ci(attack[field][attacked] - noise[field][attacked])
            for f in ("mean", "ci_low", "ci_high", "n"):
                assert row[f"{field}_diff_{f}"] == pytest.approx(want[f])
    assert frame.iloc[0]["lens_recall_diff_ci_high"] < 0  # natural: the attack adds a drop over noise
    assert frame.iloc[0]["window"] == 3 and frame.iloc[0]["k"] == 8


def test_markdown_html_and_forest(results):
    root, _, _ = results
    frame = report.lens_comparison(root, ["digits"], ["natural", "madry", "sarkar"], "topk")
    text = report.lens_markdown(frame)
    lines = [line for line in text.splitlines() if line.startswith("| digits")]
    assert len(lines) == 6  # sarkar has no results: left out
    assert [line.split(" | ")[2] for line in lines[:3]] == ["topk attack", "noise (same ε)", "topk − noise"]
    assert "k = 8 and a 3×3 window" in text and "LENS-recall (%)" in text
    body = report.lens_html(frame)
    assert body.count("<tr>") == 7 and "rowspan='3'" in body and "<b>-" in body
    fig = report.plot_noise_forest(frame)
    axes = fig.axes
    assert len(axes) == len(report.lens.COMPARED)
    # per panel and method: an interval line and a marker for the attack and the control
    assert all(len(ax.lines) == 2 * 2 * 2 for ax in axes)
    empty = frame.assign(control_found=False, **{f"{f}_attack_mean": math.nan for f in report.lens._LENS_ONLY})
    assert report.plot_noise_forest(empty) is None and "No LENS" in report.lens_markdown(empty)


def test_collect_results_carries_lens_and_the_noise_section(results, tmp_path):
    root, written, attacked = results
    collect_results.main(["--results-dir", str(root), "--datasets", "digits", "--methods", "natural", "madry",
                          "--attacks", "topk", "noise", "--metrics", str(tmp_path / "m.json"),
                          "--table", str(tmp_path / "t.md")])
    doc = json.loads((tmp_path / "m.json").read_text())
    entry = doc["digits"]["natural"]["topk"]
    assert entry["lens_recall"] == pytest.approx(written["natural"][0]["lens_recall"][attacked].mean())
    assert set(entry) >= {"IN", "CO", "rho", "lens_recall", "lens_precision", "topk_div_intersection"}
    table = (tmp_path / "t.md").read_text()
    assert "What the `topk` attack adds over the `noise` control" in table
    assert table.count("topk − noise") == 2 and "noise − noise" not in table


def test_over_seeds_the_comparison_is_a_t_interval_over_each_seeds_paired_mean(tmp_path):
    """Three seed trees: each side's cell is the mean over seeds of the seed's mean with scipy's t
    interval over seeds; attack − noise is each seed's mean per-image difference (a plain loop over
    matched images), then over seeds; a seed without a method's results counts out."""
    rng = np.random.default_rng(3)
    root = tmp_path / "results"
    attacked = rng.random(25) < 0.8
    diffs, attacks = [], []
    for seed in (0, 1, 2):
        noise = {f: rng.uniform(0.5, 1.0, 25) for f in FIELDS}
        attack = {f: noise[f] - rng.uniform(0.0, 0.3, 25) for f in FIELDS}
        _write(root / f"seed~{seed}", "natural", "noise", noise, attacked)
        _write(root / f"seed~{seed}", "natural", "topk", attack, attacked)
        diffs.append(np.mean([attack["topk_intersection"][i] - noise["topk_intersection"][i]
                              for i in range(25) if attacked[i]]))
        attacks.append(attack["lens_recall"][attacked].mean())
    _write(root / "seed~0", "madry", "noise", {f: np.full(25, 0.9) for f in FIELDS}, attacked)
    _write(root / "seed~0", "madry", "topk", {f: np.full(25, 0.8) for f in FIELDS}, attacked)
    frame = report.seeds.lens(root, [0, 1, 2], ["digits"], ["natural", "madry"], "topk")
    natural, madry = frame.iloc[0], frame.iloc[1]
    want = _ci(diffs)
    for f in ("mean", "ci_low", "ci_high"):
        assert natural[f"topk_intersection_diff_{f}"] == pytest.approx(want[f])
    assert natural["topk_intersection_diff_n_seeds"] == 3
    assert natural["topk_intersection_diff_n"] == 3 * attacked.sum()  # paired images summed over seeds
    assert (natural["lens_recall_attack_ci_low"], natural["lens_recall_attack_ci_high"]) == (
        pytest.approx(_ci(attacks)["ci_low"]), pytest.approx(_ci(attacks)["ci_high"]))
    # madry: one seed of three has results, so a mean and no interval over seeds
    assert madry["topk_intersection_diff_mean"] == pytest.approx(-0.1)
    assert math.isnan(madry["topk_intersection_diff_ci_low"]) and madry["topk_intersection_diff_n_seeds"] == 1
    text = report.lens_markdown(frame)
    assert "Means over 3 training seeds" in text and "with its t interval over seeds" in text
    listed = report.seeds.lens_per_seed_markdown(frame)
    line = next(row for row in listed.splitlines() if "Madry PGD-AT:" in row)
    assert "IN (%) seed 0: -10.00 [-10.00, -10.00]; seed 1: –; seed 2: –" in line
    # One seed: exactly the one run's comparison and note.
    one = report.seeds.lens(root, [0], ["digits"], ["natural"], "topk")
    plain = report.lens_comparison(root / "seed~0", ["digits"], ["natural"], "topk")
    pd.testing.assert_frame_equal(one, plain)
    assert report.lens_markdown(one) == report.lens_markdown(plain) and report.seeds.lens_per_seed_markdown(one) == ""
