"""Attribution attacks (Ghorbani et al., as run by RAR's `ig_attack.py`), batched over images.

Every attack is the same walk; only the step direction differs. Per image and run:

    x̃ = x
    for t = 1..iterations:
        d  = step_direction(x̃)                      # per attack (below), then the zero-direction policy
        x̃  = project(sign_step(x̃, d, α), x, ε, lo, hi, integral)      # attrrob.attacks.pgd
        c  = walk_criterion(label kept?, τ-b(map(x), map(x̃)))         # 1 where the label changed
        keep x̃ if accepted(c, kept c)                # strictly lower: the first of equal iterates wins
        stop if walk_finished(...)                    # a deterministic direction at an unmoved iterate
    keep the run with the lowest kept criterion       # `combine_runs`: the first run among equals
    (runs after the first walk only the images whose runs can differ: `rows_whose_runs_differ`)

Each piece is a named function below (`step_direction`, `resolve_zero_directions`,
`walk_criterion`, `accepted`, `walk_finished`, `walk`, `combine_runs`); step and projection are
`attrrob.attacks.pgd`'s.

Directions (−∇ of a loss on the *surrogate* (smooth) network's saliency map, sign taken by
`sign_step`; the gradient flows through the IG path z_i = (i/n)·x̃ and its (x̃ − 0) factor by
double back-propagation, i.e. exactly Σ_i (i/n)·(−∇_i) of the reference plus the factor):
- `topk`:        loss = surrogate saliency mass on the original real map's top-`k_attack` pixels
                 (written as minus the mass off them, see `SaliencyObjective`); ties at the k-th
                 value are broken by the image's own seeded generator, not by pixel index;
- `mass_center`: loss = −‖c(x̃) − c₀‖², c = the surrogate map's mass centre and c₀ = c(x)
                 truncated to integers (RAR's `ig_attack.py`);
- `targeted`:    loss = −surrogate saliency mass on a target mask (raise it there);
- `random`:      d = uniform random signs (no gradient).
`noise` (the same-ε noise control, `attrrob.attacks.noise`) is no walk: one random ±ε sign step.

An all-zero direction (the top-k mask covering the map's whole support makes the top-k loss
constant) is flagged per image; `zero_direction="random_sign"` then steps along seeded random
signs, `"stay"` keeps the exact mathematics (no move). Every attack makes 3 runs by default
(RAR's `attribution_attack_times`), the lowest-τ one kept: `random_restarts` for the random
attack, `restarts` for the others, whose runs differ through their seeded random-sign steps; with
`"stay"` those are deterministic and run once (`attrrob.config.runs_of`). All randomness of image
i comes from its own generators keyed by (seed, test index, stream), so a batch of one gives the
same per-image result as any batch. Saliency maps are those of `attrrob.ig` (IG of the true-class
logit from a zero baseline, Σ_c|·|, normalised to sum H·W).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import metrics, registry
from ..config import ZERO_DIRECTION_MODES, runs_of
from ..errors import ConfigError
from ..ig import integrated_gradients, logit_fn, saliency_map
from ..models import scale_invariant_images
from .pgd import project, sign_step

__all__ = [
    "AttackProblem",
    "AttackResult",
    "SaliencyObjective",
    "WalkRun",
    "accepted",
    "attack_batch",
    "attack_objective",
    "combine_runs",
    "default_target_masks",
    "image_generator",
    "input_gradients_only",
    "number_of_runs",
    "prepare_attack",
    "real_saliency",
    "resolve_zero_directions",
    "step_direction",
    "surrogate_objective_gradient",
    "surrogate_saliency",
    "rows_whose_runs_differ",
    "walk",
    "walk_criterion",
    "walk_finished",
]

# Generator streams of an image besides its runs' (run numbers stay far below them).
_TARGET_STREAM = 1 << 20     # the default targeted-attack mask
_MASK_STREAM = _TARGET_STREAM + 1   # the tie-break of the top-k attack's mask


# ----------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class SaliencyObjective:
    """The loss of a gradient attack on surrogate maps `[N, H*W]` → `[N]`, to be *decreased*,
    with its per-image constant `[N, ...]` (a mask or a centre)."""

    attack: str
    constant: torch.Tensor
    height: int
    width: int

    def rows(self, rows: torch.Tensor) -> "SaliencyObjective":
        return SaliencyObjective(self.attack, self.constant[rows], self.height, self.width)

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        return registry.attack(self.attack).map_loss_fn(maps, self.constant, self.height, self.width)


# ---- the map losses and their per-image constants of the built-in gradient attacks (registry)

def mass_off_mask_loss(maps: torch.Tensor, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """topk: −(mass off the mask) = (mass on the mask) − H·W: the same gradient in exact
    arithmetic, but this form is *exactly* zero when the mask covers the map's support (pixels
    off the support contribute exact zeros), so that case is detected instead of stepping along
    the rounding noise that the mass-on-mask form leaves there (tests/test_attacks_saliency.py
    shows both)."""
    return -(maps * (1.0 - mask)).sum(1)


def mass_on_mask_loss(maps: torch.Tensor, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """targeted: −(mass on the target mask)."""
    return -(maps * mask).sum(1)


def centre_shift_loss(maps: torch.Tensor, centre: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """mass_center: −‖C(map) − C₀‖² (the walk moves the centre away from C₀)."""
    shift = metrics.mass_center(maps, height, width) - centre
    return -(shift * shift).sum(1)


def topk_constant(model, x, y, map_original, settings, *, indices, seed, target, max_rows):
    """The top-k mask of each original map (ties broken by the image's own generator)."""
    return metrics.topk_mask(map_original, int(settings["k_attack"]), attack_mask_generators(seed, indices))


def mass_center_constant(model, x, y, map_original, settings, *, indices, seed, target, max_rows):
    """RAR: the reference point is the surrogate's own centre at x, cast to int (truncation)."""
    _, _, height, width = x.shape
    centre = metrics.mass_center(surrogate_saliency(model, x, y, int(settings["ig_steps"]), max_rows), height, width)
    return torch.trunc(centre)


def target_constant(model, x, y, map_original, settings, *, indices, seed, target, max_rows):
    """The given target mask, or the default per-image random square."""
    _, _, height, width = x.shape
    if target is None:
        target = default_target_masks(indices, height, width, int(settings["k_attack"]), seed)
    return target.to(device=x.device, dtype=x.dtype)


def image_generator(seed: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator owned by one test image and stream (a run, or `_TARGET_STREAM`/`_MASK_STREAM`),
    independent of batching."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(stream)]).generate_state(2)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return generator


def _random_signs(generators: Sequence[torch.Generator], shape: Sequence[int], device, dtype) -> torch.Tensor:
    signs = [torch.randint(0, 2, tuple(shape), generator=g).mul_(2).sub_(1) for g in generators]
    return torch.stack(signs).to(device=device, dtype=dtype)


def _saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ig_steps: int, max_rows: int | None,
              smooth: bool) -> torch.Tensor:
    x = x.detach()
    ig = integrated_gradients(logit_fn(model, y, smooth=smooth), x, 0.0, ig_steps, max_batch=max_rows,
                              scale_invariant=scale_invariant_images(model, x, 1.0 / ig_steps))
    return saliency_map(ig).detach()


def real_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ig_steps: int,
                  max_rows: int | None = None) -> torch.Tensor:
    """The evaluation saliency map `[N, H*W]` of the real (ReLU) network."""
    return _saliency(model, x, y, ig_steps, max_rows, smooth=False)


