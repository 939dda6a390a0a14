"""attrrob.metrics against independent oracles: scipy (τ-b, ρ, ranks, t interval), brute force, closed forms."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch
from scipy import stats

from attrrob import metrics


def _maps(rng: np.random.Generator, rows: int, d: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=(rows, d))
    b = 0.5 * a + rng.normal(size=(rows, d))
    if ties:
        # Saliency-like ties: many exact zeros plus coarse quantisation.
        a = np.where(rng.random((rows, d)) < 0.4, 0.0, np.round(a * 2) / 2)
        b = np.where(rng.random((rows, d)) < 0.4, 0.0, np.round(b))
    return a, b


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # a constant row: NaN on both sides
@pytest.mark.parametrize("d", [2, 3, 17, 784, 1000, 16384])
@pytest.mark.parametrize("ties", [False, True])
def test_kendall_and_spearman_equal_scipy(d, ties):
    rng = np.random.default_rng(d + ties)
    rows = 2 if d == 16384 else 4
    a, b = _maps(rng, rows, d, ties)
    for dtype in (torch.float64, torch.float32):
        at, bt = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
        a_ref, b_ref = at.double().numpy(), bt.double().numpy()
        tau = metrics.kendall_tau_b(at, bt).numpy()
        rho = metrics.spearman_rho(at, bt).numpy()
        for i in range(rows):
            assert tau[i] == pytest.approx(stats.kendalltau(a_ref[i], b_ref[i]).statistic, abs=1e-12, nan_ok=True)
            assert rho[i] == pytest.approx(stats.spearmanr(a_ref[i], b_ref[i]).statistic, abs=1e-12, nan_ok=True)


def test_inversion_count_matches_brute_force():
    rng = np.random.default_rng(0)
    values = torch.tensor(rng.integers(0, 6, size=(5, 37)), dtype=torch.float32)
    got = metrics.count_inversions(values)
    for row, count in zip(values.tolist(), got.tolist()):
        assert count == sum(1 for i, j in itertools.combinations(range(len(row)), 2) if row[i] > row[j])


def test_kendall_edge_cases():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    assert metrics.kendall_tau_b(a, b).tolist() == [1.0, -1.0]
    assert metrics.spearman_rho(a, b).tolist() == [1.0, -1.0]
    # A constant map has no τ-b (scipy returns NaN too).
    assert math.isnan(float(metrics.kendall_tau_b(torch.ones(1, 5), torch.arange(5.0)[None])[0]))


def test_average_ranks_equal_scipy_rankdata():
    rng = np.random.default_rng(3)
    a = np.round(rng.normal(size=(3, 200)))
    got = metrics.average_ranks(torch.tensor(a)).numpy()
    np.testing.assert_array_equal(got, np.stack([stats.rankdata(r) for r in a]))


def test_kendall_is_fast_on_flower_maps():
    a, b = torch.rand(16, 16384), torch.rand(16, 16384)
    metrics.kendall_tau_b(a[:1], b[:1])  # warm-up
    start = time.perf_counter()
    metrics.kendall_tau_b(a, b)
    elapsed = (time.perf_counter() - start) / 16
    # O(D²) pair counting would take seconds per map here; the merge count takes milliseconds.
    assert elapsed < 0.25, f"{elapsed:.3f} s per 16,384-pixel map"


def test_topk_intersection_hand_made():
    a = torch.tensor([[9.0, 8.0, 7.0, 0.0, 0.0, 1.0]])
    b_same = torch.tensor([[5.0, 6.0, 7.0, 0.0, 1.0, 0.0]])   # same top-3 set, another order
    b_half = torch.tensor([[9.0, 0.0, 0.0, 8.0, 7.0, 0.0]])
    b_none = torch.tensor([[0.0, 0.0, 0.0, 3.0, 2.0, 1.0]])
    assert metrics.topk_intersection(a, b_same, 3).item() == 1.0
    assert metrics.topk_intersection(a, b_half, 2).item() == 0.5        # {0,1} vs {0,3}
    assert metrics.topk_intersection(a, b_none, 3).item() == 0.0
    assert metrics.topk_intersection(a, b_half, 3).item() == pytest.approx(1 / 3)
    batched = metrics.topk_intersection(a.repeat(3, 1), torch.cat([b_same, b_half, b_none]), 2)
    assert batched.tolist() == [0.5, 0.5, 0.0]                        # top-2 of b_same is {2, 1}
    mask = metrics.topk_mask(a, 2)
    assert mask.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError):
        metrics.topk_intersection(a, b_same, 7)


def test_mass_center_closed_form():
    maps = torch.zeros(2, 4 * 5)
    maps[0, 2 * 5 + 3] = 7.0                           # one pixel at row 2, column 3
    maps[1, 0] = maps[1, 3 * 5 + 4] = 1.0              # two equal pixels at (0,0) and (3,4)
    center = metrics.mass_center(maps, 4, 5)
    assert center.tolist() == [[2.0, 3.0], [1.5, 2.0]]
    shift = metrics.mass_center_shift(maps[:1], maps[1:], 4, 5)
    assert shift.item() == pytest.approx(math.hypot(0.5, 1.0))


def test_mean_ci_equals_student_t_interval():
    values = np.random.default_rng(1).normal(0.3, 0.1, size=50)
    out = metrics.mean_ci(torch.tensor(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert out["n"] == 50
    assert out["mean"] == pytest.approx(values.mean())
    assert out["ci_low"] == pytest.approx(low) and out["ci_high"] == pytest.approx(high)
    assert metrics.mean_ci([0.5]) == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 1}
    assert metrics.mean_ci([])["n"] == 0


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (957, 1000), (1, 1)])
def test_proportion_ci_equals_scipy_wilson(k, n):
    from scipy import stats

    outcomes = torch.tensor([True] * k + [False] * (n - k))
    out = metrics.proportion_ci(outcomes)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert out["mean"] == pytest.approx(k / n) and out["n"] == n
    assert out["ci_low"] == pytest.approx(ref.low, abs=1e-12)
    assert out["ci_high"] == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= out["ci_low"] <= out["mean"] <= out["ci_high"] <= 1.0
