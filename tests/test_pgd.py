"""PGD pieces against closed forms and finite differences."""

import numpy as np
import pytest
import torch

from attrrob.attacks.pgd import pgd, project, random_start, sign_step


def test_random_start_is_uniform_in_ball_unclipped_and_seeded():
    x = torch.zeros(4000)
    a = random_start(x, 0.3, torch.Generator().manual_seed(1))
    b = random_start(x, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.abs().max() <= 0.3
    # Not clipped to [0, 1] before the first step (reference behaviour): about half are negative.
    assert 0.4 < (a < 0).float().mean() < 0.6
    assert abs(a.mean().item()) < 0.02 and abs(a.var().item() - 0.3 ** 2 / 3) < 0.003


def test_sign_step_uses_sign_with_zero():
    x = torch.tensor([1.0, 1.0, 1.0])
    g = torch.tensor([-3.0, 0.0, 1e-9])
    assert torch.equal(sign_step(x, g, 0.5), torch.tensor([0.5, 1.0, 1.5]))


def test_project_matches_numpy_closed_form_and_truncates():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(3, 2, 5, 5)).astype(np.float32)
    xa = x + rng.uniform(-20, 20, size=x.shape).astype(np.float32)
    expected = np.clip(np.clip(xa, x - 8, x + 8), 0, 255)
    got = project(torch.from_numpy(xa), torch.from_numpy(x), 8.0, 0.0, 255.0)
    np.testing.assert_array_equal(got.numpy(), expected)
    got_int = project(torch.from_numpy(xa), torch.from_numpy(x), 8.0, 0.0, 255.0, integral=True)
    np.testing.assert_array_equal(got_int.numpy(), np.trunc(expected))


def test_pgd_on_linear_loss_reaches_the_clipped_corner_and_stays_in_ball():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 4)
    w = torch.randn(6, 1, 4, 4)
    seen = []

    def loss_fn(z):
        seen.append(z.detach().clone())
        return (w * z).sum()

    eps = 0.3
    out = pgd(loss_fn, x, eps=eps, steps=40, step_size=0.05, lo=0.0, hi=1.0,
              generator=torch.Generator().manual_seed(3))
    corner = torch.clamp(x + eps * w.sign(), 0, 1)
    torch.testing.assert_close(out, corner, rtol=0, atol=1e-6)
    assert not out.requires_grad
    for z in seen[1:]:  # every iterate after the (unclipped) random start
        assert (z - x).abs().max() <= eps + 1e-6 and z.min() >= 0 and z.max() <= 1
    assert (seen[0] - x).abs().max() <= eps + 1e-6


def test_pgd_without_random_start_and_zero_steps_is_identity():
    x = torch.rand(2, 3)
    assert torch.equal(pgd(lambda z: z.sum(), x, eps=0.1, steps=0, step_size=0.1, lo=0, hi=1,
                           random_start=False), x)


def test_pgd_step_on_input_gradient_loss_uses_exact_double_backprop():
    # loss(z) = Σ |∇_z f(z)|² for a smooth f: its z-gradient needs second derivatives.
    torch.manual_seed(1)
    W = torch.randn(5, 7, dtype=torch.float64)

    def f(z):
        return torch.tanh(z @ W).pow(2).sum(1)

    def loss_fn(z):
        (g,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
        return g.pow(2).sum()

    x = torch.rand(3, 5, dtype=torch.float64)
    step = 1e-3
    out = pgd(loss_fn, x, eps=1.0, steps=1, step_size=step, lo=-10, hi=10, random_start=False)

    def numeric_loss(z):
        zz = z.clone().requires_grad_(True)
        return loss_fn(zz).item()

    fd = torch.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(*x.shape):
        e = torch.zeros_like(x)
        e[idx] = h
        fd[idx] = (numeric_loss(x + e) - numeric_loss(x - e)) / (2 * h)
    assert fd.abs().min() > 1e-4  # signs well defined
    torch.testing.assert_close(out, x + step * fd.sign())


def test_pgd_rejects_non_scalar_loss():
    with pytest.raises(ValueError, match="0-dim"):
        pgd(lambda z: z * 2, torch.zeros(3), eps=0.1, steps=1, step_size=0.1, lo=0, hi=1, random_start=False)
