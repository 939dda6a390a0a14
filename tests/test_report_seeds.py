"""Statistics across training seeds (attrrob.report.seeds via collect-results --seeds), on synthetic
per-seed result trees: the t interval over seeds from scipy, the paired differences by a plain loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from test_report import _write_method

from attrrob.cli import collect_results


def _t_interval(values):
    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def _paired_mean(tree, a, b):
    """Mean over images attacked under both methods of IN(a) − IN(b), as a plain loop."""
    frames = [pd.read_csv(tree / "mnist" / m / "attack_topk" / "per_example.csv") for m in (a, b)]
    values = [{int(r["index"]): r["topk_intersection"] for _, r in f.iterrows() if r["status"] == "attacked"}
              for f in frames]
    diffs = [values[0][i] - values[1][i] for i in values[0] if i in values[1]]
    return sum(diffs) / len(diffs)


def test_three_seeds_give_means_and_t_intervals_over_seeds(tmp_path):
    root = tmp_path / "results"
    for seed in (0, 1, 2):
        for offset, method in enumerate(("ig_sum_norm", "sarkar")):
            _write_method(root / f"seed~{seed}", "mnist", method, seed=10 * seed + offset)
    argv = ["--results-dir", str(root), "--datasets", "mnist", "--methods", "ig_sum_norm", "sarkar",
            "--metrics", str(tmp_path / "m.json"), "--table", str(tmp_path / "t.md"), "--seeds", "0", "1", "2"]
    collect_results.main(argv)
    entry = json.loads((tmp_path / "m.json").read_text())["mnist"]["sarkar"]
    na = [json.loads((root / f"seed~{s}/mnist/sarkar/accuracy/summary.json").read_text())["natural_accuracy"]["mean"]
          for s in (0, 1, 2)]
    assert entry["NA"] == pytest.approx(np.mean(na))
    low, high = _t_interval(na)
    assert (entry["across_seeds"]["NA"]["ci_low"], entry["across_seeds"]["NA"]["ci_high"]) == (
        pytest.approx(low), pytest.approx(high))
    assert [entry["across_seeds"]["NA"]["per_seed"][str(s)]["mean"] for s in (0, 1, 2)] == pytest.approx(na)
    table = (tmp_path / "t.md").read_text()
    assert "3 seeds (0, 1, 2): each cell is the mean over seeds with a 95% t interval over seeds" in table
    # The paired Δ: per seed on the same images, then the mean and t interval over seeds.
    deltas = [100 * _paired_mean(root / f"seed~{s}", "sarkar", "ig_sum_norm") for s in (0, 1, 2)]
    low, high = _t_interval(deltas)
    row = next(line for line in table.splitlines() if line.startswith("| MNIST") and "Sarkar" in line and "−" in line)
    assert f"{np.mean(deltas):+.2f} [{low:+.2f}, {high:+.2f}]" in row
    assert "then their mean over 3 seeds" in table


def test_one_seed_reads_as_the_one_run_table_with_its_note(tmp_path):
    root = tmp_path / "results"
    for offset, method in enumerate(("ig_sum_norm", "sarkar")):
        _write_method(root / "seed~0", "mnist", method, seed=offset)
    common = ["--datasets", "mnist", "--methods", "ig_sum_norm", "sarkar"]
    collect_results.main(["--results-dir", str(root), *common, "--seeds", "0", "--table", str(tmp_path / "a.md"),
                          "--metrics", str(tmp_path / "a.json")])
    collect_results.main(["--results-dir", str(root / "seed~0"), *common, "--table", str(tmp_path / "b.md"),
                          "--metrics", str(tmp_path / "b.json")])
    seeded, plain = (tmp_path / "a.md").read_text(), (tmp_path / "b.md").read_text()
    assert "1 seed: intervals over test images only" in seeded
    assert seeded.replace("\n1 seed: intervals over test images only (none over training seeds).\n", "") == plain
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())


def test_a_missing_seed_folder_is_a_one_line_error(tmp_path, capsys):
    _write_method(tmp_path / "results/seed~0", "mnist", "natural", seed=0)
    with pytest.raises(SystemExit):
        collect_results.main(["--results-dir", str(tmp_path / "results"), "--datasets", "mnist", "--methods",
                              "natural", "--table", str(tmp_path / "t.md"), "--seeds", "0", "3"])
    assert "seed~3 does not exist" in capsys.readouterr().err


def test_the_reports_say_which_seed_they_show():
    from attrrob.report import seeds

    assert seeds.report_note(["0"]) == "1 seed: intervals over test images only (none over training seeds)."
    assert seeds.report_note(["3", "5"]).startswith("These pages' tables show the models of seed 3, one of 2 training seeds")


def test_the_forest_plot_over_seeds_draws_each_seeds_value(tmp_path):
    from attrrob import report

    root = tmp_path / "results"
    for seed in (0, 1, 2):
        for offset, method in enumerate(("ig_sum_norm", "sarkar")):
            _write_method(root / f"seed~{seed}", "mnist", method, seed=10 * seed + offset)
    table, per_seed = report.seeds.table(root, [0, 1, 2], ["mnist"], ["ig_sum_norm", "sarkar"])
    figure = report.plot_forest(table, metrics=("NA",), per_seed=per_seed)
    ax = figure.axes[0]
    dots = [line for line in ax.lines if line.get_markerfacecolor() == "none" and line.get_markersize() < 5]
    na = sorted(100 * json.loads((root / f"seed~{s}/mnist/{m}/accuracy/summary.json").read_text())
                ["natural_accuracy"]["mean"] for s in (0, 1, 2) for m in ("ig_sum_norm", "sarkar"))
    assert sorted(float(line.get_xdata()[0]) for line in dots) == pytest.approx(na)
    # The reports' call: given seed 0's tree (what the notebooks get), the same plot over all seeds.
    assert report.seeds.results_root(root / "seed~0") == root and report.seeds.results_root(root) == root
    whole = report.seeds.forest(root / "seed~0", ["0", "1", "2"], "mnist", ["ig_sum_norm", "sarkar"])
    na_axis = whole.axes[0]
    assert na_axis.get_title() == "NA (%)"
    seed_dots = [line for line in na_axis.lines if line.get_markerfacecolor() == "none" and line.get_markersize() < 5]
    assert sorted(float(line.get_xdata()[0]) for line in seed_dots) == pytest.approx(na)


def test_intervals_over_seeds_stay_within_the_metrics_range():
    """Two seeds at 98.7% and 97.7% accuracy: the raw t interval reaches 104.6%; no accuracy can."""
    from attrrob.intervals import mean_ci
    from attrrob.report.load import METRICS

    low, high = _t_interval([0.987, 0.977])
    assert high > 1.0  # the closed form leaves the range
    clipped = mean_ci([0.987, 0.977], bounds=METRICS["NA"].bounds)
    assert (clipped["ci_low"], clipped["ci_high"]) == (pytest.approx(low), 1.0)
    taus = [-0.95, -0.9, -0.6]
    assert _t_interval(taus)[0] < -1.0 < _t_interval(taus)[1] < 1.0
    tau = mean_ci(taus, bounds=METRICS["CO"].bounds)
    assert tau["ci_low"] == -1.0 and tau["ci_high"] == pytest.approx(_t_interval(taus)[1])


def test_counts_sum_over_the_seeds_that_have_results(tmp_path):
    """A study in progress: ig_sum_norm has 3 seeds, sarkar only seed 0. Sarkar's "attacked /
    evaluated" is seed 0's own counts (read from its per-example file), not "?"."""
    from attrrob.report import seeds

    root = tmp_path / "results"
    for seed in (0, 1, 2):
        _write_method(root / f"seed~{seed}", "mnist", "ig_sum_norm", seed=10 * seed)
    _write_method(root / "seed~0", "mnist", "sarkar", seed=1)
    across, _ = seeds.table(root, [0, 1, 2], ["mnist"], ["ig_sum_norm", "sarkar"])
    rows = {row["method"]: row for _, row in across.iterrows()}

    def counted(tree, method):
        frame = pd.read_csv(tree / "mnist" / method / "attack_topk" / "per_example.csv")
        return len(frame), int((frame["status"] == "attacked").sum())

    assert (rows["sarkar"]["n_total"], rows["sarkar"]["n_attacked"]) == counted(root / "seed~0", "sarkar")
    totals = [counted(root / f"seed~{s}", "ig_sum_norm") for s in (0, 1, 2)]
    assert (rows["ig_sum_norm"]["n_total"], rows["ig_sum_norm"]["n_attacked"]) == tuple(map(sum, zip(*totals)))
    collect_results.main(["--results-dir", str(root), "--datasets", "mnist", "--methods", "ig_sum_norm", "sarkar",
                          "--seeds", "0", "1", "2", "--table", str(tmp_path / "t.md"),
                          "--metrics", str(tmp_path / "m.json")])
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines()
               if line.startswith("| MNIST | Sarkar"))
    total, attacked = counted(root / "seed~0", "sarkar")
    assert f"| {attacked} / {total} |" in row


