"""The attribution regularisers: Sarkar et al.'s R_CACR and R_WACR, and RAR's ‖IG‖₁.

Tensors in, a 0-dim batch sum out (the reference code sums, never averages, over the batch).
"""

from __future__ import annotations

import torch

from .errors import AttrrobError

__all__ = ["cacr", "wacr", "wacr_terms", "ig_l1"]


def _centred_log_mean_exp(a: torch.Tensor) -> torch.Tensor:
    """log mean_i exp(a_i − mean a) per row, accurate when the spread of a is tiny.

    log1p/expm1 keep the ≈ var(a)/2 result, which `mean − logsumexp` loses to rounding when
    the attributions spread by ≈1e-7 over 16,384 pixels (the Flower case).
    """
    centred = a - a.mean(1, keepdim=True)
    return torch.log1p(torch.expm1(centred).mean(1))


def cacr(T: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """R_CACR = Σ_batch [KL(U‖softmax N) − KL(U‖softmax T)] over the pixels.

    T, N: channel-summed true- and negative-class attributions, [B, H, W] (or [B, D]).
    Per example this is (mean T − LSE T) − (mean N − LSE N); it is computed in float64 in the
    centred form log-mean-exp(N − mean N) − log-mean-exp(T − mean T), which is exact to
    rounding even where the KL terms are ≈1e-14, and returned in T's dtype.
    """
    if T.shape != N.shape or T.dim() < 2:
        raise AttrrobError(f"cacr: T and N must have the same [B, H, W] shape, got {tuple(T.shape)} and {tuple(N.shape)}")
    t = T.flatten(1).double()
    n = N.flatten(1).double()
    per_example = _centred_log_mean_exp(n) - _centred_log_mean_exp(t)
    return per_example.sum().to(T.dtype)


def wacr_terms(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of R_WACR: (Σ_{sign B = sign A} B·A, Σ_{sign B ≠ sign A} |A|), sign(0) = 0.

    These are the reference code's `IG_reg_1_term` and `IG_reg_2_term`.
    """
    if B.shape != A.shape:
        raise AttrrobError(f"wacr: base and change attributions differ in shape: {tuple(B.shape)} vs {tuple(A.shape)}")
    matched = torch.sign(B) == torch.sign(A)
    zero = torch.zeros((), dtype=A.dtype, device=A.device)
    agreeing = torch.where(matched, B * A, zero).sum()
    disagreeing = torch.where(matched, zero, A).abs().sum()
    return agreeing, disagreeing


def wacr(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """R_WACR = Σ_{sign B = sign A} B·A + Σ_{sign B ≠ sign A} |A| over all elements of the batch.

    B: base attribution IG^{p_y}(0 → x); A: change attribution −IG^{ℓ}(x → x′); both shaped
    like the input batch.
    """
    agreeing, disagreeing = wacr_terms(B, A)
    return agreeing + disagreeing


def ig_l1(ig: torch.Tensor) -> torch.Tensor:
    """RAR's ‖IG‖₁, summed over the batch."""
    return ig.abs().sum()
