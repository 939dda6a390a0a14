"""The study's sentences (attrrob.study.findings) against independent computations on synthetic
per-seed result trees: means and t intervals over seeds from scipy, the paired ΔIN by a plain loop
over the per-example files, the pooled zero-direction share by counting rows, the regulariser's
share of the loss by its closed form; and the wording of "resolved" follows the oracle's interval."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from test_report import _write_method
from test_report_seeds import _paired_mean

from attrrob import outputs
from attrrob.study.findings import Findings

METHODS = ["natural", "madry", "ig_sum_norm", "sarkar"]


def _t(values):
    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean(), values.mean() - half, values.mean() + half


def _sarkar_log(folder, lam, seed):
    """A Sarkar training log with its two regulariser terms, and the λ it was trained with."""
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 1001, 100)
    log = pd.DataFrame({"step": steps, "lr": 1e-3, "ce": 1.5 * np.exp(-steps / 400) + 0.1 + rng.uniform(0, 0.05, 11),
                        "cacr": rng.uniform(1e-5, 1e-4, 11), "wacr": 20 + rng.uniform(0, 10, 11),
                        "batch_accuracy": 0.9, "examples_per_s": 100.0})
    log["total"] = log["ce"] + lam * (log["cacr"] + log["wacr"])
    outputs.write_text(folder / "train_log.csv", log.to_csv(index=False))
    metrics = json.loads((folder / "train_metrics.json").read_text())
    metrics["settings"] = {"lam": lam}
    outputs.write_json(folder / "train_metrics.json", metrics)
    return log


@pytest.fixture
def three_seeds(tmp_path):
    root = tmp_path / "results"
    logs = {}
    for seed in (0, 1, 2):
        for offset, method in enumerate(METHODS):
            _write_method(root / f"seed~{seed}", "mnist", method, seed=17 * seed + offset, n_images=60)
        logs[seed] = _sarkar_log(root / f"seed~{seed}/mnist/sarkar", 0.5, seed)
    return root, logs


def test_baselines_are_the_means_and_t_intervals_over_seeds(three_seeds):
    root, _ = three_seeds
    text = Findings(root, ["mnist"], METHODS, ["topk"], seeds=[0, 1, 2]).baselines("mnist")
    for method, name in (("madry", "Madry PGD-AT"), ("natural", "Natural")):
        aa = [json.loads((root / f"seed~{s}/mnist/{method}/accuracy/summary.json").read_text())
              ["adversarial_accuracy"]["mean"] for s in (0, 1, 2)]
        mean, low, high = _t(aa)
        low, high = max(low, 0.0), min(high, 1.0)  # the tables' clipping to an accuracy's range
        assert f"{name}: AA {100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]%" in text
    assert "3 seeds, t interval over seeds" in text


def test_paired_differences_follow_a_plain_loop_and_say_whether_seeds_resolve_them(three_seeds):
    root, _ = three_seeds
    sentences = Findings(root, ["mnist"], METHODS, ["topk"], seeds=[0, 1, 2]).paired("mnist")
    sentence = next(s for s in sentences if s.startswith("**Sarkar (CACR + WACR) − IG-SUM-NORM"))
    deltas = [100 * _paired_mean(root / f"seed~{s}", "sarkar", "ig_sum_norm") for s in (0, 1, 2)]
    mean, low, high = _t(deltas)
    assert f"`topk` {mean:+.2f} [{low:+.2f}, {high:+.2f}] points" in sentence
    assert "per seed " + ", ".join(f"{d:+.2f}" for d in deltas) in sentence
    assert ("excludes 0" if low > 0 or high < 0 else "includes 0") in sentence
    # ig_norm has no results: no sentence about it.
    assert not any("IG-NORM −" in s for s in sentences)


def test_one_seed_claims_nothing_across_seeds(three_seeds):
    root, _ = three_seeds
    findings = Findings(root, ["mnist"], METHODS, ["topk"], seeds=[0])
    (sentence,) = [s for s in findings.paired("mnist") if s.startswith("**Sarkar")]
    delta = 100 * _paired_mean(root / "seed~0", "sarkar", "ig_sum_norm")
    assert f"`topk` {delta:+.2f} [" in sentence  # the interval over the paired images
    assert "1 seed, so no interval over seeds" in sentence and "one seed so far" in sentence


def test_the_zero_direction_share_pools_every_attacked_image(three_seeds):
    root, _ = three_seeds
    attacked = zero = 0
    for seed in (0, 1, 2):
        for method in METHODS:
            frame = pd.read_csv(root / f"seed~{seed}/mnist/{method}/attack_topk/per_example.csv")
            done = frame[frame["status"] == "attacked"]
            attacked, zero = attacked + len(done), zero + int(done["zero_direction"].sum())
    text = Findings(root, ["mnist"], METHODS, ["topk"], seeds=[0, 1, 2]).walk("mnist")
    assert f"{100 * zero / attacked:.1f}% at k = 200 (`topk`)" in text


def test_the_regularisers_share_of_the_loss_is_its_closed_form(three_seeds):
    root, logs = three_seeds
    shares = []
    for log in logs.values():
        last = log.iloc[-2:]  # the last 10% of 11 logged steps, rounded up: 2 rows
        weighted = 0.5 * last["wacr"].mean()
        shares.append(weighted / (last["ce"].mean() + weighted))
    mean, low, high = _t(shares)
    text = Findings(root, ["mnist"], METHODS, ["topk"], seeds=[0, 1, 2]).regularizers("mnist")
    assert f"λ·R_WACR (λ = 0.5): {100 * mean:.2f} [{100 * low:.2f}, {100 * high:.2f}]% (3 seeds)" in text
    # R_CACR's share is near zero: its t interval over 3 seeds reaches below 0 and is clipped there.
    cacr = [0.5 * log.iloc[-2:]["cacr"].mean() / (log.iloc[-2:]["ce"].mean() + 0.5 * log.iloc[-2:]["cacr"].mean())
            for log in logs.values()]
    mean, low, high = _t(cacr)
    assert low < 0
    assert f"λ·R_CACR (λ = 0.5): {100 * mean:.2f} [0.00, {100 * high:.2f}]% (3 seeds)" in text
    ratio = np.median([log.iloc[-2:]["cacr"].mean() / log.iloc[-2:]["wacr"].mean() for log in logs.values()])
    assert f"|R_CACR| / |R_WACR| at the end: {ratio:.2g} (median)" in text


def test_no_committed_run_gives_no_sentence(tmp_path):
    for seed in (0, 1):
        (tmp_path / f"results/seed~{seed}").mkdir(parents=True)
    assert Findings(tmp_path / "results", ["mnist"], METHODS, ["topk", "noise"], seeds=[0, 1]).markdown() == ""


def test_a_method_with_one_of_three_seeds_shows_that_seeds_interval_over_images(tmp_path):
    root = tmp_path / "results"
    for seed in (0, 1, 2):
        _write_method(root / f"seed~{seed}", "mnist", "ig_sum_norm", seed=5 * seed, n_images=60)
    _write_method(root / "seed~0", "mnist", "sarkar", seed=99, n_images=60)
    (sentence,) = [s for s in Findings(root, ["mnist"], METHODS, ["topk"], seeds=[0, 1, 2]).paired("mnist")
                   if s.startswith("**Sarkar")]
    frames = [pd.read_csv(root / "seed~0/mnist" / m / "attack_topk/per_example.csv") for m in ("sarkar", "ig_sum_norm")]
    values = [{int(r["index"]): r["topk_intersection"] for _, r in f.iterrows() if r["status"] == "attacked"}
              for f in frames]
    mean, low, high = _t([100 * (values[0][i] - values[1][i]) for i in values[0] if i in values[1]])
    assert (f"`topk` {mean:+.2f} [{low:+.2f}, {high:+.2f}] points (1 seed, so no interval over seeds, "
            "interval over its paired images; one seed so far") in sentence


def test_a_sweep_in_progress_lists_each_points_loss_shares_and_that_its_choice_waits(tmp_path):
    test = {"NA": {"mean": 0.98}, "AA": {"mean": 0.884},
            "IN": {"mean": 0.861, "ci_low": 0.851, "ci_high": 0.871}, "τ": {"mean": 0.4342}}
    missing = {k: {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan} for k in test}
    summary = {"method": "sarkar", "attack": "topk", "selection": None,
               "pending": {"attack": "topk_select", "metric": "IN", "num_examples": 200, "rule": "max"},
               "points": [{"label": "lam~0.1", "chosen": False, "test": test,
                           "paired": {"reference": "ig_sum_norm", "mean": 0.0008, "ci_low": -0.0015, "ci_high": 0.0031,
                                      "images": 535, "interval": "over the paired test images, 1 seed"},
                           "loss_shares": {"λ·R_CACR": {"mean": 2.25e-6, "n": 1}, "λ·R_WACR": {"mean": 0.0622, "n": 1}}},
                          {"label": "lam~0.5", "chosen": False, "test": missing, "loss_shares": {}}]}
    text = Findings(tmp_path, ["mnist"], ["sarkar"], ["topk"], seeds=[0]).sweep(summary)
    assert text == ("**Sarkar (CACR + WACR)'s sweep** (test numbers under `topk`, and each regulariser's weighted "
                    "share of the loss at the end of training as in the last item; one entry per point): lam~0.1: "
                    "IN 86.1 [85.1, 87.1]%, τ 0.434, AA 88.4%, ΔIN vs IG-SUM-NORM +0.08 [-0.15, +0.31] points (535 "
                    "paired images; interval over the paired test images, 1 seed), λ·R_CACR 0.000225%, λ·R_WACR "
                    "6.22%. The choice on "
                    "validation is made once every point is run (1 of 2 so far).")


@pytest.mark.parametrize("chosen, swept, note", [
    ("lam~2.5", [0.1, 0.5, 2.5], "λ (lam) = 2.5 is the largest value swept"),
    ("lam~0.1", [0.1, 0.5, 2.5], "λ (lam) = 0.1 is the smallest value swept"),
    ("lam~0.5", [0.1, 0.5, 2.5], None),
    ("lam~2.5", [0.5, 2.5], None),  # two values bracket nothing either way: no note
])
def test_a_choice_at_an_end_of_the_sweep_says_the_sweep_does_not_bracket_the_best_value(tmp_path, chosen, swept, note):
    from attrrob.report import sweeps

    test = {"NA": {"mean": 0.98}, "AA": {"mean": 0.9},
            "IN": {"mean": 0.87, "ci_low": 0.86, "ci_high": 0.88}, "τ": {"mean": 0.48}}
    points = [{"label": f"lam~{v:g}", "point": [["train", "lam", v]], "chosen": f"lam~{v:g}" == chosen,
               "test": test, "loss_shares": {}, "validation": {"value": 0.873}} for v in swept]
    summary = {"method": "sarkar", "attack": "topk", "swept": [["train", "lam", swept]], "points": points,
               "pending": None, "selection": {"metric": "IN", "num_examples": 200, "split": "validation",
                                              "rule": "max of validation IN", "chosen": {"label": chosen}}}
    text = Findings(tmp_path, ["mnist"], ["sarkar"], ["topk"], seeds=[0]).sweep(summary)
    assert f"by max of validation IN: **{chosen}** (validation IN 87.3%)" in text
    if note is None:
        assert sweeps.edge_note(summary) == "" and "value swept" not in text
    else:
        assert text.endswith(f"**{chosen}** (validation IN 87.3%); {note}: the sweep does not bracket the best "
                             "value, and the selection metric may go on rising past it.")
