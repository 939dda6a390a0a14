"""Integrated gradients and saliency maps: the one implementation every other module uses.

An attribution is taken of a *scalar function per example*, `fn(z) -> [rows]`. IG evaluates
`fn` on all path points of all examples at once (stacked point-major: rows j·N … (j+1)·N−1 are
point j), so label-aware functions tile their labels with `tile_to(y, rows)`; the factories
below (`cross_entropy_fn`, `probability_fn`, `negative_probability_fn`, `logit_fn`) do that.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AttrrobError

__all__ = [
    "integrated_gradients",
    "simple_gradient",
    "saliency_map",
    "tile_to",
    "cross_entropy_fn",
    "probability_fn",
    "negative_probability_fn",
    "logit_fn",
    "rows_per_call",
    "CPU_INPUT_ELEMENTS_PER_CALL",
]

ScalarFn = Callable[[torch.Tensor], torch.Tensor]

# ℓ = −log clip(p_y, 1e-10, 1), as the reference TF code writes its cross-entropy.
PROBABILITY_FLOOR = 1e-10


# On a CPU, passes over more rows than fit the caches get slower per row (MNIST CNN: 2,500-row
# passes cost about twice as much per row as passes of 100–300 rows, in training's double-backward
# and in the attack's surrogate pass alike), so a CPU pass holds about this many input elements
# (MNIST: 167 rows). A GPU wants the largest pass the memory allows.
CPU_INPUT_ELEMENTS_PER_CALL = 2 ** 17


def rows_per_call(x: torch.Tensor, budget: int | None = 0) -> int | None:
    """Rows per IG pass for a batch like `x`: `budget` (0/None = no limit), capped on a CPU.

    The CPU cap never goes below one path point of the whole batch (len(x) rows), since IG never
    splits a point. Returns None for "no limit" (the `max_batch` convention).
    """
    budget = int(budget or 0)
    if x.device.type == "cpu":
        cpu_rows = max(len(x), CPU_INPUT_ELEMENTS_PER_CALL // max(x[0].numel(), 1))
        budget = min(budget, cpu_rows) if budget else cpu_rows
    return budget or None


def tile_to(y: torch.Tensor, rows: int) -> torch.Tensor:
    """Repeat per-example labels `y` [N] to `rows` = P·N point-major rows (y, y, …, y)."""
    n = y.shape[0]
    if n == 0 or rows % n:
        raise AttrrobError(f"tile_to: {rows} rows is not a multiple of the {n} labels")
    return y.repeat(rows // n)


def _row_gradients(fn: ScalarFn, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """∇_z Σ_rows fn(z): one backward pass for all rows (rows are independent examples)."""
    if not create_graph:
        z = z.detach()
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)  # a new leaf: never flips the caller's tensor
    with torch.enable_grad():
        out = fn(z)
        if out.dim() != 1 or out.shape[0] != z.shape[0]:
            raise AttrrobError(f"attribution function must return one value per row: got shape "
                               f"{tuple(out.shape)} for {z.shape[0]} rows")
        (grad,) = torch.autograd.grad(out.sum(), z, create_graph=create_graph)
    return grad


def integrated_gradients(fn: ScalarFn, x: torch.Tensor, baseline: torch.Tensor | float, steps: int, *,
                         points: Iterable[int] | None = None, create_graph: bool = False,
                         max_batch: int | None = None, scale_invariant: bool = False) -> torch.Tensor:
    """Right-Riemann integrated gradients of `fn` along baseline → x.

    IG = (x − baseline) ⊙ (1/P) Σ_{k ∈ points} ∇fn(baseline + (k/steps)(x − baseline)),
    points defaulting to 1..steps (P = steps). `points=range(a, steps + 1, a)` gives the
    approximate IG of the reference code (every a-th point, divided by steps/a).

    `fn` receives the path points stacked point-major, P·N rows per call, at most `max_batch`
    rows per call (`None`/0: all points at once; never fewer than one point, N rows).
    With `create_graph=True` the result is differentiable w.r.t. the parameters inside `fn`
    and w.r.t. `x` and `baseline` when they require grad (double back-propagation).

    `scale_invariant=True` (zero baseline only) is the caller's promise that fn(α·x) = fn(x) at
    every path point (`models.input_scale_invariant` checks it for a model). Then
    ∇fn(α·x) = ∇fn(x)/α and IG = x ⊙ ∇fn(x) · (1/P) Σ_{k ∈ points} steps/k, with one gradient
    instead of P: the same value (H_steps·x ⊙ ∇fn(x) for all points), P times cheaper.
    """
    if steps < 1:
        raise AttrrobError(f"integrated_gradients: steps must be ≥ 1, got {steps}")
    points = list(range(1, steps + 1)) if points is None else [int(k) for k in points]
    if not points or any(k < 1 or k > steps for k in points):
        raise AttrrobError(f"integrated_gradients: points must be a non-empty subset of 1..{steps}, got {points}")
    if not torch.is_tensor(baseline):
        baseline = torch.full_like(x, float(baseline))
    if baseline.shape != x.shape:
        raise AttrrobError(f"integrated_gradients: baseline shape {tuple(baseline.shape)} "
                           f"differs from input shape {tuple(x.shape)}")
    # A differentiable IG stays differentiable even when the caller holds torch.no_grad().
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        if scale_invariant:
            if torch.any(baseline != 0):
                raise AttrrobError("integrated_gradients: scale_invariant=True needs a zero baseline")
            if not create_graph:
                x = x.detach()
            factor = sum(steps / k for k in points) / len(points)
            return _row_gradients(fn, x, create_graph) * (factor * x)
        return _riemann_sum(fn, x, baseline, steps, points, create_graph, max_batch)


def _riemann_sum(fn: ScalarFn, x: torch.Tensor, baseline: torch.Tensor, steps: int, points: list[int],
                 create_graph: bool, max_batch: int | None) -> torch.Tensor:
    if not create_graph:  # the result is a constant then, also through the (x − baseline) factor
        x, baseline = x.detach(), baseline.detach()
    n = x.shape[0]
    diff = x - baseline
    alphas = torch.tensor([k / steps for k in points], dtype=x.dtype, device=x.device)
    per_call = len(points) if not max_batch else max(1, int(max_batch) // max(n, 1))
    broadcast = (-1,) + (1,) * x.dim()
    total = None
    for chunk in alphas.split(per_call):
        z = baseline.unsqueeze(0) + chunk.view(broadcast) * diff.unsqueeze(0)  # [p, N, ...]
        grad = _row_gradients(fn, z.reshape(-1, *x.shape[1:]), create_graph)
        grad = grad.reshape(len(chunk), *x.shape).sum(0)
        total = grad if total is None else total + grad
    # Same order of operations as the reference: Σ∇ · ((x − baseline) / P).
    return total * (diff / len(points))


def simple_gradient(fn: ScalarFn, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """∇_x fn(x) per row (the simple-gradient attribution)."""
    return _row_gradients(fn, x, create_graph)


def saliency_map(attributions: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] attributions → [N, H·W] map: Σ_channels |·|, scaled to sum to H·W.

    An all-zero attribution (e.g. an all-zero image with a zero baseline) gives an all-zero map
    (the reference code would return NaN there).
    """
    if attributions.dim() != 4:
        raise AttrrobError(f"saliency_map expects [N, C, H, W] attributions, got shape {tuple(attributions.shape)}")
    h, w = attributions.shape[-2:]
    mass = attributions.abs().sum(1).flatten(1)
    total = mass.sum(1, keepdim=True)
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    return (h * w) * (mass / safe_total)


