"""Smooth surrogate activation with a fast CPU forward (softplus without log1p).

On a CPU, `F.softplus` spends most of its time in `log1p`, which ATen evaluates element by
element (about 12 ns per element on the project's machines, where `exp` and `log` are
vectorised and 5-10x cheaper). The identity

    softplus(x) = max(x, 0) + log(1 + exp(-|x|))

needs no log1p: 1 + exp(-|x|) lies in (1, 2], so `log` of it loses at most one float32 rounding
of 1 in absolute terms (< 6e-8, the same order as the rounding of the result; the relative
error is large only where softplus itself is below 6e-8, i.e. x < -16.6). The backward pass is
written with differentiable ops (grad · sigmoid(x)), so double back-propagation, which the
attribution attack and the IG regularisers need, works and gives the exact derivatives.

On a GPU the fused `F.softplus` kernel is already memory-bound, and seven kernels would be
slower, so `softplus` dispatches to it there. `benchmarks/bench_cpu_kernels.py` measures both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["softplus", "cpu_softplus"]


class _CpuSoftplus(torch.autograd.Function):
    """softplus(x) = max(x, 0) + log(1 + exp(−|x|)); d/dx = sigmoid(x) (differentiable again)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        tail = x.abs().neg_().exp_().add_(1.0).log_()   # log(1 + e^−|x|) ∈ (0, log 2]
        return tail.add_(x.clamp_min(0.0))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


def cpu_softplus(x: torch.Tensor) -> torch.Tensor:
    """The log1p-free softplus on any device (the CPU path of `softplus`; exposed for tests and benchmarks)."""
    return _CpuSoftplus.apply(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = log(1 + eˣ): the log1p-free form on a CPU, `F.softplus` elsewhere."""
    if x.device.type == "cpu":
        return _CpuSoftplus.apply(x)
    return F.softplus(x)
