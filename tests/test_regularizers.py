"""R_CACR, R_WACR and ‖IG‖₁ against their definitions written out directly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from attrrob import regularizers as R
from attrrob.errors import AttrrobError


def _kl_uniform(a: np.ndarray) -> float:
    """KL(U ‖ softmax(a)) = Σ_i U_i log(U_i / q_i), written out (float64)."""
    q = np.exp(a - a.max())
    q /= q.sum()
    u = np.full_like(q, 1.0 / q.size)
    return float(np.sum(u * np.log(u / q)))


def test_cacr_equals_kl_form():
    gen = np.random.default_rng(0)
    T = gen.standard_normal((3, 5, 6))
    N = 2 * gen.standard_normal((3, 5, 6))
    expected = sum(_kl_uniform(N[b].ravel()) - _kl_uniform(T[b].ravel()) for b in range(3))
    got = R.cacr(torch.from_numpy(T), torch.from_numpy(N))
    assert got.dim() == 0 and got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_cacr_keeps_tiny_kl_terms():
    # Flower-like: 16,384 pixels with a spread of ≈1e-7. KL(U‖softmax a) = var(a)/2 + O(a³).
    gen = np.random.default_rng(1)
    T = 1e-7 * gen.standard_normal((2, 128, 128))
    N = 3e-7 * gen.standard_normal((2, 128, 128))
    expected = sum(N[b].var() / 2 - T[b].var() / 2 for b in range(2))
    got32 = R.cacr(torch.from_numpy(T).float(), torch.from_numpy(N).float())
    assert got32.dtype == torch.float32
    # float32 inputs carry ≈6e-8 relative rounding of each value; the result keeps that precision.
    assert got32.item() == pytest.approx(expected, rel=1e-5)


def test_cacr_gradient_closed_form():
    gen = torch.Generator().manual_seed(0)
    T = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    N = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    gT, gN = torch.autograd.grad(R.cacr(T, N), [T, N])
    d = 16
    torch.testing.assert_close(gT, (1 / d - T.detach().flatten(1).softmax(1)).view_as(T))
    torch.testing.assert_close(gN, (N.detach().flatten(1).softmax(1) - 1 / d).view_as(N))


def test_cacr_shape_errors():
    with pytest.raises(AttrrobError, match="cacr"):
        R.cacr(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))


def _wacr_loop(B: np.ndarray, A: np.ndarray) -> tuple[float, float]:
    agreeing = disagreeing = 0.0
    for b, a in zip(B.ravel().tolist(), A.ravel().tolist()):
        if np.sign(b) == np.sign(a):
            agreeing += b * a
        else:
            disagreeing += abs(a)
    return agreeing, disagreeing


def test_wacr_equals_elementwise_loop_including_zeros():
    gen = np.random.default_rng(2)
    values = np.array([-1.5, -0.25, 0.0, 0.5, 2.0])
    pairs = np.array(list(itertools.product(values, values)))  # every sign combination, zeros included
    B = np.concatenate([pairs[:, 0], gen.standard_normal(23)]).reshape(2, 1, 4, 6)
    A = np.concatenate([pairs[:, 1], gen.standard_normal(23)]).reshape(2, 1, 4, 6)
    agreeing, disagreeing = _wacr_loop(B, A)
    got_terms = R.wacr_terms(torch.from_numpy(B), torch.from_numpy(A))
    assert got_terms[0].item() == pytest.approx(agreeing, rel=1e-14)
    assert got_terms[1].item() == pytest.approx(disagreeing, rel=1e-14)
    assert R.wacr(torch.from_numpy(B), torch.from_numpy(A)).item() == pytest.approx(agreeing + disagreeing, rel=1e-14)
    assert agreeing > 0 and disagreeing > 0


def test_wacr_gradients():
    B = torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    A = torch.tensor([2.0, 1.0, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    gB, gA = torch.autograd.grad(R.wacr(B, A), [B, A])
    # element 0 matched (B·A); 1 and 2 mismatched (|A|); 3 mismatched with A = 0 (|A| has slope 0 there)
    torch.testing.assert_close(gB, torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(gA, torch.tensor([1.0, 1.0, -1.0, 0.0], dtype=torch.float64))
    with pytest.raises(AttrrobError, match="shape"):
        R.wacr(B, A[:3])


def test_ig_l1():
    ig = torch.tensor([[-1.0, 2.0], [0.0, -3.5]])
    assert R.ig_l1(ig).item() == 6.5 and R.ig_l1(ig).dim() == 0