def surrogate_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ig_steps: int,
                       max_rows: int | None = None) -> torch.Tensor:
    """The saliency map `[N, H*W]` of the smooth surrogate (the map the attack differentiates)."""
    return _saliency(model, x, y, ig_steps, max_rows, smooth=True)


def surrogate_objective_gradient(model: nn.Module, x_tilde: torch.Tensor, y: torch.Tensor,
                                 objective: SaliencyObjective, ig_steps: int,
                                 max_rows: int | None = None) -> torch.Tensor:
    """d/dx̃ Σ_images objective(surrogate saliency map(x̃)), through the whole IG path.

    The objective is a sum of per-image terms, so images may be differentiated apart: those on
    which the model is scale invariant (`models.scale_invariant_images`: the ResNets'
    standardisation) take one differentiable gradient each, the others the full path.
    """
    x_tilde = x_tilde.detach()
    fast = scale_invariant_images(model, x_tilde, 1.0 / ig_steps)
    if bool(fast.all()) or not bool(fast.any()):
        return _objective_gradient(model, x_tilde, y, objective, ig_steps, max_rows, bool(fast.all()))
    grad = torch.empty_like(x_tilde)
    for rows, invariant in ((fast.nonzero().flatten(), True), ((~fast).nonzero().flatten(), False)):
        grad[rows] = _objective_gradient(model, x_tilde[rows], y[rows], objective.rows(rows), ig_steps,
                                         max_rows, invariant)
    return grad


