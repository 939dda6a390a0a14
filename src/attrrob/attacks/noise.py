"""The noise control: one uniformly random ±ε sign perturbation per image, no search.

It answers "how much of an attack's drop would noise of the same size give?" (Kamath et al.,
AAAI 2024, show that IN, τ and ρ over-penalise small local shifts, so that noise looks like an
attack). Per image: s = uniform ±1 signs from the image's own generator (`image_generator(seed,
index, 0)`), x̃ = project(x + ε·s, x, ε, lo, hi, integral) as the walk projects and clips. The
real network's label must be kept: an image whose label the noise changes keeps the original as
its "iterate" (the walk's rule for an ineligible iterate, so its metrics read as unchanged) and is
counted in the summary (`noise.n_label_changed`). The result is an `AttackResult` of one step, so
the evaluator reads its metrics and trace as any attack's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import metrics
from ..errors import ConfigError
from .pgd import project, sign_step
from .saliency import AttackResult, _random_signs, image_generator, input_gradients_only, real_saliency

NAME = "noise"


def effective_settings(settings: dict) -> dict:
    """The noise control's settings as it runs them: one step of size ε, one run (the summary
    records these, so that nobody reads a search budget into it)."""
    return {**settings, "iterations": 1, "step_size": float(settings["eps"]), "restarts": 1, "random_restarts": 1}


def noise_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], settings: dict, *,
                lo: float, hi: float, integral: bool, seed: int = 0, max_rows: int | None = None) -> AttackResult:
    """The noise control on a batch of correctly classified images `x` `[N, C, H, W]`."""
    ties, k_metric, ig_steps, eps = settings["ties"], int(settings["k_metric"]), int(settings["ig_steps"]), float(settings["eps"])
    if ties not in metrics.TIES_MODES:
        raise ConfigError(f"attack.ties: expected one of {', '.join(metrics.TIES_MODES)}, got {ties!r}")
    with input_gradients_only(model):
        x, y = x.detach(), y.to(x.device)
        if len(indices) != x.shape[0]:
            raise ValueError(f"noise_batch: {len(indices)} indices for {x.shape[0]} images")
        generators = [image_generator(seed, int(i), 0) for i in indices]
        signs = _random_signs(generators, x.shape[1:], x.device, x.dtype)
        x_noise = project(sign_step(x, signs, eps), x, eps, lo, hi, integral)
        map_original = real_saliency(model, x, y, ig_steps, max_rows)
        with torch.no_grad():
            kept = model(x_noise).argmax(1) == y
        view = (-1,) + (1,) * (x.dim() - 1)
        x_kept = torch.where(kept.view(view), x_noise, x)
        map_kept = torch.where(kept.view(-1, 1), real_saliency(model, x_kept, y, ig_steps, max_rows), map_original)
    one = torch.ones(len(indices), dtype=torch.float64, device=x.device)
    tau = torch.where(kept, metrics.kendall_tau_b(map_original, map_kept), one)
    in_kept = torch.where(kept, metrics.topk_intersection(map_original, map_kept, k_metric, ties), one)
    return AttackResult(x_kept=x_kept, map_original=map_original, map_kept=map_kept, kendall_tau=tau,
                        improved=kept, restart=torch.zeros_like(kept, dtype=torch.int64),
                        step=kept.to(torch.int64), zero_direction=torch.zeros_like(kept),
                        linf=(x_kept - x).flatten(1).abs().amax(1).double(),
                        trace_kendall_tau=torch.stack([one, tau], 1),
                        trace_topk_intersection=torch.stack([one, in_kept], 1))