# ----------------------------------------------------------------------------- scalar functions


def _labels_for(y: torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
    return tile_to(y, rows).to(device=device, dtype=torch.long)


def cross_entropy_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> ScalarFn:
    """z ↦ −log clip(softmax(model(z))_y, 1e-10, 1) per row (the reference code's hand-written CE)."""

    def fn(z: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(model(z, smooth=smooth), dim=1)
        labels = _labels_for(y, z.shape[0], z.device)
        p_true = probs.gather(1, labels[:, None]).squeeze(1)
        return -torch.log(p_true.clamp(PROBABILITY_FLOOR, 1.0))

    return fn


def probability_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> ScalarFn:
    """z ↦ softmax(model(z))_y per row."""

    def fn(z: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(model(z, smooth=smooth), dim=1)
        return probs.gather(1, _labels_for(y, z.shape[0], z.device)[:, None]).squeeze(1)

    return fn


def negative_probability_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> ScalarFn:
    """z ↦ p_n(z) with n = argmax_{j≠y} p_j(z), the most confusing class, chosen anew for every row.

    Equals the reference's top-2 trick (take the top class unless it is y, else the second),
    ties included (lowest index first).
    """

    def fn(z: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(model(z, smooth=smooth), dim=1)
        labels = _labels_for(y, z.shape[0], z.device)
        others = probs.detach().scatter(1, labels[:, None], float("-inf"))
        negative = others.argmax(1)
        return probs.gather(1, negative[:, None]).squeeze(1)

    return fn


def logit_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> ScalarFn:
    """z ↦ model(z)_y per row (the evaluation saliency's function)."""

    def fn(z: torch.Tensor) -> torch.Tensor:
        logits = model(z, smooth=smooth)
        return logits.gather(1, _labels_for(y, z.shape[0], z.device)[:, None]).squeeze(1)

    return fn