def _objective_gradient(model: nn.Module, x_tilde: torch.Tensor, y: torch.Tensor, objective: SaliencyObjective,
                        ig_steps: int, max_rows: int | None, invariant: bool) -> torch.Tensor:
    """When all N·ig_steps path rows fit in `max_rows` (or one row per image does, `invariant`),
    one differentiable IG pass. Otherwise the loss is linearised in the IG: with U = ∂loss/∂IG
    at the full IG (a first, graph-free pass), d loss/dx̃ = Σ_chunks (|chunk|/n) ·
    d⟨U, IG_chunk(x̃)⟩/dx̃, each chunk's graph freed before the next, so memory is bounded by one
    chunk while the result is the same derivative."""
    fn = logit_fn(model, y, smooth=True)
    n_images = x_tilde.shape[0]
    with torch.enable_grad():
        if invariant or not max_rows or n_images * ig_steps <= max_rows:
            leaf = x_tilde.detach().requires_grad_(True)
            ig = integrated_gradients(fn, leaf, 0.0, ig_steps, create_graph=True, scale_invariant=invariant)
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
    apart from the walk's runs). Returns `[N, H*W]` 0/1 float masks."""
    side = min(int(np.ceil(np.sqrt(k))), height, width)
    masks = torch.zeros(len(indices), height, width)
    for row, index in enumerate(indices):
        g = image_generator(seed, int(index), _TARGET_STREAM)
        top = int(torch.randint(0, height - side + 1, (1,), generator=g))
        left = int(torch.randint(0, width - side + 1, (1,), generator=g))
        masks[row, top:top + side, left:left + side] = 1.0
    return masks.flatten(1)


def attack_mask_generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """The generators that break ties in the top-k attack's mask, one per image."""
    return [image_generator(seed, int(i), _MASK_STREAM) for i in indices]


def attack_objective(attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, map_original: torch.Tensor,
                     settings: dict, *, indices: Sequence[int], seed: int, target: torch.Tensor | None,
                     max_rows: int | None = None) -> SaliencyObjective | None:
    """The loss a gradient attack decreases, with its per-image constant; None for a random walk."""
    _, _, height, width = x.shape
    build = registry.attack(attack).objective_fn
    if build is None:
        return None
    constant = build(model, x, y, map_original, settings, indices=indices, seed=seed, target=target,
                     max_rows=max_rows)
    return SaliencyObjective(attack, constant, height, width)


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


# ----------------------------------------------------------------------------- the walk's pieces


