"""LENS metrics (attrrob.metrics.lens_*, topk_div) against plain-loop transcriptions of the definitions.

The transcriptions work on Python sets of (row, column) pixels: a window is every pixel within
Chebyshev distance w // 2 that lies inside the image; top-k takes pixels in descending value,
lowest flat index first among equals; top-k-div walks that order and skips a pixel inside the
window of one already taken. Expectations over tie-breaks are enumerated over every choice.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from attrrob import metrics


def _order(m: np.ndarray) -> list[tuple[int, int]]:
    height, width = m.shape
    flat = sorted(range(height * width), key=lambda i: (-m.flat[i], i))
    return [divmod(i, width) for i in flat]


def _window(p: tuple[int, int], shape: tuple[int, int], w: int) -> set[tuple[int, int]]:
    r = w // 2
    return {(i, j) for i in range(p[0] - r, p[0] + r + 1) for j in range(p[1] - r, p[1] + r + 1)
            if 0 <= i < shape[0] and 0 <= j < shape[1]}


def _grow(pixels, shape, w) -> set[tuple[int, int]]:
    return set().union(*(_window(p, shape, w) for p in pixels)) if pixels else set()


def ref_topk(m: np.ndarray, k: int) -> set[tuple[int, int]]:
    return set(_order(m)[:k])


def ref_topk_div(m: np.ndarray, k: int, w: int) -> list[tuple[int, int]]:
    taken, skipped = [], []
    for p in _order(m):
        if any(p in _window(q, m.shape, w) for q in taken):
            skipped.append(p)
        else:
            taken.append(p)
    return (taken + skipped)[:k]  # a short greedy set is completed by its highest skipped pixels


def ref_recall(o: np.ndarray, a: np.ndarray, k: int, w: int, div: bool) -> float:
    so = set(ref_topk_div(o, k, w)) if div else ref_topk(o, k)
    sa = set(ref_topk_div(a, k, w)) if div else ref_topk(a, k)
    return len(_grow(so, o.shape, w) & sa) / k


def _tie_choices(m: np.ndarray, k: int) -> list[set[tuple[int, int]]]:
    """Every top-k set a tie-break at the k-th value can give (all equally likely)."""
    kth = np.sort(m.ravel())[::-1][k - 1]
    above = {p for p in np.ndindex(m.shape) if m[p] > kth}
    tied = [p for p in np.ndindex(m.shape) if m[p] == kth]
    return [above | set(c) for c in itertools.combinations(tied, k - len(above))]


def ref_expected_recall(o: np.ndarray, a: np.ndarray, k: int, w: int) -> float:
    pairs = [(so, sa) for so in _tie_choices(o, k) for sa in _tie_choices(a, k)]
    return sum(len(_grow(so, o.shape, w) & sa) for so, sa in pairs) / (k * len(pairs))


def _t(*maps: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(np.stack(m) if isinstance(m, list) else m[None]) for m in maps]


@pytest.mark.parametrize("shape,w", [((8, 8), 3), ((7, 11), 3), ((9, 9), 5), ((6, 5), 1)])
def test_random_continuous_maps_equal_transcription(shape, w):
    rng = np.random.default_rng(shape[0] * 100 + shape[1] + w)
    originals = [rng.random(shape) for _ in range(5)]
    attacked = [o + 0.3 * rng.normal(size=shape) for o in originals]
    o_t, a_t = _t(originals, attacked)
    pixels = shape[0] * shape[1]
    for k in sorted({1, 3, metrics.topk_div_max_k(*shape, w), pixels // 2, pixels}):
        div = metrics.topk_div(o_t, k, w)
        for row, o in enumerate(originals):
            want = [i * shape[1] + j for i, j in ref_topk_div(o, k, w)]
            assert div[row].tolist() == want
        for use_div in (False, True):
            for ties in ("expected", "index"):  # continuous maps: no ties, both modes equal the sets
                rec = metrics.lens_recall(o_t, a_t, k, w, div=use_div, ties=ties)
                pre = metrics.lens_precision(o_t, a_t, k, w, div=use_div, ties=ties)
                for row, (o, a) in enumerate(zip(originals, attacked)):
                    assert rec[row].item() == pytest.approx(ref_recall(o, a, k, w, use_div), abs=1e-12)
                    assert pre[row].item() == pytest.approx(ref_recall(a, o, k, w, use_div), abs=1e-12)
        inter = metrics.topk_div_intersection(o_t, a_t, k, w)
        for row, (o, a) in enumerate(zip(originals, attacked)):
            want = len(set(ref_topk_div(o, k, w)) & set(ref_topk_div(a, k, w))) / k
            assert inter[row].item() == pytest.approx(want, abs=1e-12)


def test_border_windows_are_clipped_not_wrapped():
    # Top-1 at the end of row 0: its window must not reach the start of row 1 (the flat x ± 1 of
    # the reference would), and pixel 0 counts like any other.
    o = np.zeros((4, 5))
    o[0, 4] = 1.0
    a = np.zeros((4, 5))
    a[1, 0] = 1.0                                   # flat index 5 = 4 + 1: a wrap neighbour
    o_t, a_t = _t(o, a)
    assert metrics.lens_recall(o_t, a_t, 1, 3, ties="index").item() == 0.0
    a2 = np.zeros((4, 5))
    a2[1, 3] = 1.0                                  # a true 2-D neighbour
    assert metrics.lens_recall(o_t, _t(a2)[0], 1, 3, ties="index").item() == 1.0
    p0 = np.zeros((4, 5))
    p0[0, 0] = 1.0
    p1 = np.zeros((4, 5))
    p1[1, 1] = 1.0
    assert metrics.lens_recall(*_t(p0, p1), 1, 3, ties="index").item() == 1.0
    assert metrics.lens_precision(*_t(p0, p1), 1, 3, ties="index").item() == 1.0
    # Corner windows hold 4 pixels, edge windows 6: W(S) of the four corners is 16 pixels of a 5×5.
    m = np.zeros((5, 5))
    for c in [(0, 0), (0, 4), (4, 0), (4, 4)]:
        m[c] = 2.0
    got = metrics._dilate(metrics.topk_mask(torch.tensor(m).view(1, -1), 4).view(1, 5, 5), 1)
    assert int(got.sum()) == 16 == len(_grow([(0, 0), (0, 4), (4, 0), (4, 4)], (5, 5), 3))


def test_topk_div_hand_case_and_corner_picks():
    m = np.array([[9.0, 8.0, 1.0],
                  [7.0, 6.0, 5.0],
                  [2.0, 3.0, 4.0]])
    # 9 at (0,0) is taken; 8, 7, 6 lie in its window; 5 at (1,2) is 2 columns away: taken; then
    # 4 (2,2) and 3 (2,1) are next to 5, 2 at (2,0) is two columns from it and two rows from 9.
    assert metrics.topk_div(_t(m)[0], 3, 3).tolist() == [[0, 5, 6]]
    assert [i * 3 + j for i, j in ref_topk_div(m, 9, 3)] == metrics.topk_div(_t(m)[0], 9, 3)[0].tolist()
    assert metrics.topk_div_max_k(28, 28, 3) == 88 and metrics.topk_div_max_k(8, 8, 3) == 8


def test_expected_ties_equal_enumeration_over_tie_breaks():
    rng = np.random.default_rng(7)
    for _ in range(6):
        o = rng.integers(0, 3, size=(4, 4)).astype(float)    # heavy ties, as IG maps with zeros
        a = rng.integers(0, 3, size=(4, 4)).astype(float)
        for k in (2, 5, 8):
            got = metrics.lens_recall(*_t(o, a), k, 3).item()
            assert got == pytest.approx(ref_expected_recall(o, a, k, 3), abs=1e-12)
            got = metrics.lens_precision(*_t(o, a), k, 3).item()
            assert got == pytest.approx(ref_expected_recall(a, o, k, 3), abs=1e-12)


def test_flat_maps_reshape_and_bad_arguments():
    rng = np.random.default_rng(1)
    o, a = torch.tensor(rng.random((3, 6, 6))), torch.tensor(rng.random((3, 6, 6)))
    # [N, H*W] maps (the project's saliency layout) viewed as images give the same values.
    flat = metrics.lens_recall(o.flatten(1).view(3, 6, 6), a.flatten(1).view(3, 6, 6), 4)
    assert torch.equal(flat, metrics.lens_recall(o, a, 4))
    with pytest.raises(ValueError, match=r"view\(N, H, W\)"):
        metrics.lens_recall(o.flatten(1), a.flatten(1), 4)  # [N, H*W] is refused, never read as one image
    for bad in (0, 37):
        with pytest.raises(ValueError, match="k="):
            metrics.topk_div(o, bad)
    for bad in (2, 0):
        with pytest.raises(ValueError, match="window"):
            metrics.lens_recall(o, a, 4, window=bad)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        metrics.lens_recall(o.flatten(1)[None], a.flatten(1), 4)
    assert math.isclose(metrics.lens_recall(o, o, 4, ties="index").min().item(), 1.0)
