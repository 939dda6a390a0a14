"""Batched saliency-map comparison metrics: `[N, D]` maps in, `[N]` values out (torch, any device).

Each metric equals its reference definition exactly:
- `kendall_tau_b` is scipy.stats.kendalltau's τ-b (ties in either map handled). Discordant pairs
  are counted by a vectorised bottom-up merge count (one batched `searchsorted` per level), so it
  is O(D log² D) time and O(N·D) memory: a 16,384-pixel Flower map costs milliseconds, not the
  O(D²) pair matrix.
- `spearman_rho` is scipy.stats.spearmanr (Pearson correlation of average ranks).
- `topk_intersection` is RAR's |topK(a) ∩ topK(b)| / k; where the k-th value is tied, the
  expected value under uniform random tie-breaking (closed form, default) or lowest index first.
- `lens_recall`, `lens_precision`, `topk_div`, `topk_div_intersection`: the locality-aware
  metrics of LENS (Kamath et al., AAAI 2024) on `[N, H, W]` maps, with 2-D windows.
Counts are accumulated in int64 and ratios in float64, so results do not depend on the map dtype.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from .config import TIES_MODES
from .intervals import mean_ci  # noqa: F401  (re-exported: metrics.mean_ci is the evaluators' name)


def _as_batch(a: torch.Tensor, b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if a.dim() == 1:
        a = a.unsqueeze(0)
        b = b.unsqueeze(0) if b is not None else None
    if a.dim() != 2 or (b is not None and b.shape != a.shape):
        raise ValueError(f"expected two [N, D] maps of equal shape, got {tuple(a.shape)} and "
                         f"{None if b is None else tuple(b.shape)}")
    return a, b


def _top_indices(maps: torch.Tensor, k: int, generators=None) -> torch.Tensor:
    if generators is None:
        # A stable descending sort resolves ties by pixel index.
        return torch.sort(maps, dim=1, descending=True, stable=True).indices[:, :k]
    if len(generators) != maps.shape[0]:
        raise ValueError(f"{len(generators)} generators for {maps.shape[0]} maps")
    # Shuffle each row by its own generator, then sort stably: equal values keep the shuffled
    # order, so the k-th value's ties are taken uniformly at random.
    shuffle = torch.stack([torch.randperm(maps.shape[1], generator=g) for g in generators]).to(maps.device)
    shuffled = torch.gather(maps, 1, shuffle)
    order = torch.sort(shuffled, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(shuffle, 1, order)


def topk_mask(maps: torch.Tensor, k: int, generators=None) -> torch.Tensor:
    """0/1 float mask `[N, D]` of each row's k largest entries.

    Ties at the k-th value go to the lowest pixel index, or, with one `torch.Generator` per row
    in `generators`, to a uniformly random choice among the tied pixels (the attack's mask).
    """
    maps, _ = _as_batch(maps)
    _check_k(maps, k)
    mask = torch.zeros_like(maps)
    return mask.scatter_(1, _top_indices(maps, k, generators), 1.0)


def _check_k(maps: torch.Tensor, k: int) -> None:
    if not 1 <= k <= maps.shape[1]:
        raise ValueError(f"k={k} must be in [1, {maps.shape[1]}]")


def topk_membership(maps: torch.Tensor, k: int) -> torch.Tensor:
    """P(pixel in the top-k set) under uniform random tie-breaking (float64 `[N, D]`).

    With S the pixels strictly above the k-th value and T the pixels equal to it, r = k − |S|
    slots go to T: a pixel of S has probability 1, one of T r/|T|, any other 0.
    """
    maps, _ = _as_batch(maps)
    _check_k(maps, k)
    kth = torch.topk(maps, k, dim=1).values[:, -1:]
    above, tied = maps > kth, maps == kth
    slots = k - above.sum(1, keepdim=True)
    share = slots.to(torch.float64) / tied.sum(1, keepdim=True).to(torch.float64)
    return torch.where(above, 1.0, torch.where(tied, share, 0.0)).to(torch.float64)


def topk_tied_slots(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Slots of each row's top-k set that a tie-break fills (int64 `[N]`): r = k − |S| when the
    k-th value is shared with pixels left out of the set (|S| + |T| > k), else 0."""
    maps, _ = _as_batch(maps)
    _check_k(maps, k)
    kth = torch.topk(maps, k, dim=1).values[:, -1:]
    above, tied = (maps > kth).sum(1), (maps == kth).sum(1)
    return torch.where(above + tied > k, k - above, torch.zeros_like(above))


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int, ties: str = "expected") -> torch.Tensor:
    """Fraction of the top-k pixels of `a` that are also among the top-k of `b` (float64 `[N]`).

    `ties="expected"` (spec default): the expected intersection under uniform random
    tie-breaking of both sets, in closed form, Σ_pixels P(in top-k of a)·P(in top-k of b) / k;
    equal to RAR's |topK(a) ∩ topK(b)| / k whenever neither set has ties. `ties="index"`: both
    sets take tied pixels by lowest index.
    """
    a, b = _as_batch(a, b)
    if ties == "expected":
        return (topk_membership(a, k) * topk_membership(b, k)).sum(dim=1) / k
    if ties == "index":
        both = topk_mask(a, k) * topk_mask(b, k)
        return both.sum(dim=1, dtype=torch.float64) / k
    raise ValueError(f"ties must be one of {', '.join(TIES_MODES)}, got {ties!r}")