def test_a_sweeps_intervals_stay_within_the_metrics_range(tmp_path):
    """A sweep point's t interval over two seeds, and one seed's interval over test images, are
    clipped to the metric's range as the tables' are (NA 98.7% and 97.7%: the raw t interval
    reaches 104.6%)."""
    from attrrob import outputs
    from attrrob.report import sweeps

    runs = {}
    for seed, (na, high) in enumerate(((0.987, 1.02), (0.977, 0.99))):
        folder = tmp_path / f"run{seed}"
        outputs.write_json(folder / "accuracy/summary.json", {
            "natural_accuracy": {"mean": na, "ci_low": na - 0.01, "ci_high": high},
            "adversarial_accuracy": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}})
        outputs.write_json(folder / "attack_topk/summary.json", {"metrics": {
            "topk_intersection": {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9},
            "kendall_tau": {"mean": -0.95, "ci_low": -1.1, "ci_high": -0.8}}})
        runs[str(seed)] = str(folder)
    both = sweeps.run_values(runs, "topk")
    assert _t_interval([0.987, 0.977])[1] > 1.0
    assert both["NA"]["ci_high"] == 1.0 and both["NA"]["ci_low"] == pytest.approx(_t_interval([0.987, 0.977])[0])
    one = sweeps.run_values({"0": runs["0"]}, "topk")
    assert one["NA"]["ci_high"] == 1.0 and one["τ"]["ci_low"] == -1.0 and one["IN"]["ci_high"] == 0.9