@dataclass(frozen=True)
class AttackProblem:
    """Everything a walk needs that does not change while walking (tensors on the attack's device)."""

    model: nn.Module
    x: torch.Tensor                       # the original images                      [N, C, H, W]
    y: torch.Tensor                       # their (correctly predicted) labels        [N]
    indices: tuple[int, ...]              # their test indices (keys of their generators)
    attack: str
    objective: SaliencyObjective | None   # None: the random attack
    map_original: torch.Tensor            # real-network saliency of x               [N, H*W]
    eps: float
    step_size: float
    iterations: int
    ig_steps: int
    zero_direction: str
    k_metric: int
    ties: str
    lo: float
    hi: float
    integral: bool
    seed: int
    max_rows: int | None


def number_of_runs(attack: str, settings: dict) -> int:
    """Runs (restarts) of an attack, the lowest-τ one kept: `attrrob.config.runs_of`."""
    return runs_of(attack, settings)


def prepare_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], attack: str,
                   settings: dict, *, lo: float, hi: float, integral: bool, seed: int = 0,
                   target: torch.Tensor | None = None, max_rows: int | None = None) -> AttackProblem:
    """Check the settings, compute the original maps and the objective."""
    registry.attack(attack)  # an unknown name is a ConfigError naming the known ones
    zero_mode = settings["zero_direction"]
    if zero_mode not in ZERO_DIRECTION_MODES:
        raise ConfigError(f"attack.zero_direction: expected one of {', '.join(ZERO_DIRECTION_MODES)}, got {zero_mode!r}")
    ties = settings["ties"]
    if ties not in metrics.TIES_MODES:
        raise ConfigError(f"attack.ties: expected one of {', '.join(metrics.TIES_MODES)}, got {ties!r}")
    x, y = x.detach(), y.to(x.device)
    indices = tuple(int(i) for i in indices)
    if len(indices) != x.shape[0]:
        raise ValueError(f"attack_batch: {len(indices)} indices for {x.shape[0]} images")
    ig_steps = int(settings["ig_steps"])
    map_original = real_saliency(model, x, y, ig_steps, max_rows)
    objective = attack_objective(attack, model, x, y, map_original, settings, indices=indices, seed=seed,
                                 target=target, max_rows=max_rows)
    return AttackProblem(model=model, x=x, y=y, indices=indices, attack=attack, objective=objective,
                         map_original=map_original, eps=float(settings["eps"]),
                         step_size=float(settings["step_size"]), iterations=int(settings["iterations"]),
                         ig_steps=ig_steps, zero_direction=zero_mode, k_metric=int(settings["k_metric"]),
                         ties=ties, lo=lo, hi=hi, integral=integral, seed=seed, max_rows=max_rows)


