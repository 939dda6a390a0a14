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
    "LabelledFn",
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
                         max_batch: int | None = None, scale_invariant: bool | torch.Tensor = False) -> torch.Tensor:
    """Right-Riemann integrated gradients of `fn` along baseline → x.

    IG = (x − baseline) ⊙ (1/P) Σ_{k ∈ points} ∇fn(baseline + (k/steps)(x − baseline)),
    points defaulting to 1..steps (P = steps). `points=range(a, steps + 1, a)` gives the
    approximate IG of the reference code (every a-th point, divided by steps/a).

    `fn` receives the path points stacked point-major, P·N rows per call, at most `max_batch`
    rows per call (`None`/0: all points at once; never fewer than one point, N rows).
    With `create_graph=True` the result is differentiable w.r.t. the parameters inside `fn`
    and w.r.t. `x` and `baseline` when they require grad (double back-propagation).

    `scale_invariant` (zero baseline only): True, or a bool `[N]` mask, is the caller's promise
    that fn(α·x_i) = fn(x_i) at every path point of the images it marks
    (`models.scale_invariant_images` gives it for a model). Then ∇fn(α·x) = ∇fn(x)/α and
    IG = x ⊙ ∇fn(x) · (1/P) Σ_{k ∈ points} steps/k, one gradient instead of P: the same value,
    P times cheaper. With a mixed mask the marked images take that path and the others the full
    one; that needs `fn.images(index)` (the factories below have it; without it every image takes
    the full path).
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
    fast = _invariant_rows(scale_invariant, x.shape[0])
    if fast is not None and fast.any() and torch.any(baseline != 0):
        raise AttrrobError("integrated_gradients: scale_invariant=True needs a zero baseline")
    # A differentiable IG stays differentiable even when the caller holds torch.no_grad().
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        if fast is None or not fast.any():
            return _riemann_sum(fn, x, baseline, steps, points, create_graph, max_batch)
        if fast.all():
            return _one_gradient(fn, x, steps, points, create_graph)
        if not hasattr(fn, "images"):  # cannot split the rows of an opaque function: full path, same value
            return _riemann_sum(fn, x, baseline, steps, points, create_graph, max_batch)
        rows_fast, rows_full = fast.nonzero().flatten().to(x.device), (~fast).nonzero().flatten().to(x.device)
        parts = [_one_gradient(fn.images(rows_fast), x[rows_fast], steps, points, create_graph),
                 _riemann_sum(fn.images(rows_full), x[rows_full], baseline[rows_full], steps, points,
                              create_graph, max_batch)]
        order = torch.cat([rows_fast, rows_full])
        return torch.cat(parts)[torch.argsort(order)]  # indexing keeps the graph to x and θ


def _invariant_rows(scale_invariant: bool | torch.Tensor, n: int) -> torch.Tensor | None:
    """The `scale_invariant` argument as a CPU bool mask `[n]` (None: no image)."""
    if not torch.is_tensor(scale_invariant):
        return torch.ones(n, dtype=torch.bool) if scale_invariant else None
    mask = scale_invariant.detach().to(device="cpu", dtype=torch.bool).reshape(-1)
    if mask.numel() != n:
        raise AttrrobError(f"integrated_gradients: scale_invariant mask has {mask.numel()} entries for {n} images")
    return mask


def _one_gradient(fn: ScalarFn, x: torch.Tensor, steps: int, points: list[int], create_graph: bool) -> torch.Tensor:
    """The zero-baseline IG of a scale-invariant fn: x ⊙ ∇fn(x) · (1/P) Σ steps/k."""
    if not create_graph:
        x = x.detach()
    factor = sum(steps / k for k in points) / len(points)
    return _row_gradients(fn, x, create_graph) * (factor * x)


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


class LabelledFn:
    """A per-row scalar function of a model and per-image labels, z ↦ body(model(z), labels).

    Callable as a `ScalarFn`; `images(index)` is the same function for a subset of the images
    (their labels), which lets IG send some images down another path (see `scale_invariant`).
    """

    def __init__(self, body: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], model: nn.Module,
                 y: torch.Tensor, smooth: bool):
        self.body, self.model, self.y, self.smooth = body, model, y, smooth

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.model(z, smooth=self.smooth), _labels_for(self.y, z.shape[0], z.device))

    def images(self, index: torch.Tensor) -> "LabelledFn":
        return LabelledFn(self.body, self.model, self.y[index.to(self.y.device)], self.smooth)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    p_true = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return -torch.log(p_true.clamp(PROBABILITY_FLOOR, 1.0))


def _probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)


def _negative_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    probs = F.softmax(logits, dim=1)
    others = probs.detach().scatter(1, labels[:, None], float("-inf"))
    return probs.gather(1, others.argmax(1)[:, None]).squeeze(1)


def _logit(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, labels[:, None]).squeeze(1)


def cross_entropy_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> LabelledFn:
    """z ↦ −log clip(softmax(model(z))_y, 1e-10, 1) per row (the reference code's hand-written CE)."""
    return LabelledFn(_cross_entropy, model, y, smooth)


def probability_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> LabelledFn:
    """z ↦ softmax(model(z))_y per row."""
    return LabelledFn(_probability, model, y, smooth)


def negative_probability_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> LabelledFn:
    """z ↦ p_n(z) with n = argmax_{j≠y} p_j(z), the most confusing class, chosen anew for every row.

    Equals the reference's top-2 trick (take the top class unless it is y, else the second),
    ties included (lowest index first).
    """
    return LabelledFn(_negative_probability, model, y, smooth)


def logit_fn(model: nn.Module, y: torch.Tensor, smooth: bool = False) -> LabelledFn:
    """z ↦ model(z)_y per row (the evaluation saliency's function)."""
    return LabelledFn(_logit, model, y, smooth)