def test_a_sweeps_main_runs_row_names_only_the_seeds_its_numbers_come_from(tmp_path):
    """A study in progress: the chosen point's seed 0 is the main runs' seed 0, seeds 1 and 2 still to
    run. The row must not list them as if its numbers came from three seeds."""
    from attrrob import outputs
    from attrrob.report import sweeps

    done = tmp_path / "seed0"
    outputs.write_json(done / "accuracy/summary.json", {
        "natural_accuracy": {"mean": 0.982, "ci_low": 0.972, "ci_high": 0.989},
        "adversarial_accuracy": {"mean": 0.909, "ci_low": 0.89, "ci_high": 0.925}})
    outputs.write_json(done / "attack_topk/summary.json", {"metrics": {
        "topk_intersection": {"mean": 0.8788, "ci_low": 0.8686, "ci_high": 0.889},
        "kendall_tau": {"mean": 0.486, "ci_low": 0.48, "ci_high": 0.493}}})
    spec = {"dataset": "mnist", "method": "sarkar", "swept": [["train", "lam", [0.5, 2.5]]], "select": None,
            "points": [{"label": "lam~2.5", "point": [["train", "lam", 2.5]], "runs": {"0": str(done)}}],
            "main_runs": {"0": str(done), "1": str(tmp_path / "seed1"), "2": str(tmp_path / "seed2")},
            "selection": None}
    table = sweeps.markdown(sweeps.summarise(spec, "topk"))
    assert "| lam~2.5 | 0 | 98.20 [97.20, 98.90] |" in table
    assert "| main runs | 0 (1, 2: no result yet) | 98.20 [97.20, 98.90] |" in table
    assert table.rstrip().endswith("| over test images (1 seed) |")