def resolve_zero_directions(direction: torch.Tensor, generators: Sequence[torch.Generator],
                            mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-direction policy: flag the images whose direction is exactly zero (bool `[N]`);
    with `mode="random_sign"` they step along random signs from their generators instead,
    with `"stay"` they keep the zero direction (no move)."""
    zero = direction.flatten(1).eq(0).all(1)
    if mode == "random_sign" and bool(zero.any()):
        rows = zero.nonzero().flatten().tolist()
        direction = direction.clone()
        direction[zero] = _random_signs([generators[r] for r in rows], direction.shape[1:], direction.device,
                                        direction.dtype)
    return direction, zero


def step_direction(problem: AttackProblem, x_tilde: torch.Tensor, rows: torch.Tensor,
                   generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """The direction (its sign is taken by the step) and the zero flag of images `rows` at x̃."""
    if problem.objective is None:  # random attack: fresh noise, never a zero direction
        direction = _random_signs(generators, x_tilde.shape[1:], x_tilde.device, x_tilde.dtype)
        return direction, torch.zeros(len(generators), dtype=torch.bool, device=x_tilde.device)
    direction = -surrogate_objective_gradient(problem.model, x_tilde, problem.y[rows], problem.objective.rows(rows),
                                              problem.ig_steps, problem.max_rows)
    return resolve_zero_directions(direction, generators, problem.zero_direction)


def walk_criterion(label_kept: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The criterion of an iterate: Kendall's τ-b with the original map where the real network's
    label is unchanged, 1 where it changed (such an iterate is not eligible; the walk goes on)."""
    return torch.where(label_kept, tau, torch.ones_like(tau))


def accepted(criterion: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The acceptance rule: an iterate replaces the kept one when its criterion is strictly lower
    (so the first of equal iterates stays, and a NaN τ of a constant map is never kept)."""
    return criterion < kept


def walk_finished(moved: torch.Tensor, zero: torch.Tensor, attack: str, zero_mode: str) -> torch.Tensor:
    """The early stop: an iterate that did not move was already scored, and a deterministic
    direction at an unmoved iterate repeats forever, so that image's walk is over. Not so for the
    random attack (fresh noise every step) or a random-sign step that happened to move nothing."""
    if registry.attack(attack).stochastic:
        return torch.zeros_like(moved)
    if zero_mode == "random_sign":
        return ~moved & ~zero
    return ~moved


def _score(problem: AttackProblem, x_tilde: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Criterion and real-network map of iterates x̃ of images `rows`."""
    y = problem.y[rows]
    with torch.no_grad():
        label_kept = problem.model(x_tilde).argmax(1) == y
    maps = real_saliency(problem.model, x_tilde, y, problem.ig_steps, problem.max_rows)
    return walk_criterion(label_kept, metrics.kendall_tau_b(problem.map_original[rows], maps)), maps


@dataclass
class WalkRun:
    """The outcome of one run (restart) per image (first dim N, on the attack's device)."""

    x_kept: torch.Tensor            # kept iterate (the original where none was accepted)
    map_kept: torch.Tensor          # its real-network map
    criterion: torch.Tensor         # its criterion (1 where none was accepted)        float64
    step: torch.Tensor              # its iteration (0 = the original)                 int64
    zero_direction: torch.Tensor    # the direction was exactly zero at some iteration bool
    trace_criterion: torch.Tensor   # kept criterion after t = 0..T iterations  [N, T+1] float64
    trace_intersection: torch.Tensor  # IN (k_metric, ties) of that kept iterate [N, T+1] float64


def walk(problem: AttackProblem, run: int) -> WalkRun:
    """One run of the walk for every image of the problem, with its generators of stream `run`."""
    x, n, device = problem.x, len(problem.indices), problem.x.device
    generators = [image_generator(problem.seed, i, run) for i in problem.indices]
    x_kept, map_kept = x.clone(), problem.map_original.clone()
    criterion = torch.ones(n, dtype=torch.float64, device=device)
    intersection = torch.ones(n, dtype=torch.float64, device=device)
    kept_step = torch.zeros(n, dtype=torch.int64, device=device)
    zero_flag = torch.zeros(n, dtype=torch.bool, device=device)
    trace_criterion = torch.ones(n, problem.iterations + 1, dtype=torch.float64, device=device)
    trace_intersection = torch.ones_like(trace_criterion)
    x_tilde = x.clone()
    active = torch.arange(n, device=device)
    for step in range(1, problem.iterations + 1):
        if active.numel():
            xa = x_tilde[active]
            direction, zero = step_direction(problem, xa, active, [generators[i] for i in active.tolist()])
            zero_flag[active[zero]] = True
            x_new = project(sign_step(xa, direction, problem.step_size), x[active], problem.eps, problem.lo,
                            problem.hi, problem.integral)
            moved = (x_new != xa).flatten(1).any(1)
            x_tilde[active] = x_new
            scored = active[moved]  # an unmoved iterate was scored already
            if scored.numel():
                values, maps = _score(problem, x_tilde[scored], scored)
                better = accepted(values, criterion[scored])
                chosen = scored[better]
                criterion[chosen] = values[better]
                x_kept[chosen] = x_tilde[chosen]
                map_kept[chosen] = maps[better]
                kept_step[chosen] = step
                # IN only changes with the kept iterate: computed for the accepted rows only.
                intersection[chosen] = metrics.topk_intersection(problem.map_original[chosen], maps[better],
                                                                 problem.k_metric, problem.ties)
            active = active[~walk_finished(moved, zero, problem.attack, problem.zero_direction)]
        trace_criterion[:, step] = criterion
        trace_intersection[:, step] = intersection
    return WalkRun(x_kept=x_kept, map_kept=map_kept, criterion=criterion, step=kept_step, zero_direction=zero_flag,
                   trace_criterion=trace_criterion, trace_intersection=trace_intersection)


@dataclass
class AttackResult:
    """Per-image outcome of an attack on a batch (tensors on the attack's device, first dim N)."""

    x_kept: torch.Tensor            # kept iterate (the original where no iterate scored below 1)
    map_original: torch.Tensor      # real-network saliency of x                       [N, H*W]
    map_kept: torch.Tensor          # real-network saliency of x_kept                  [N, H*W]
    kendall_tau: torch.Tensor       # τ-b(map_original, map_kept); 1 where not improved (float64)
    improved: torch.Tensor          # some eligible iterate scored τ < 1               (bool)
    restart: torch.Tensor           # run of the kept iterate (0 where not improved)   (int64)
    step: torch.Tensor              # iteration of the kept iterate (0 = the original)   (int64)
    zero_direction: torch.Tensor    # the direction was exactly zero at some iteration of some run (bool)
    linf: torch.Tensor              # max |x_kept − x| per image                       (float64)
    trace_kendall_tau: torch.Tensor         # best-over-runs kept criterion after t iterations [N, T+1]
    trace_topk_intersection: torch.Tensor   # IN of that kept iterate (the run's ties mode)   [N, T+1]

    def topk_intersection(self, k_metric: int, ties: str = "expected") -> torch.Tensor:
        """IN of the kept iterate; 1 where nothing was kept (RAR)."""
        return torch.where(self.improved, metrics.topk_intersection(self.map_original, self.map_kept, k_metric, ties),
                           torch.ones_like(self.kendall_tau))

    def metrics(self, k_metric: int, height: int, width: int, ties: str = "expected") -> dict[str, torch.Tensor]:
        """The paper's metrics on the kept iterate; IN = ρ = τ = 1 where nothing was kept (RAR)."""
        keep = self.improved
        one = torch.ones_like(self.kendall_tau)
        shift = metrics.mass_center_shift(self.map_original, self.map_kept, height, width).double()
        return {
            "topk_intersection": self.topk_intersection(k_metric, ties),
            "kendall_tau": torch.where(keep, self.kendall_tau, one),
            "spearman_rho": torch.where(keep, metrics.spearman_rho(self.map_original, self.map_kept), one),
            "mass_center_shift": torch.where(keep, shift, torch.zeros_like(shift)),
            "linf": self.linf,
        }


def _first_min(values: torch.Tensor) -> torch.Tensor:
    """Index of the first minimum along dim 0 (the earliest run among equals)."""
    lowest = values.min(0, keepdim=True).values
    first = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (values.dim() - 1)))
    return torch.where(values == lowest, first, values.shape[0]).min(0).values


