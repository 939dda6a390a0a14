"""The log1p-free softplus (attrrob.activations): values and first and second derivatives against
closed forms (numpy's logaddexp, scipy's expit) and F.softplus, including far tails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import expit

from attrrob import activations, models

EXTREMES = [-800.0, -100.0, -40.0, -20.5, -17.0, -5.0, -1e-3, 0.0, 1e-3, 3.0, 19.9, 20.1, 40.0, 100.0, 800.0]


def points(dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.tensor(EXTREMES, dtype=dtype), torch.randn(200, generator=g, dtype=dtype) * 8])


def derivatives(fn, x: torch.Tensor):
    x = x.detach().requires_grad_(True)
    y = fn(x)
    (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    return y.detach(), d1.detach(), d2


def test_values_and_derivatives_match_closed_forms_in_float64():
    x = points()
    y, d1, d2 = derivatives(activations.cpu_softplus, x)
    s = expit(x.numpy())
    np.testing.assert_allclose(y.numpy(), np.logaddexp(0.0, x.numpy()), rtol=1e-15, atol=2e-16)
    np.testing.assert_allclose(d1.numpy(), s, rtol=1e-14, atol=0)
    np.testing.assert_allclose(d2.numpy(), s * (1 - s), rtol=1e-12, atol=1e-300)
    assert torch.isfinite(y).all() and torch.isfinite(d2).all()


def test_agrees_with_torch_softplus_and_its_derivatives():
    x = points()
    ours, theirs = derivatives(activations.cpu_softplus, x), derivatives(F.softplus, x)
    # F.softplus returns x itself above its threshold 20 (slope 1, curvature 0): off by e^-x ≤ 2e-9 there.
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=2.1e-9)
    x32 = points(torch.float32)
    np.testing.assert_allclose(activations.cpu_softplus(x32).numpy(), F.softplus(x32).numpy(), rtol=2e-7, atol=6e-8)


def test_gradcheck_and_gradgradcheck():
    x = points()[:60].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(activations.cpu_softplus, (x,))
    assert torch.autograd.gradgradcheck(activations.cpu_softplus, (x,))


def test_dispatch_keeps_the_fused_kernel_off_the_cpu():
    cpu = torch.zeros(3, requires_grad=True)
    assert "CpuSoftplus" in type(activations.softplus(cpu).grad_fn).__name__
    meta = torch.zeros(3, device="meta", requires_grad=True)
    assert type(activations.softplus(meta).grad_fn).__name__.startswith("Softplus")


def test_mnist_cnn_surrogate_uses_it_with_unchanged_values(monkeypatch):
    torch.manual_seed(0)
    model = models.build("mnist")
    x = torch.rand(4, 1, 28, 28)
    fast = model(x, smooth=True)
    monkeypatch.setattr(activations, "softplus", F.softplus)
    reference = model(x, smooth=True)
    # float32 through conv, pool and a 3136x1024 FC: the two softplus formulas' last-bit differences
    # grow to ~2e-5 in the logits on some CPUs (measured 1.5e-5); a wrong formula is off by far more.
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(activations, "softplus", lambda t: pytest.fail("not the surrogate's activation"))
    model(x)  # the real network does not touch it