def test_the_zero_direction_share_pools_the_seeds_attacked_images(tmp_path):
    from attrrob.report import seeds

    root = tmp_path / "results"
    for seed in (0, 1):
        _write_method(root / f"seed~{seed}", "mnist", "natural", seed=seed)
    across, per_seed = seeds.table(root, [0, 1], ["mnist"], ["natural"])
    zero = [json.loads((root / f"seed~{s}/mnist/natural/attack_topk/summary.json").read_text())["counts"]
            for s in (0, 1)]
    pooled = sum(c["n_zero_direction"] for c in zero) / sum(c["n_attacked"] for c in zero)
    assert across.iloc[0]["zero_direction_fraction"] == pytest.approx(pooled)
    assert across.iloc[0]["IN_index_mean"] == pytest.approx(
        np.mean([per_seed[s].iloc[0]["IN_index_mean"] for s in (0, 1)]), nan_ok=True)


def test_a_sweep_in_progress_shows_its_points_run_with_their_loss_shares_and_its_selection_pending(tmp_path):
    """Before its selection, a sweep shows the points run so far (the others —) with each regulariser's
    weighted share of the loss at the end of training, here from a plain computation over the logs'
    last 10% of rows, mean over the point's two seeds; and says the choice is still to be made."""
    from attrrob import outputs
    from attrrob.report import sweeps

    rng = np.random.default_rng(3)
    runs, expected = {}, {"cacr": [], "wacr": []}
    for seed in (0, 1):
        folder = tmp_path / f"lam~0.5/seed{seed}"
        steps = np.arange(50, 1050, 50)  # 20 rows: the last 10% are the last 2
        log = pd.DataFrame({"step": steps, "lr": 1e-3, "ce": rng.uniform(0.1, 1.0, 20),
                            "cacr": rng.uniform(0, 1e-3, 20), "wacr": rng.uniform(1, 5, 20),
                            "batch_accuracy": 0.9, "examples_per_s": 10.0})
        log.insert(2, "total", log["ce"] + 0.5 * (log["cacr"] + log["wacr"]))
        folder.mkdir(parents=True)
        log.to_csv(folder / "train_log.csv", index=False)
        outputs.write_json(folder / "train_metrics.json", {"dataset": "mnist", "method": "sarkar",
                                                            "settings": {"lam": 0.5}})
        for term in expected:
            weighted = abs(0.5 * log[term].iloc[-2:].mean())
            expected[term].append(weighted / (abs(log["ce"].iloc[-2:].mean()) + weighted))
        runs[str(seed)] = str(folder)
    select = {"attack": "topk_select", "metric": "IN", "num_examples": 200, "rule": "max", "na_guard": 2.0}
    spec = {"dataset": "mnist", "method": "sarkar", "swept": [["train", "lam", [0.5, 2.5]]], "select": select,
            "points": [{"label": "lam~0.5", "point": [["train", "lam", 0.5]], "runs": runs},
                       {"label": "lam~2.5", "point": [["train", "lam", 2.5]], "runs": {"0": str(tmp_path / "none")}}],
            "main_runs": {"0": str(tmp_path / "main")}, "selection": None}
    summary = sweeps.summarise(spec, "topk")
    assert summary["pending"] == select and summary["selection"] is None
    shares = summary["points"][0]["loss_shares"]
    assert shares["λ·R_CACR"] == {"mean": pytest.approx(np.mean(expected["cacr"])), "n": 2}
    assert shares["λ·R_WACR"] == {"mean": pytest.approx(np.mean(expected["wacr"])), "n": 2}
    assert summary["points"][1]["loss_shares"] == {} and summary["main"]["loss_shares"] == {}
    table = sweeps.markdown(summary)
    assert "Selection pending: made on the validation split (200 images, IN under `topk_select`" in table
    assert "| λ·R_CACR share | λ·R_WACR share | Interval |" in table
    assert f"| {100 * np.mean(expected['wacr']):.3g}% | over test images" not in table  # no test numbers yet
    assert f"| {100 * np.mean(expected['wacr']):.3g}% | no result |" in table
    assert "| lam~2.5 | — (0: no result yet) | — | — | — | — | — | — | no result |" in table
    assert sweeps.interval_note(summary) == ("No point has a test result yet. No point is chosen yet: the choice "
                                             "on validation waits for every point's run.")
    spec["selection"] = {"metric": "IN", "attack": "topk_select", "rule": "max", "split": "validation",
                         "num_examples": 200, "chosen": {"label": "lam~0.5"}, "candidates": []}
    chosen = sweeps.summarise(spec, "topk")
    assert chosen["pending"] is None and "Selection pending" not in sweeps.markdown(chosen)
    assert sweeps.interval_note(chosen).endswith(" The ringed point is the one chosen on validation data.")
    # The swept weight by its symbol, the config key beside it.
    assert sweeps.figure_title(chosen, 0).endswith("against λ (lam)")
    assert sweeps.swept_label("train", "steps") == "steps" and sweeps.swept_label("attack", "k") == "attack.k"
    figure = sweeps.plot_sensitivity(chosen, 0)
    assert {ax.get_xlabel() for ax in figure.axes} == {"λ (lam)"}
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["0.5", "2.5"]  # every swept value