def _tied_pairs(sorted_rows: torch.Tensor, new_group: torch.Tensor) -> torch.Tensor:
    """Σ t(t−1)/2 over runs of equal values; `new_group[:, j]` marks where a run starts (int64 `[N]`)."""
    idx = torch.arange(sorted_rows.shape[1], device=sorted_rows.device).expand_as(sorted_rows)
    run_start = torch.where(new_group, idx, torch.zeros_like(idx)).cummax(dim=1).values
    # Each element is tied with the elements before it in its run.
    return (idx - run_start).sum(dim=1)


def _run_starts(*sorted_keys: torch.Tensor) -> torch.Tensor:
    first = sorted_keys[0]
    change = torch.zeros(first.shape, dtype=torch.bool, device=first.device)
    change[:, 0] = True
    for key in sorted_keys:
        change[:, 1:] |= key[:, 1:] != key[:, :-1]
    return change


def count_inversions(values: torch.Tensor) -> torch.Tensor:
    """Number of pairs i < j with values[i] > values[j], per row (int64 `[N]`), in O(D log² D).

    Bottom-up merge counting: at block size s every element of a right half is compared with the
    sorted left half of its 2s-block by a batched binary search.
    """
    n_rows, length = values.shape
    width = 1 << max(0, math.ceil(math.log2(max(length, 1))))
    # +inf padding at the end adds no inversion (nothing is greater than +inf, and inf > inf is false).
    padded = torch.full((n_rows, width), math.inf, dtype=torch.float64, device=values.device)
    padded[:, :length] = values.to(torch.float64)
    total = torch.zeros(n_rows, dtype=torch.int64, device=values.device)
    block = 1
    while block < width:
        pairs = padded.view(n_rows, width // (2 * block), 2, block)
        left = torch.sort(pairs[:, :, 0, :], dim=-1).values.reshape(-1, block)
        right = pairs[:, :, 1, :].reshape(-1, block).contiguous()
        not_greater = torch.searchsorted(left, right, right=True)
        total += (block - not_greater).view(n_rows, -1).sum(dim=1)
        block *= 2
    return total


def kendall_tau_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's τ-b per row, equal to scipy.stats.kendalltau (float64 `[N]`; NaN if a row is constant)."""
    a, b = _as_batch(a, b)
    n = a.shape[1]
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    # Lexicographic sort by (a, b): stable sort on the secondary key, then on the primary.
    order_b = torch.sort(b64, dim=1, stable=True).indices
    a_by_b = torch.gather(a64, 1, order_b)
    order = torch.gather(order_b, 1, torch.sort(a_by_b, dim=1, stable=True).indices)
    a_sorted, b_lex = torch.gather(a64, 1, order), torch.gather(b64, 1, order)

    ties_a = _tied_pairs(a_sorted, _run_starts(a_sorted))
    ties_ab = _tied_pairs(a_sorted, _run_starts(a_sorted, b_lex))
    b_sorted = torch.sort(b64, dim=1).values
    ties_b = _tied_pairs(b_sorted, _run_starts(b_sorted))
    # Pairs tied in a are sorted by b, so they add no inversions; tied b pairs are not inversions.
    discordant = count_inversions(b_lex)

    total = n * (n - 1) // 2
    concordant_minus_discordant = total - ties_a - ties_b + ties_ab - 2 * discordant
    denominator = torch.sqrt((total - ties_a).to(torch.float64)) * torch.sqrt((total - ties_b).to(torch.float64))
    tau = concordant_minus_discordant.to(torch.float64) / denominator
    return tau.clamp(-1.0, 1.0)  # rounding of the square roots may overshoot by an ulp


def average_ranks(maps: torch.Tensor) -> torch.Tensor:
    """1-based ranks per row with ties given their average rank (scipy.stats.rankdata 'average')."""
    maps, _ = _as_batch(maps)
    sorted_vals, order = torch.sort(maps.to(torch.float64), dim=1, stable=True)
    n = maps.shape[1]
    idx = torch.arange(n, device=maps.device).expand_as(order)
    starts = _run_starts(sorted_vals)
    run_start = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    ends = torch.zeros_like(starts)
    ends[:, -1] = True
    ends[:, :-1] = starts[:, 1:]
    last = torch.full_like(idx, n - 1)
    run_end = torch.where(ends, idx, last).flip(1).cummin(dim=1).values.flip(1)
    ranks_sorted = (run_start + run_end).to(torch.float64) / 2 + 1
    return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)


