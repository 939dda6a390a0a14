"""Attribution attacks (Ghorbani et al., as run by RAR's `ig_attack.py`), batched over images.

Every attack is the same walk; only the step direction differs:

    for t = 1..iterations:
        d   = direction(x̃)                        # per attack, see below
        x̃   = project(sign_step(x̃, d, α), x, ε, lo, hi, integral)   # attrrob.attacks.pgd pieces
        criterion = 1 if the real network's label changed, else Kendall τ-b(map(x), map(x̃))
        keep x̃ if criterion < best so far          # strict: the first of equal iterates wins

Directions (−∇ of a loss on the *surrogate* (smooth) network's saliency map, sign taken by
`sign_step`; the gradient flows through the IG path z_i = (i/n)·x̃ and its (x̃ − 0) factor by
double back-propagation, i.e. exactly Σ_i (i/n)·(−∇_i) of the reference plus the factor):
- `topk`:        loss = surrogate saliency mass on the original real map's top-`k_attack` pixels
                 (computed as minus the mass off them, see `SaliencyObjective`);
- `mass_center`: loss = −‖centre(surrogate map(x̃)) − centre(real map(x))‖₂ (push the centre away);
- `targeted`:    loss = −surrogate saliency mass on a target mask (raise it there);
- `random`:      d = uniform random signs (no gradient).

An all-zero direction (the top-k mask covering the map's whole support makes the top-k loss
constant) is flagged per image; `zero_direction="random_sign"` then steps along seeded random
signs, `"stay"` keeps the exact mathematics (no move). All randomness of image i comes from its
own generator keyed by (seed, test index, restart), so a batch of one gives the same per-image
result as any batch. Saliency maps are those of `attrrob.ig` (IG of the true-class
logit from a zero baseline, Σ_c|·|, normalised to sum H·W).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .. import metrics
from ..ig import integrated_gradients, logit_fn, saliency_map
from ..models import input_scale_invariant
from ..config import ATTACKS, ZERO_DIRECTION_MODES
from ..errors import ConfigError
from .pgd import project, sign_step

__all__ = [
    "AttackResult",
    "SaliencyObjective",
    "attack_batch",
    "default_target_masks",
    "image_generator",
    "input_gradients_only",
    "real_saliency",
    "surrogate_objective_gradient",
]

# A loss on surrogate maps `[N, H*W]` → `[N]`, to be *decreased* by the walk.
MapObjective = Callable[[torch.Tensor], torch.Tensor]


# Generator stream of the default targeted-attack mask (restart numbers stay far below it).
_TARGET_STREAM = 1 << 20


@dataclass(frozen=True)
class SaliencyObjective:
    """The loss of a gradient attack with its per-image constant (a mask or a centre), `[N, ...]`."""

    attack: str
    constant: torch.Tensor
    height: int
    width: int

    def rows(self, rows: torch.Tensor) -> "SaliencyObjective":
        return SaliencyObjective(self.attack, self.constant[rows], self.height, self.width)

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        if self.attack == "topk":
            # −(mass off the mask) = (mass on the mask) − H·W: the same gradient, but written so
            # that it is *exactly* zero when the mask covers the map's support (pixels off the
            # support contribute exact zeros), so that case is detected instead of stepping
            # along rounding noise.
            return -(maps * (1.0 - self.constant)).sum(1)
        if self.attack == "targeted":
            return -(maps * self.constant).sum(1)
        shift = metrics.mass_center(maps, self.height, self.width) - self.constant
        return -torch.linalg.vector_norm(shift, dim=1)


@dataclass
class AttackResult:
    """Per-image outcome of an attack on a batch (tensors on the attack's device, first dim N)."""

    x_kept: torch.Tensor            # kept iterate (the original where no iterate scored below 1)
    map_original: torch.Tensor      # real-network saliency of x                       [N, H*W]
    map_kept: torch.Tensor          # real-network saliency of x_kept                  [N, H*W]
    kendall_tau: torch.Tensor       # τ-b(map_original, map_kept); 1 where not improved (float64)
    improved: torch.Tensor          # some eligible iterate scored τ < 1               (bool)
    restart: torch.Tensor           # restart of the kept iterate (0 where not improved) (int64)
    step: torch.Tensor              # iteration of the kept iterate (0 = the original)   (int64)
    zero_direction: torch.Tensor    # the direction was exactly zero at some iteration  (bool)
    linf: torch.Tensor              # max |x_kept − x| per image                       (float64)

    def metrics(self, k_metric: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """The paper's metrics on the kept iterate; IN = ρ = τ = 1 where nothing was kept (RAR)."""
        keep = self.improved
        one = torch.ones_like(self.kendall_tau)
        shift = metrics.mass_center_shift(self.map_original, self.map_kept, height, width).double()
        return {
            "topk_intersection": torch.where(
                keep, metrics.topk_intersection(self.map_original, self.map_kept, k_metric), one),
            "kendall_tau": torch.where(keep, self.kendall_tau, one),
            "spearman_rho": torch.where(keep, metrics.spearman_rho(self.map_original, self.map_kept), one),
            "mass_center_shift": torch.where(keep, shift, torch.zeros_like(shift)),
            "linf": self.linf,
        }


def image_generator(seed: int, index: int, restart: int) -> torch.Generator:
    """A CPU generator owned by one test image and restart (independent of batching)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(restart)]).generate_state(2)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return generator


def _random_signs(generators: Sequence[torch.Generator], shape: Sequence[int], device, dtype) -> torch.Tensor:
    signs = [torch.randint(0, 2, tuple(shape), generator=g).mul_(2).sub_(1) for g in generators]
    return torch.stack(signs).to(device=device, dtype=dtype)


def real_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ig_steps: int,
                  max_rows: int | None = None) -> torch.Tensor:
    """The evaluation saliency map `[N, H*W]` of the real (ReLU) network."""
    ig = integrated_gradients(logit_fn(model, y), x.detach(), 0.0, ig_steps, max_batch=max_rows,
                              scale_invariant=input_scale_invariant(model, x, 1.0 / ig_steps))
    return saliency_map(ig).detach()


def surrogate_objective_gradient(model: nn.Module, x_tilde: torch.Tensor, y: torch.Tensor,
                                 objective: MapObjective, ig_steps: int,
                                 max_rows: int | None = None) -> torch.Tensor:
    """d/dx̃ Σ_images objective(surrogate saliency map(x̃)), through the whole IG path.

    When all N·ig_steps path rows fit in `max_rows`, one differentiable IG pass. Otherwise the
    loss is linearised in the IG: with U = ∂loss/∂IG at the full IG (a first, graph-free pass),
    d loss/dx̃ = Σ_chunks (|chunk|/n) · d⟨U, IG_chunk(x̃)⟩/dx̃, each chunk's graph freed before
    the next, so memory is bounded by one chunk while the result is the same derivative.
    """
    fn = logit_fn(model, y, smooth=True)
    x_tilde = x_tilde.detach()
    n_images = x_tilde.shape[0]
    # The ResNets' per-image standardisation makes the path points' gradients scaled copies of
    # one another: one differentiable gradient per image gives the same IG (and its derivative).
    scale_invariant = input_scale_invariant(model, x_tilde, 1.0 / ig_steps)
    with torch.enable_grad():
        if scale_invariant or not max_rows or n_images * ig_steps <= max_rows:
            leaf = x_tilde.requires_grad_(True)
            ig = integrated_gradients(fn, leaf, 0.0, ig_steps, create_graph=True, scale_invariant=scale_invariant)
            (grad,) = torch.autograd.grad(objective(saliency_map(ig)).sum(), leaf)
            return grad
        full_ig = integrated_gradients(fn, x_tilde, 0.0, ig_steps, max_batch=max_rows).requires_grad_(True)
        (upstream,) = torch.autograd.grad(objective(saliency_map(full_ig)).sum(), full_ig)
        points_per_chunk = max(1, max_rows // n_images)
        grad = torch.zeros_like(x_tilde)
        for start in range(1, ig_steps + 1, points_per_chunk):
            points = range(start, min(start + points_per_chunk, ig_steps + 1))
            leaf = x_tilde.detach().requires_grad_(True)
            ig_chunk = integrated_gradients(fn, leaf, 0.0, ig_steps, points=points, create_graph=True)
            weight = len(points) / ig_steps
            (part,) = torch.autograd.grad((upstream * ig_chunk).sum() * weight, leaf)
            grad += part
        return grad


def default_target_masks(indices: Sequence[int], height: int, width: int, k: int, seed: int) -> torch.Tensor:
    """Default target of the targeted attack: per image, a square of ⌈√k⌉² pixels (clipped to the
    image) at a position drawn uniformly by the image's own generator (on a stream of its own,
    apart from the walk's restarts). Returns `[N, H*W]` 0/1 float masks."""
    side = min(int(np.ceil(np.sqrt(k))), height, width)
    masks = torch.zeros(len(indices), height, width)
    for row, index in enumerate(indices):
        g = image_generator(seed, int(index), _TARGET_STREAM)
        top = int(torch.randint(0, height - side + 1, (1,), generator=g))
        left = int(torch.randint(0, width - side + 1, (1,), generator=g))
        masks[row, top:top + side, left:left + side] = 1.0
    return masks.flatten(1)


def _objective(attack: str, map_original: torch.Tensor, settings: dict, height: int, width: int,
               target: torch.Tensor | None) -> SaliencyObjective | None:
    if attack == "topk":
        return SaliencyObjective(attack, metrics.topk_mask(map_original, int(settings["k_attack"])), height, width)
    if attack == "mass_center":
        return SaliencyObjective(attack, metrics.mass_center(map_original, height, width), height, width)
    if attack == "targeted":
        return SaliencyObjective(attack, target, height, width)
    return None  # random: no objective


@contextlib.contextmanager
def input_gradients_only(model: nn.Module):
    """Turn off parameter gradients while attacking: autograd then neither keeps nor computes them."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], attack: str,
                 settings: dict, *, lo: float, hi: float, integral: bool, seed: int = 0,
                 target: torch.Tensor | None = None, max_rows: int | None = None) -> AttackResult:
    """Attack a batch of correctly classified images `x` `[N, C, H, W]` (labels `y`, test `indices`).

    `settings` is `attrrob.config.attack_settings(...)`: eps, step_size, iterations, k_attack,
    ig_steps, restarts, zero_direction. `target` `[N, H*W]` is the targeted attack's mask
    (default `default_target_masks`). `max_rows` bounds the path rows per IG call (memory).
    """
    with input_gradients_only(model):
        return _attack_batch(model, x, y, indices, attack, settings, lo=lo, hi=hi, integral=integral,
                             seed=seed, target=target, max_rows=max_rows)


def _attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], attack: str,
                  settings: dict, *, lo: float, hi: float, integral: bool, seed: int,
                  target: torch.Tensor | None, max_rows: int | None) -> AttackResult:
    if attack not in ATTACKS:
        raise ConfigError(f"unknown attack '{attack}' (known: {', '.join(ATTACKS)})")
    zero_mode = settings["zero_direction"]
    if zero_mode not in ZERO_DIRECTION_MODES:
        raise ConfigError(f"attack.zero_direction: expected one of {', '.join(ZERO_DIRECTION_MODES)}, got {zero_mode!r}")
    eps, alpha = float(settings["eps"]), float(settings["step_size"])
    iterations, ig_steps = int(settings["iterations"]), int(settings["ig_steps"])
    restarts = max(1, int(settings["restarts"]))
    x, y = x.detach(), y.to(x.device)
    n, _, height, width = x.shape
    indices = [int(i) for i in indices]
    if len(indices) != n:
        raise ValueError(f"attack_batch: {len(indices)} indices for {n} images")

    map_original = real_saliency(model, x, y, ig_steps, max_rows)
    if attack == "targeted":
        target = (default_target_masks(indices, height, width, int(settings["k_attack"]), seed)
                  if target is None else target)
        target = target.to(device=x.device, dtype=x.dtype)
    objective = _objective(attack, map_original, settings, height, width, target)

    best_x = x.clone()
    best_map = map_original.clone()
    best_tau = torch.ones(n, dtype=torch.float64, device=x.device)
    best_restart = torch.zeros(n, dtype=torch.int64, device=x.device)
    best_step = torch.zeros(n, dtype=torch.int64, device=x.device)
    zero_flag = torch.zeros(n, dtype=torch.bool, device=x.device)

    for restart in range(restarts):
        generators = [image_generator(seed, i, restart) for i in indices]
        x_tilde = x.clone()
        active = torch.arange(n, device=x.device)
        for step in range(1, iterations + 1):
            if active.numel() == 0:
                break
            xa, ya = x_tilde[active], y[active]
            gens = [generators[i] for i in active.tolist()]
            if objective is None:
                direction = _random_signs(gens, xa.shape[1:], x.device, x.dtype)
                zero = torch.zeros(len(gens), dtype=torch.bool, device=x.device)
            else:
                direction = -surrogate_objective_gradient(model, xa, ya, objective.rows(active), ig_steps, max_rows)
                zero = direction.flatten(1).eq(0).all(1)
                zero_flag[active[zero]] = True
                if zero_mode == "random_sign" and bool(zero.any()):
                    rows = zero.nonzero().flatten().tolist()
                    direction[zero] = _random_signs([gens[r] for r in rows], xa.shape[1:], x.device, x.dtype)
            x_new = project(sign_step(xa, direction, alpha), x[active], eps, lo, hi, integral)
            moved = (x_new != xa).flatten(1).any(1)
            x_tilde[active] = x_new
            # An iterate that did not move was already scored; a deterministic direction at an
            # unmoved iterate repeats forever, so that image's walk is finished.
            if objective is None:
                finished = torch.zeros_like(moved)  # fresh noise each step: never a fixed point
            elif zero_mode == "random_sign":
                finished = ~moved & ~zero  # a random step that moved nothing is no fixed point
            else:
                finished = ~moved
            scored = active[moved]
            if scored.numel():
                xs, ys = x_tilde[scored], y[scored]
                with torch.no_grad():
                    still_correct = model(xs).argmax(1) == ys
                maps = real_saliency(model, xs, ys, ig_steps, max_rows)
                tau = metrics.kendall_tau_b(map_original[scored], maps)
                criterion = torch.where(still_correct, tau, torch.ones_like(tau))
                better = criterion < best_tau[scored]
                chosen = scored[better]
                best_tau[chosen] = criterion[better]
                best_x[chosen] = xs[better]
                best_map[chosen] = maps[better]
                best_restart[chosen] = restart
                best_step[chosen] = step
            active = active[~finished]

    return AttackResult(x_kept=best_x, map_original=map_original, map_kept=best_map, kendall_tau=best_tau,
                        improved=best_tau < 1.0, restart=best_restart, step=best_step, zero_direction=zero_flag,
                        linf=(best_x - x).flatten(1).abs().amax(1).double())