def test_a_sweep_points_difference_with_ig_sum_norm_of_the_same_seed_follows_a_plain_loop(tmp_path):
    """A sweep point's ΔIN against IG-SUM-NORM trained with the same seed, on the images both
    attacked: one seed gives that seed's mean with scipy's paired t interval over the images, two
    give the mean of the seeds' means with the t interval over seeds."""
    from attrrob.report import sweeps

    root, runs, main = tmp_path / "results", {}, {}
    for seed in (0, 1):
        _write_method(root / f"seed~{seed}", "mnist", "ig_sum_norm", seed=10 + seed)
        _write_method(tmp_path / "point" / f"seed~{seed}", "mnist", "sarkar", seed=20 + seed)
        runs[str(seed)] = str(tmp_path / "point" / f"seed~{seed}" / "mnist" / "sarkar")
        main[str(seed)] = str(root / f"seed~{seed}" / "mnist" / "sarkar")

    def diffs(seed):
        frames = [pd.read_csv(Path(folder) / "attack_topk" / "per_example.csv")
                  for folder in (runs[seed], root / f"seed~{seed}" / "mnist" / "ig_sum_norm")]
        values = [{int(r["index"]): r["topk_intersection"] for _, r in f.iterrows() if r["status"] == "attacked"}
                  for f in frames]
        return [values[0][i] - values[1][i] for i in values[0] if i in values[1]]

    one = sweeps.paired_with_reference({"0": runs["0"]}, main, "mnist", "sarkar", "topk")
    interval = stats.ttest_1samp(diffs("0"), 0.0).confidence_interval()
    assert one["reference"] == "ig_sum_norm" and one["images"] == len(diffs("0"))
    assert (one["mean"], one["ci_low"], one["ci_high"]) == pytest.approx(
        (np.mean(diffs("0")), interval.low, interval.high))
    both = sweeps.paired_with_reference(runs, main, "mnist", "sarkar", "topk")
    means = [np.mean(diffs(s)) for s in ("0", "1")]
    assert (both["mean"], both["ci_low"], both["ci_high"]) == pytest.approx((np.mean(means), *_t_interval(means)))
    assert both["interval"] == "t interval over 2 seeds" and both["images"] == len(diffs("0")) + len(diffs("1"))
    assert sweeps.paired_with_reference(runs, main, "mnist", "ig_sum_norm", "topk") is None
    assert np.isnan(sweeps.paired_with_reference({"0": str(tmp_path / "none")}, main, "mnist", "sarkar",
                                                 "topk")["mean"])
