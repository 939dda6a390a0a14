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
    one = metrics.mean_ci([0.5])  # one value: no interval (the report and evaluator agree)
    assert one["mean"] == 0.5 and one["n"] == 1 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    assert metrics.mean_ci([0.2, 0.2, float("nan")]) == {"mean": 0.2, "ci_low": 0.2, "ci_high": 0.2, "n": 2}
    assert metrics.mean_ci([])["n"] == 0


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (957, 1000), (1, 1)])
def test_proportion_ci_is_the_wilson_score_interval(k, n):
    """Oracle: Wilson's closed form, (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964."""
    outcomes = torch.tensor([True] * k + [False] * (n - k))
    out = metrics.proportion_ci(outcomes)
    p, z = k / n, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert out["mean"] == pytest.approx(k / n) and out["n"] == n
    assert out["ci_low"] == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert out["ci_high"] == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert 0.0 <= out["ci_low"] <= out["mean"] <= out["ci_high"] <= 1.0


def _tied_maps(rng: np.random.Generator, rows: int, d: int) -> torch.Tensor:
    """Saliency-like maps whose top-k sets hold ties: a few distinct levels and many zeros."""
    levels = rng.integers(0, 4, size=(rows, d)).astype(np.float64)
    levels[rng.random((rows, d)) < 0.5] = 0.0
    return torch.tensor(levels)


def _top_sets_by_enumeration(values: np.ndarray, k: int) -> list[set]:
    """Every top-k set that some tie-break gives (each equally likely under a uniform one)."""
    kth = np.sort(values)[::-1][k - 1]
    above = set(np.flatnonzero(values > kth).tolist())
    tied = np.flatnonzero(values == kth).tolist()
    return [above | set(c) for c in itertools.combinations(tied, k - len(above))]


@pytest.mark.parametrize("k", [1, 5, 12])
def test_expected_intersection_equals_enumeration_of_all_tie_breaks(k):
    rng = np.random.default_rng(k)
    a, b = _tied_maps(rng, 3, 24), _tied_maps(rng, 3, 24)
    expected = metrics.topk_intersection(a, b, k, ties="expected").numpy()
    assert (metrics.topk_tied_slots(a, k) > 0).any()  # the case is about ties
    for row in range(3):
        sets_a = _top_sets_by_enumeration(a[row].numpy(), k)
        sets_b = _top_sets_by_enumeration(b[row].numpy(), k)
        exact = np.mean([len(sa & sb) for sa in sets_a for sb in sets_b]) / k
        assert expected[row] == pytest.approx(exact, abs=1e-12)
    assert ((expected >= 0) & (expected <= 1)).all()


def test_expected_intersection_is_the_mean_over_10000_random_tie_breaks():
    """MNIST-like maps (784 pixels, fewer non-zero pixels than k = 100, quantised levels)."""
    rng = np.random.default_rng(0)
    d, k, draws = 784, 100, 10_000

    def mnist_like():
        values = np.zeros(d)
        support = rng.choice(d, size=int(rng.integers(60, 95)), replace=False)
        values[support] = np.round(rng.exponential(size=len(support)) * 4) / 4  # ties among levels too
        return values

    for _ in range(3):
        a, b = mnist_like(), mnist_like()
        expected = metrics.topk_intersection(torch.tensor(a)[None], torch.tensor(b)[None], k).item()

        def random_sets(values):
            # Order by value, ties by an independent uniform key per draw (a uniform tie-break);
            # the key's weight 0.1 stays below the levels' spacing of 0.25.
            order = np.argpartition(-values - 0.1 * rng.random((draws, d)), k - 1, axis=1)[:, :k]
            member = np.zeros((draws, d), dtype=bool)
            np.put_along_axis(member, order, True, axis=1)
            return member

        overlap = (random_sets(a) & random_sets(b)).sum(1) / k
        assert overlap.std() / np.sqrt(draws) < 2.5e-4  # the tolerance below is 4 standard errors or more
        assert expected == pytest.approx(overlap.mean(), abs=1e-3)


def test_expected_intersection_equals_plain_intersection_without_ties_and_stays_in_unit_interval():
    rng = np.random.default_rng(5)
    a = torch.tensor(rng.permutation(50)[None].astype(np.float64)).repeat(4, 1) + torch.rand(4, 50, dtype=torch.float64)
    b = torch.tensor(rng.normal(size=(4, 50)))
    for k in (1, 7, 50):
        torch.testing.assert_close(metrics.topk_intersection(a, b, k, ties="expected"),
                                   metrics.topk_intersection(a, b, k, ties="index"), rtol=0, atol=1e-15)
    assert metrics.topk_intersection(a, a, 10).tolist() == [1.0] * 4
    # Extreme ties: constant maps give k/D (every pixel equally likely), identical tied maps too.
    const = torch.zeros(2, 20)
    assert metrics.topk_intersection(const, const, 5).tolist() == pytest.approx([5 / 20] * 2)
    many = _tied_maps(rng, 50, 30)
    values = metrics.topk_intersection(many, _tied_maps(rng, 50, 30), 9)
    assert ((values >= 0) & (values <= 1)).all()
    with pytest.raises(ValueError, match="ties"):
        metrics.topk_intersection(a, b, 3, ties="random")


def test_expected_intersection_hand_made():
    # a: S = {0}, T = {1, 2, 3} share 1 slot (k = 2); b: S = {1, 4}, no ties.
    a = torch.tensor([[5.0, 1.0, 1.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 3.0, 0.0, 0.0, 2.0]])
    # E|I| = |S1∩S2| + |T1∩S2|·r1/|T1| = 0 + 1·(1/3).
    assert metrics.topk_intersection(a, b, 2).item() == pytest.approx(1 / 6)
    assert metrics.topk_intersection(a, b, 2, ties="index").item() == 0.5   # index takes pixel 1
    assert metrics.topk_tied_slots(torch.cat([a, b]), 2).tolist() == [1, 0]
    # A tie group that fits the set exactly is no tie-break: {0, 1, 2} = top-3 of a.
    assert metrics.topk_tied_slots(torch.tensor([[2.0, 2.0, 2.0, 0.0]]), 3).tolist() == [0]
    assert metrics.topk_tied_slots(torch.tensor([[2.0, 2.0, 2.0, 0.0]]), 2).tolist() == [2]


def test_topk_mask_breaks_ties_by_the_rows_generators():
    maps = torch.tensor([[3.0, 1.0, 1.0, 1.0, 1.0, 0.0]]).repeat(2, 1)
    draws = []
    for seed in range(400):
        gens = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)]
        mask = metrics.topk_mask(maps, 3, gens)
        assert mask.sum(1).tolist() == [3.0, 3.0] and mask[:, 0].tolist() == [1.0, 1.0] and mask[:, 5].sum() == 0
        assert torch.equal(mask[0], mask[1])  # the same generator state gives the same choice
        draws.append(mask[0, 1:5])
    # Each of the four tied pixels gets one of the two remaining slots with probability 1/2.
    share = torch.stack(draws).mean(0)
    assert torch.all((share - 0.5).abs() < 0.1), share
    assert metrics.topk_mask(maps[:1], 3).tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]  # index order