def spearman_rho(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ per row, equal to scipy.stats.spearmanr (float64 `[N]`; NaN if a row is constant)."""
    a, b = _as_batch(a, b)
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    rho = (ra * rb).sum(dim=1) / torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    return rho.clamp(-1.0, 1.0)


def mass_center(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre of mass `[N, 2]` (row, column, in pixels) of non-negative `[N, H*W]` maps.

    Differentiable, so attacks can push it (Ghorbani et al.'s centre attack).
    """
    maps, _ = _as_batch(maps)
    if maps.shape[1] != height * width:
        raise ValueError(f"maps have {maps.shape[1]} pixels, expected {height}x{width}")
    grid = maps.view(-1, height, width)
    rows = torch.arange(height, dtype=maps.dtype, device=maps.device)
    cols = torch.arange(width, dtype=maps.dtype, device=maps.device)
    # An all-zero map (blank image) has no centre; (0, 0) keeps it finite, so no NaN reaches an attack.
    total = grid.sum(dim=(1, 2)).clamp_min(torch.finfo(maps.dtype).tiny)
    center_row = (grid.sum(dim=2) * rows).sum(dim=1) / total
    center_col = (grid.sum(dim=1) * cols).sum(dim=1) / total
    return torch.stack([center_row, center_col], dim=1)


def mass_center_shift(a: torch.Tensor, b: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Euclidean distance (pixels) between the mass centres of `a` and `b` (`[N]`)."""
    a, b = _as_batch(a, b)
    return torch.linalg.vector_norm(mass_center(a, height, width) - mass_center(b, height, width), dim=1)


# ----------------------------------------------------------------------------- LENS (locality-aware)
# Kamath et al., "Rethinking Robustness of Model Attributions" (AAAI 2024). Maps are `[N, H, W]`;
# windows are true 2-D w × w squares clipped at the image border (docs/DESIGN.md, "LENS").


def _as_images(a: torch.Tensor, b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    # No 2-D input: a [N, H*W] saliency batch would pass for one N × H·W image.
    if a.dim() != 3 or (b is not None and b.shape != a.shape):
        raise ValueError(f"expected [N, H, W] maps of equal shape, got {tuple(a.shape)} and "
                         f"{None if b is None else tuple(b.shape)} (a saliency batch [N, H*W] is "
                         "maps.view(N, H, W))")
    return a, b


def _check_window(window: int) -> int:
    if isinstance(window, bool) or int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"window={window} must be an odd integer ≥ 1 (a w × w square centred on a pixel)")
    return int(window) // 2


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """W(S): 1 where a pixel of the 0/1 mask `[N, H, W]` lies in its window (clipped at the border)."""
    if radius == 0:
        return mask
    # max_pool2d pads with −inf, so windows are clipped at the border, never wrapped.
    return torch.nn.functional.max_pool2d(mask.unsqueeze(1).double(), 2 * radius + 1, stride=1,
                                          padding=radius).squeeze(1).to(mask.dtype)


def _window_count(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Number of mask pixels in each pixel's window (float64 `[N, H, W]`, exact integers)."""
    side = 2 * radius + 1
    kernel = torch.ones(1, 1, side, side, dtype=torch.float64, device=mask.device)
    return torch.nn.functional.conv2d(mask.unsqueeze(1).double(), kernel, padding=radius).squeeze(1)


def topk_div_ranked(maps: torch.Tensor, window: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixels of each map `[N, H, W]` in top-k-div order, and the greedy set's size (`[N, H·W]`, `[N]`).

    The greedy walks pixels in descending value (ties: lowest flat index first) and takes a pixel
    unless it lies in the window of one already taken. Its picks come first, in the order taken;
    the pixels it skipped follow in descending value. The greedy set is the lexicographically
    first maximal independent set of "within the window", computed in parallel rounds: a pixel
    still undecided whose rank is the lowest undecided one in its window is taken (every earlier
    pixel there is already decided, and none of them taken), and its window is decided with it.
    """
    maps, _ = _as_images(maps)
    radius = _check_window(window)
    n, height, width = maps.shape
    pixels = height * width
    order = torch.sort(maps.reshape(n, pixels), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=maps.device).expand(n, -1))
    rank = rank.view(n, height, width).double()
    taken = torch.zeros(n, height, width, dtype=torch.bool, device=maps.device)
    undecided = torch.ones_like(taken)
    side = 2 * radius + 1
    while bool(undecided.any()):
        ranks = torch.where(undecided, rank, math.inf)
        lowest = -torch.nn.functional.max_pool2d(-ranks.unsqueeze(1), side, stride=1, padding=radius).squeeze(1)
        new = undecided & (ranks == lowest)
        taken |= new
        undecided &= ~_dilate(new, radius)
    # Sort key: the greedy's picks by rank, then the skipped pixels by rank.
    key = rank.reshape(n, pixels) + torch.where(taken.reshape(n, pixels), 0.0, float(pixels))
    return torch.sort(key, dim=1).indices, taken.reshape(n, pixels).sum(1)


def topk_div_max_k(height: int, width: int, window: int = 3) -> int:
    """The largest k for which every `height` × `width` map has k top-k-div picks: ⌈H·W / w²⌉
    (the windows of a finished greedy cover the image, and each covers at most w² pixels)."""
    _check_window(window)
    return -(-height * width // (window * window))


def topk_div(maps: torch.Tensor, k: int, window: int = 3) -> torch.Tensor:
    """Top-k-div: the flat indices `[N, k]` of the first k pixels the greedy takes (see `topk_div_ranked`).

    k ≤ `topk_div_max_k(H, W, window)` always has k picks. A larger k (≤ H·W) is allowed: a map
    whose greedy set is smaller is completed by its highest skipped pixels (`topk_div_ranked`
    returns each set's size, so a caller can count those maps).
    """
    maps, _ = _as_images(maps)
    _check_k(maps.flatten(1), k)
    return topk_div_ranked(maps, window)[0][:, :k]


def _index_mask(indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, height, width = shape
    mask = torch.zeros(n, height * width, dtype=torch.float64, device=indices.device)
    return mask.scatter_(1, indices, 1.0).view(n, height, width)


def _dilated_membership(maps: torch.Tensor, k: int, radius: int) -> torch.Tensor:
    """P(pixel ∈ W(S)) under uniform random tie-breaking of the top-k set S (float64 `[N, H, W]`).

    A window holding a pixel above the k-th value is in W(S) surely; otherwise, with t of the m
    pixels tied at the k-th value in it and r of them taken, it misses S with probability
    C(m − t, r) / C(m, r) (hypergeometric).
    """
    n, height, width = maps.shape
    flat = maps.reshape(n, -1)
    kth = torch.topk(flat, k, dim=1).values[:, -1:]
    above, tied = (flat > kth).view_as(maps), (flat == kth).view_as(maps)
    m = tied.sum((1, 2)).double().view(n, 1, 1)
    r = (k - above.sum((1, 2))).double().view(n, 1, 1)
    t = _window_count(tied, radius)
    free = m - t
    log_miss = (torch.lgamma(free + 1) - torch.lgamma((free - r).clamp_min(0) + 1)
                - torch.lgamma(m + 1) + torch.lgamma(m - r + 1))
    miss = torch.where(free >= r, torch.exp(log_miss), torch.zeros_like(log_miss))
    return torch.where(_window_count(above, radius) > 0, 1.0, 1.0 - miss)


def lens_recall(original: torch.Tensor, attacked: torch.Tensor, k: int, window: int = 3, div: bool = False,
                ties: str = "expected") -> torch.Tensor:
    """LENS-recall |W(S(original)) ∩ S(attacked)| / k per map (float64 `[N]`, maps `[N, H, W]`).

    S = top-k set, or with `div=True` the top-k-div set (`topk_div`, ties by lowest index).
    Top-k ties follow `ties` as `topk_intersection` does: "expected" is the expectation under
    independent uniform random tie-breaking of both sets (closed form, equal to the set formula
    when neither map has ties at its k-th value); "index" takes tied pixels by lowest index.
    """
    original, attacked = _as_images(original, attacked)
    _check_k(original.flatten(1), k)
    radius = _check_window(window)
    if div:
        grown = _dilate(_index_mask(topk_div(original, k, window), original.shape), radius)
        hits = grown * _index_mask(topk_div(attacked, k, window), attacked.shape)
    elif ties == "expected":
        hits = _dilated_membership(original, k, radius) * topk_membership(attacked.flatten(1), k).view_as(attacked)
    elif ties == "index":
        grown = _dilate(topk_mask(original.flatten(1), k).view_as(original).double(), radius)
        hits = grown * topk_mask(attacked.flatten(1), k).view_as(attacked).double()
    else:
        raise ValueError(f"ties must be one of {', '.join(TIES_MODES)}, got {ties!r}")
    return hits.sum((1, 2)) / k


def lens_precision(original: torch.Tensor, attacked: torch.Tensor, k: int, window: int = 3, div: bool = False,
                   ties: str = "expected") -> torch.Tensor:
    """LENS-precision |S(original) ∩ W(S(attacked))| / k (float64 `[N]`): LENS-recall with the maps swapped."""
    return lens_recall(attacked, original, k, window, div, ties)


def topk_div_intersection(original: torch.Tensor, attacked: torch.Tensor, k: int, window: int = 3) -> torch.Tensor:
    """Top-k-div intersection |D(original) ∩ D(attacked)| / k (float64 `[N]`, maps `[N, H, W]`)."""
    original, attacked = _as_images(original, attacked)
    _check_k(original.flatten(1), k)
    both = _index_mask(topk_div(original, k, window), original.shape) * \
        _index_mask(topk_div(attacked, k, window), attacked.shape)
    return both.sum((1, 2)) / k


def proportion_ci(outcomes: Iterable[bool] | torch.Tensor | np.ndarray, confidence: float = 0.95) -> dict:
    """Share of true outcomes with a Wilson score interval: `{mean, ci_low, ci_high, n}`.

    For accuracies: unlike a t interval it stays inside [0, 1] and is not degenerate at 0% or 100%.
    """
    from scipy import stats

    if isinstance(outcomes, torch.Tensor):
        outcomes = outcomes.detach().cpu().numpy()
    arr = np.asarray(list(outcomes) if not isinstance(outcomes, np.ndarray) else outcomes).astype(bool).ravel()
    n = int(arr.size)
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    p, k = float(arr.mean()), int(arr.sum())
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    # The interval always holds p; clamping keeps rounding (at 0% or 100%) from saying otherwise.
    return {"mean": p, "ci_low": max(0.0, min(p, float(interval.low))), "ci_high": min(1.0, max(p, float(interval.high))),
            "n": n}