def combine_runs(problem: AttackProblem, runs: Sequence[WalkRun]) -> AttackResult:
    """Per image, the run with the lowest kept criterion (the earliest among equals), and per
    iteration t the best over runs of their kept criteria after t iterations (the trace)."""
    n = len(problem.indices)
    rows = torch.arange(n, device=problem.x.device)
    best = _first_min(torch.stack([r.criterion for r in runs]))

    def pick(name: str) -> torch.Tensor:
        return torch.stack([getattr(r, name) for r in runs])[best, rows]

    trace = torch.stack([r.trace_criterion for r in runs])                 # [R, N, T+1]
    best_t = _first_min(trace)                                             # [N, T+1]
    trace_in = torch.stack([r.trace_intersection for r in runs]).gather(0, best_t.unsqueeze(0)).squeeze(0)
    x_kept, criterion = pick("x_kept"), pick("criterion")
    improved = criterion < 1.0
    return AttackResult(x_kept=x_kept, map_original=problem.map_original, map_kept=pick("map_kept"),
                        kendall_tau=criterion, improved=improved, restart=torch.where(improved, best, 0),
                        step=pick("step"), zero_direction=torch.stack([r.zero_direction for r in runs]).any(0),
                        linf=(x_kept - problem.x).flatten(1).abs().amax(1).double(),
                        trace_kendall_tau=trace.min(0).values, trace_topk_intersection=trace_in)


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], attack: str,
                 settings: dict, *, lo: float, hi: float, integral: bool, seed: int = 0,
                 target: torch.Tensor | None = None, max_rows: int | None = None) -> AttackResult:
    """Attack a batch of correctly classified images `x` `[N, C, H, W]` (labels `y`, test `indices`).

    `settings` is `attrrob.config.attack_settings(...)`: eps, step_size, iterations, k_attack,
    k_metric, ig_steps, restarts, random_restarts, zero_direction, ties. `target` `[N, H*W]` is
    the targeted attack's mask (default `default_target_masks`). `max_rows` bounds the path rows
    per IG call (memory).
    """
    whole_batch = registry.attack(attack).batch_fn
    if whole_batch is not None:  # no walk (the noise control: one random sign step)
        return whole_batch(model, x, y, indices, settings, lo=lo, hi=hi, integral=integral, seed=seed,
                           max_rows=max_rows)
    with input_gradients_only(model):
        problem = prepare_attack(model, x, y, indices, attack, settings, lo=lo, hi=hi, integral=integral,
                                 seed=seed, target=target, max_rows=max_rows)
        first = walk(problem, 0)
        runs, rows = [first], rows_whose_runs_differ(problem, first)
        for run in range(1, number_of_runs(attack, settings)):
            if len(rows) == len(problem.indices):
                runs.append(walk(problem, run))
            else:  # the other images would repeat run 0 exactly: only these walk again
                runs.append(_replace_rows(first, rows, walk(_problem_rows(problem, rows), run)) if len(rows) else first)
        return combine_runs(problem, runs)


