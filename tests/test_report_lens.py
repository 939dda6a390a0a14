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
