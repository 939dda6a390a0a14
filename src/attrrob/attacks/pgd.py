"""L∞ projected gradient ascent, as small composable pieces.

The pieces follow the reference code (RAR / Madry et al.): a uniform random start that is *not*
clipped to the valid range before the first step, signed gradient steps, then projection onto
the ε-ball around the clean input followed by the valid range. Training (inner maximisation),
evaluation (adversarial accuracy) and the attribution attacks all build on these.
"""

from __future__ import annotations

from typing import Callable

import torch


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + U[−ε, ε] elementwise; noise is drawn on the CPU (from `generator`) so runs reproduce across devices."""
    noise = torch.empty(x.shape, dtype=x.dtype).uniform_(-eps, eps, generator=generator)
    return x.detach() + noise.to(x.device)


def sign_step(x_adv: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    """One ascent step along the sign of the gradient (sign(0) = 0, as tf.sign)."""
    return x_adv + step_size * grad.sign()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, lo: float, hi: float,
            integral: bool = False) -> torch.Tensor:
    """Clip to the L∞ ball of radius ε around x, then to [lo, hi]; optionally truncate toward zero.

    Truncation (not rounding) mirrors the reference's int32 cast of [0, 255] images.
    """
    out = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), lo, hi)
    return torch.trunc(out) if integral else out


_start = random_start  # `pgd` has a keyword of the same name


def pgd(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, eps: float, steps: int,
        step_size: float, lo: float, hi: float, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise `loss_fn(x_adv)` (a 0-dim tensor) over the ε-ball ∩ [lo, hi]; returns x_adv detached.

    Only the gradient with respect to x_adv is taken (model parameters get none). A loss built on
    input gradients (e.g. an IG norm) must create them with `create_graph=True`, so that this
    gradient is the exact double-backpropagated one.
    """
    x = x.detach()
    x_adv = _start(x, eps, generator) if random_start else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(x_adv)
        if loss.dim() != 0:
            raise ValueError(f"pgd: loss_fn must return a 0-dim tensor, got shape {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project(sign_step(x_adv.detach(), grad, step_size), x, eps, lo, hi)
    return x_adv.detach()