def rows_whose_runs_differ(problem: AttackProblem, first: WalkRun) -> torch.Tensor:
    """Images whose later runs can differ from run 0: all of them for the random attack; for the
    gradient attacks those whose walk took a random-sign step at a zero direction. Any other
    image's walk is a function of its image alone, so every run would repeat run 0 (and
    `combine_runs` keeps the earliest of equals): it is not walked again."""
    if registry.attack(problem.attack).stochastic:
        return torch.arange(len(problem.indices), device=problem.x.device)
    if problem.zero_direction != "random_sign":
        return torch.zeros(0, dtype=torch.long, device=problem.x.device)
    return first.zero_direction.nonzero().flatten()


def _problem_rows(problem: AttackProblem, rows: torch.Tensor) -> AttackProblem:
    """The problem restricted to images `rows` (their own generators, labels, maps and objective)."""
    return replace(problem, x=problem.x[rows], y=problem.y[rows],
                   indices=tuple(problem.indices[i] for i in rows.tolist()),
                   objective=None if problem.objective is None else problem.objective.rows(rows),
                   map_original=problem.map_original[rows])


def _replace_rows(base: WalkRun, rows: torch.Tensor, part: WalkRun) -> WalkRun:
    """`base` with the images `rows` taken from `part` (a walk of those images only)."""
    out = {}
    for f in fields(WalkRun):
        merged = getattr(base, f.name).clone()
        merged[rows] = getattr(part, f.name)
        out[f.name] = merged
    return WalkRun(**out)
