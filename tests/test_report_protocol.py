"""Each report table's protocol line and the verdict on Sarkar et al.'s claim (issue 21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attrrob import outputs
from attrrob.report import paired, protocol

TRAIN = {"eps": 0.1, "pgd_steps": 10, "seed": 4557077}
ACCURACY = {"eps": 0.1, "steps": 20}
ATTACK = {"eps": 0.1, "iterations": 20, "ig_steps": 10, "k_attack": 200, "k_metric": 100, "num_examples": 550}


def _write(root, dataset, method, steps, topk, train=TRAIN):
    folder = root / dataset / method
    outputs.write_json(folder / "train_metrics.json", {"steps": steps, "settings": {**train, "steps": steps}})
    ci = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": len(topk)}
    outputs.write_json(folder / "accuracy" / "summary.json",
                       {"natural_accuracy": ci, "adversarial_accuracy": ci, "settings": ACCURACY})
    outputs.write_json(folder / "attack_topk" / "summary.json",
                       {"attack": "topk", "settings": ATTACK, "zero_direction": "random_sign", "zero_direction_fraction": 0.0,
                        "counts": {"n_total": len(topk), "n_attacked": len(topk), "n_skipped": 0, "n_zero_direction": 0},
                        "metrics": {key: ci for key in ("topk_intersection", "kendall_tau", "spearman_rho")}})
    n = len(topk)
    frame = pd.DataFrame({"index": range(n), "label": 0, "prediction": 0, "status": "attacked",
                          "topk_intersection": topk, "kendall_tau": topk / 2, "spearman_rho": 0.0,
                          "mass_center_shift": 0.0, "linf": 0.1, "restart": 0, "step": 1, "zero_direction": 0})
    outputs.write_text(folder / "attack_topk" / "per_example.csv", frame.to_csv(index=False))


@pytest.fixture
def mnist(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 200)
    _write(tmp_path, "mnist", "ig_sum_norm", 1000, base)
    _write(tmp_path, "mnist", "sarkar", 1000, base + rng.normal(0.001, 0.01, 200))
    return tmp_path


def test_protocol_line_reads_every_setting_from_the_result_files(mnist):
    line = protocol.protocol_line(mnist, "mnist", ["ig_sum_norm", "sarkar"], "topk")
    for fragment in ("training ε 0.1 with a 10-step inner PGD", "PGD, 1000 training steps",
                     "one training run per method (2 of 2", "PGD accuracy ε 0.1, 20 steps",
                     "`topk` attack ε 0.1, 20 iterations × 10 IG points, k = 200 (IN at k = 100), 550 test images",
                     "Training budgets below the paper's (1000 of 100,000 steps)"):
        assert fragment in line, (fragment, line)


def test_protocol_line_shows_a_range_and_missing_files(mnist):
    _write(mnist, "mnist", "madry", 1000, np.full(5, 0.5), train={**TRAIN, "eps": 0.3})
    line = protocol.protocol_line(mnist, "mnist", ["ig_sum_norm", "sarkar", "madry", "natural"], "topk")
    assert "training ε 0.1–0.3" in line and "(3 of 4" in line
    digits = protocol.protocol_line(mnist, "digits", ["natural"], "topk")
    assert "no trained model" in digits and "not a data set of the paper" in digits and "ε ?" in digits


def test_verdict_states_the_paired_interval_against_the_claim(mnist):
    delta = paired.paired_comparison(mnist, ["mnist"], [("sarkar", "ig_sum_norm")])
    a = pd.read_csv(mnist / "mnist/sarkar/attack_topk/per_example.csv")["topk_intersection"]
    b = pd.read_csv(mnist / "mnist/ig_sum_norm/attack_topk/per_example.csv")["topk_intersection"]
    diff = 100 * (a - b)
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    verdict = protocol.claim_verdict(delta)
    assert f"ΔIN {diff.mean():+.2f} [{low:+.2f}, {high:+.2f}] points on 200 paired images" in verdict
    assert "the paper claims +3 to +9" in verdict and "does not show the claimed gain" in verdict


def test_verdict_for_a_gain_inside_the_claim_and_none_without_a_claim(tmp_path):
    base = np.linspace(0.5, 0.8, 50)
    _write(tmp_path, "gtsrb", "ig_sum_norm", 10, base)
    _write(tmp_path, "gtsrb", "sarkar", 10, base + 0.05 + np.linspace(-0.001, 0.001, 50))
    _write(tmp_path, "digits", "ig_sum_norm", 10, base)
    _write(tmp_path, "digits", "sarkar", 10, base + 0.05)
    delta = paired.paired_comparison(tmp_path, ["gtsrb", "digits"], [("sarkar", "ig_sum_norm")])
    verdict = protocol.claim_verdict(delta)
    assert "Verdict, GTSRB" in verdict and "consistent with the claim" in verdict
    assert "digits" not in verdict.lower()  # the paper claims nothing about digits
    assert protocol.claim_verdict(delta.iloc[0:0]) == ""


def test_a_method_without_results_shows_no_published_value_beside_another_protocol(mnist):
    """mnist at ε 0.1 (protocol 0.3): the published numbers of a method not yet run would stand
    alone on the forest plot as if comparable; they are left out, as beside the other rows."""
    from attrrob import report

    table = report.collect_table(mnist, ["mnist"], ["ig_sum_norm", "natural", "madry"], "topk")
    assert all(table["protocol_differs"].iloc[:1].str.contains("ε 0.1 \\(protocol 0.3\\)"))
    assert table[[c for c in table.columns if c.endswith("_published")]].isna().all().all()
    assert "no published value applies" in report.forest_caption(table)
    # With nothing of the data set run, its published values stay (nothing to compare them with yet).
    fresh = report.collect_table(mnist / "nothing_yet", ["mnist"], ["ig_sum_norm", "natural"], "topk")
    assert fresh[[c for c in fresh.columns if c.endswith("_published")]].notna().any().any()
