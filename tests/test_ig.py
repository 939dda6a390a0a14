"""Integrated gradients and the scalar functions, checked against independent oracles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attrrob import ig as A
from attrrob import models
from attrrob.errors import AttrrobError


class SmallSmoothNet(nn.Module):
    """A smooth float64 net (softplus) on [N, 1, 4, 4]; accepts the `smooth` flag like the models."""

    def __init__(self, classes: int = 5, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 3, padding=1).double()
        self.fc = nn.Linear(48, classes).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)

    def forward(self, x, smooth: bool = False):
        return self.fc(F.softplus(self.conv(x)).flatten(1))


def _data(n=3, seed=1, classes=5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    baseline = torch.rand(n, 1, 4, 4, generator=gen, dtype=torch.float64) * 0.3
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, baseline, y


def _loop_ig(fn, x, baseline, steps, points):
    """IG written as a plain Python loop over the path points (one gradient call per point)."""
    total = torch.zeros_like(x)
    for k in points:
        z = (baseline + (k / steps) * (x - baseline)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(z).sum(), z)
        total += g
    return (x - baseline) * total / len(points)


def test_completeness_at_300_steps():
    net = SmallSmoothNet()
    x, baseline, y = _data()
    fn = A.logit_fn(net, y)
    ig = A.integrated_gradients(fn, x, baseline, 300)
    expected = fn(x) - fn(baseline)
    got = ig.flatten(1).sum(1)
    assert torch.all((got - expected).abs() <= 0.01 * expected.abs()), (got, expected)


@pytest.mark.parametrize("factory", [A.cross_entropy_fn, A.probability_fn, A.negative_probability_fn, A.logit_fn])
def test_equals_python_loop_over_points(factory):
    net = SmallSmoothNet()
    x, baseline, y = _data()
    fn = factory(net, y)
    got = A.integrated_gradients(fn, x, baseline, 7)
    torch.testing.assert_close(got, _loop_ig(fn, x, baseline, 7, range(1, 8)), rtol=1e-6, atol=1e-12)


def test_points_option_equals_loop_over_those_points():
    net = SmallSmoothNet()
    x, baseline, y = _data()
    fn = A.cross_entropy_fn(net, y)
    points = range(5, 21, 5)  # approx_factor 5 of m = 20: the reference's IG_approx
    got = A.integrated_gradients(fn, x, baseline, 20, points=points)
    torch.testing.assert_close(got, _loop_ig(fn, x, baseline, 20, points), rtol=1e-10, atol=1e-14)


def test_equals_captum_right_riemann():
    captum_attr = pytest.importorskip("captum.attr")
    net = SmallSmoothNet()
    x, baseline, y = _data()
    ours = A.integrated_gradients(A.logit_fn(net, y), x, baseline, 16)
    theirs = captum_attr.IntegratedGradients(net).attribute(x, baselines=baseline, target=y, n_steps=16,
                                                            method="riemann_right")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-10)


def test_batching_contract_point_major_and_max_batch():
    net = SmallSmoothNet()
    x, baseline, y = _data(n=3)
    calls = []
    inner = A.logit_fn(net, y)

    def fn(z):
        calls.append(z.shape[0])
        return inner(z)

    full = A.integrated_gradients(fn, x, baseline, 10)
    assert calls == [30]
    for max_batch, expected_calls in [(9, [9] * 3 + [3]), (12, [12] * 2 + [6]), (1, [3] * 10), (0, [30])]:
        calls.clear()
        chunked = A.integrated_gradients(fn, x, baseline, 10, max_batch=max_batch)
        assert calls == expected_calls
        torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-15)
    # One example at a time gives the same as the stacked batch (labels tiled point-major).
    for i in range(3):
        single = A.integrated_gradients(A.logit_fn(net, y[i:i + 1]), x[i:i + 1], baseline[i:i + 1], 10)
        torch.testing.assert_close(single[0], full[i], rtol=1e-12, atol=1e-15)


def test_path_rows_are_point_major():
    x = torch.arange(2.0).view(2, 1, 1, 1) + 1.0  # examples 1 and 2
    seen = []

    def fn(z):
        seen.append(z.detach().flatten().clone())
        return z.flatten()

    A.integrated_gradients(fn, x, 0.0, 4)
    torch.testing.assert_close(seen[0], torch.tensor([0.25, 0.5, 0.5, 1.0, 0.75, 1.5, 1.0, 2.0]))


def _weighted_ig(net, x_adv, x, y, weights, steps=5):
    ig = A.integrated_gradients(A.cross_entropy_fn(net, y), x_adv, x, steps, create_graph=True)
    return (ig * weights).sum()


def _central_difference(loss, tensor, index, h):
    """(loss at tensor[index] + h − loss at tensor[index] − h) / 2h; `tensor` is bumped in place
    (under no_grad) and left as it was."""
    with torch.no_grad():
        tensor[index] += h
        up = loss().item()
        tensor[index] -= 2 * h
        down = loss().item()
        tensor[index] += h
    return (up - down) / (2 * h)


def test_create_graph_gradients_match_finite_differences():
    net = SmallSmoothNet()
    x, x_adv, y = _data()
    x_adv = x + 0.4 * (x_adv - 0.15)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_adv = x_adv.clone().requires_grad_(True)
    value = _weighted_ig(net, x_adv, x, y, weights)
    w = net.conv.weight
    grad_w, grad_x = torch.autograd.grad(value, [w, x_adv])
    h = 1e-6
    for index in [(0, 0, 1, 1), (2, 0, 0, 2)]:
        numeric = _central_difference(lambda: _weighted_ig(net, x_adv, x, y, weights), w, index, h)
        assert grad_w[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    bumped = x_adv.detach().clone()
    for index in [(0, 0, 1, 2), (2, 0, 3, 3)]:
        numeric = _central_difference(lambda: _weighted_ig(net, bumped, x, y, weights), bumped, index, h)
        assert grad_x[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_create_graph_gradient_through_the_baseline():
    net = SmallSmoothNet()
    x, x_adv, y = _data()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_weighted_ig(net, x_adv, x_req, y, weights), x_req)
    index, h = (1, 0, 2, 1), 1e-6
    bumped = x.clone()
    numeric = _central_difference(lambda: _weighted_ig(net, x_adv, bumped, y, weights), bumped, index, h)
    assert grad[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_without_create_graph_result_is_detached_and_inputs_untouched():
    net = SmallSmoothNet()
    x, baseline, y = _data()
    ig = A.integrated_gradients(A.logit_fn(net, y), x, baseline, 3)
    assert not ig.requires_grad and not x.requires_grad
    with torch.no_grad():  # callers in evaluation code may hold no_grad
        ig2 = A.integrated_gradients(A.logit_fn(net, y), x, baseline, 3)
        ig3 = A.integrated_gradients(A.logit_fn(net, y), x, baseline, 3, create_graph=True)
    torch.testing.assert_close(ig, ig2)
    assert ig3.requires_grad  # create_graph wins over an enclosing no_grad
    x_req = x.clone().requires_grad_(True)
    assert not A.integrated_gradients(A.logit_fn(net, y), x_req, baseline, 3).requires_grad
    g = A.simple_gradient(A.logit_fn(net, y), x)
    assert not x.requires_grad and g.shape == x.shape


def test_zero_baseline_ig_through_resnet_is_harmonic_times_gradient():
    torch.manual_seed(0)
    net = models.build("gtsrb").double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    y = torch.tensor([3, 40])
    fn = A.logit_fn(net, y)
    m = 10
    ig = A.integrated_gradients(fn, x, torch.zeros_like(x), m)
    harmonic = sum(1.0 / k for k in range(1, m + 1))
    torch.testing.assert_close(ig, harmonic * x * A.simple_gradient(fn, x), rtol=1e-7, atol=1e-12)
    sums = ig.flatten(1).sum(1)
    assert torch.all(sums.abs() <= 1e-8 * ig.flatten(1).abs().sum(1))  # Euler: scale invariance


def test_simple_gradient_equals_autograd_and_create_graph():
    net = SmallSmoothNet()
    x, _, y = _data()
    fn = A.cross_entropy_fn(net, y)
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(net(xr), y, reduction="sum"), xr)
    torch.testing.assert_close(A.simple_gradient(fn, x), expected)
    g = A.simple_gradient(fn, x, create_graph=True)
    assert g.requires_grad  # differentiable w.r.t. the weights
    (gw,) = torch.autograd.grad(g.pow(2).sum(), net.fc.weight)
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_cross_entropy_fn_matches_torch_and_clamps_like_tf():
    net = SmallSmoothNet()
    x, _, y = _data()
    fn = A.cross_entropy_fn(net, y)
    torch.testing.assert_close(fn(x), F.cross_entropy(net(x), y, reduction="none"))

    class Saturated(nn.Module):
        def forward(self, z, smooth=False):
            return torch.cat([z.flatten(1)[:, :1] * 0, z.flatten(1)[:, :1] * 0 + 100.0], 1)

    z = torch.ones(2, 1, 1, 1, requires_grad=True)
    value = A.cross_entropy_fn(Saturated(), torch.tensor([0, 0]))(z)
    torch.testing.assert_close(value, torch.full((2,), -math.log(1e-10)))
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert torch.all(grad == 0)  # the clip stops the gradient, as tf.clip_by_value does


def test_negative_probability_is_the_top2_trick_per_row():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 6, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (8,), generator=gen)
    rows_y = y.repeat(5)
    logits[torch.arange(0, 40, 3), rows_y[::3]] += 10.0  # true class on top in some rows

    class Fixed(nn.Module):
        def forward(self, z, smooth=False):
            return logits * z.flatten(1)[:, :1]

    z = torch.ones(40, 1)
    got = A.negative_probability_fn(Fixed(), y)(z)
    p = logits.softmax(1)
    top2 = p.topk(2, 1).indices
    negative = torch.where(top2[:, 0] == rows_y, top2[:, 1], top2[:, 0])
    torch.testing.assert_close(got, p.gather(1, negative[:, None]).squeeze(1))
    assert torch.all(negative != rows_y)
    torch.testing.assert_close(A.probability_fn(Fixed(), y)(z), p.gather(1, rows_y[:, None]).squeeze(1))
    torch.testing.assert_close(A.logit_fn(Fixed(), y)(z), logits.gather(1, rows_y[:, None]).squeeze(1))


def test_saliency_map():
    gen = torch.Generator().manual_seed(0)
    ig = torch.randn(3, 3, 5, 4, generator=gen, dtype=torch.float64)
    ig[2] = 0.0
    s = A.saliency_map(ig)
    assert s.shape == (3, 20)
    manual = ig[:2].abs().sum(1).flatten(1)
    torch.testing.assert_close(s[:2], 20 * manual / manual.sum(1, keepdim=True))
    torch.testing.assert_close(s[:2].sum(1), torch.full((2,), 20.0, dtype=torch.float64))
    assert torch.all(s[2] == 0)  # all-zero attribution: zero map, no NaN
    with pytest.raises(AttrrobError):
        A.saliency_map(ig[0])


def test_argument_errors():
    net = SmallSmoothNet()
    x, baseline, y = _data()
    fn = A.logit_fn(net, y)
    with pytest.raises(AttrrobError, match="steps"):
        A.integrated_gradients(fn, x, baseline, 0)
    with pytest.raises(AttrrobError, match="points"):
        A.integrated_gradients(fn, x, baseline, 4, points=[0, 4])
    with pytest.raises(AttrrobError, match="baseline shape"):
        A.integrated_gradients(fn, x, baseline[:1], 4)
    with pytest.raises(AttrrobError, match="one value per row"):
        A.integrated_gradients(lambda z: net(z), x, baseline, 4)
    with pytest.raises(AttrrobError, match="multiple"):
        A.tile_to(y, 7)


@pytest.mark.parametrize("factory,smooth", [(A.probability_fn, False), (A.negative_probability_fn, False),
                                            (A.logit_fn, True)])
def test_scale_invariant_shortcut_equals_full_path(factory, smooth):
    torch.manual_seed(0)
    net = models.build("gtsrb").double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    y = torch.tensor([3, 40])
    fn = factory(net, y, smooth=smooth)
    assert models.input_scale_invariant(net, x, 1 / 10)
    for points in (None, range(2, 11, 2)):
        full = A.integrated_gradients(fn, x, 0.0, 10, points=points, create_graph=True)
        short = A.integrated_gradients(fn, x, 0.0, 10, points=points, create_graph=True, scale_invariant=True)
        torch.testing.assert_close(short, full, rtol=1e-7, atol=1e-13)
        weight = net.stages[1][0].conv1.weight
        (g_full,) = torch.autograd.grad(full.pow(2).sum(), weight)
        (g_short,) = torch.autograd.grad(short.pow(2).sum(), weight)
        torch.testing.assert_close(g_short, g_full, rtol=1e-6, atol=1e-12)
    with pytest.raises(AttrrobError, match="zero baseline"):
        A.integrated_gradients(fn, x, 1.0, 10, scale_invariant=True)


def test_scale_invariance_is_declared_by_the_model_and_decided_per_image():
    torch.manual_seed(0)
    resnet, cnn = models.build("gtsrb"), models.build("digits")
    assert models.RarResNet.input_scale_invariant and not models.MnistCNN.input_scale_invariant
    x = torch.rand(2, 3, 32, 32) * 255
    nearly_constant = torch.full((1, 3, 32, 32), 100.0)
    nearly_constant[0, 0, 0, 0] = 103.0  # std ≈ 3/√N: above the floor 1/√N, below it once scaled by 1/100
    batch = torch.cat([x[:1], nearly_constant, x[1:]])
    assert models.scale_invariant_images(resnet, batch, 0.01).tolist() == [True, False, True]
    assert models.scale_invariant_images(resnet, nearly_constant, 1.0).tolist() == [True]
    assert models.scale_invariant_images(cnn, torch.rand(2, 1, 8, 8), 1.0).tolist() == [False, False]
    assert not models.input_scale_invariant(resnet, batch, 0.01) and models.input_scale_invariant(resnet, x, 0.01)
    # The decision is right both ways: invariant where it says so, not where it says not.
    with torch.no_grad():
        assert not torch.allclose(resnet(0.01 * nearly_constant), resnet(nearly_constant))
        torch.testing.assert_close(resnet(0.01 * x), resnet(x), rtol=1e-4, atol=1e-5)
        digits = torch.rand(2, 1, 8, 8)
        assert not torch.allclose(cnn(0.5 * digits), cnn(digits))


class _RowCounter:
    """Counts the rows the model is evaluated on (forward hook)."""

    def __init__(self, model):
        self.rows = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.rows += inputs[0].shape[0]


@pytest.mark.parametrize("factory,smooth", [(A.probability_fn, False), (A.negative_probability_fn, False),
                                            (A.logit_fn, True)])
def test_mixed_batch_takes_the_shortcut_per_image_and_equals_the_full_path(factory, smooth):
    """One near-constant image among normal ones: it takes the full path, they one gradient each."""
    torch.manual_seed(0)
    net = models.RarResNet(units_per_stage=1, classes=5, in_channels=3).double()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64) * 255
    x[1] = 100.0
    x[1, 0, 0, 0] = 103.0  # std ≈ 3/√N: above the floor 1/√N, below it once scaled by 1/10
    y = torch.tensor([3, 2, 0])
    steps, points = 10, range(2, 11, 2)
    mask = models.scale_invariant_images(net, x, 1 / steps)
    assert mask.tolist() == [True, False, True]
    counter = _RowCounter(net)
    mixed = A.integrated_gradients(factory(net, y, smooth=smooth), x, 0.0, steps, points=points,
                                   create_graph=True, scale_invariant=mask)
    counter.handle.remove()
    assert counter.rows == 2 + len(points)  # two one-gradient images, one full path
    full = A.integrated_gradients(factory(net, y, smooth=smooth), x, 0.0, steps, points=points, create_graph=True)
    for i in range(3):  # per image, the full path alone
        alone = A.integrated_gradients(factory(net, y[i:i + 1], smooth=smooth), x[i:i + 1], 0.0, steps,
                                       points=points)
        torch.testing.assert_close(mixed[i:i + 1].detach(), alone, rtol=1e-7, atol=1e-13)
    # Differentiable in the weights through both paths, with the full path's derivative.
    weight = net.stages[1][0].conv1.weight
    (g_mixed,) = torch.autograd.grad(mixed.pow(2).sum(), weight)
    (g_full,) = torch.autograd.grad(full.pow(2).sum(), weight)
    torch.testing.assert_close(g_mixed, g_full, rtol=1e-6, atol=1e-12)
    # Sending the near-constant image down the shortcut would be wrong: that is why it is per image.
    wrong = A.integrated_gradients(factory(net, y, smooth=smooth), x, 0.0, steps, points=points,
                                   scale_invariant=True)
    assert not torch.allclose(wrong[1], full[1].detach(), rtol=1e-3)
    with pytest.raises(AttrrobError, match="mask"):
        A.integrated_gradients(factory(net, y), x, 0.0, steps, scale_invariant=mask[:2])


def test_training_zero_baseline_ig_decides_per_image():
    """objectives._zero_baseline_ig (training's B, T, N): a mixed batch equals the full path per image."""
    from attrrob import objectives

    torch.manual_seed(0)
    net = models.RarResNet(units_per_stage=1, classes=5, in_channels=3).double()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64) * 255
    x[0] = 50.0
    x[0, 1, 3, 3] = 52.0  # near-constant: the standardisation's floor applies on the path
    y = torch.tensor([1, 4, 2])
    settings = {"m": 5, "ig_max_batch": 0}
    assert models.scale_invariant_images(net, x, 1 / 5).tolist() == [False, True, True]
    counter = _RowCounter(net)
    mixed = objectives._zero_baseline_ig(A.probability_fn(net, y), net, x, settings)
    counter.handle.remove()
    assert counter.rows == 5 + 2
    weight = net.init_conv.weight
    (g_mixed,) = torch.autograd.grad(mixed.square().sum(), weight)
    full = A.integrated_gradients(A.probability_fn(net, y), x, 0.0, 5, create_graph=True)
    (g_full,) = torch.autograd.grad(full.square().sum(), weight)
    torch.testing.assert_close(mixed, full, rtol=1e-7, atol=1e-13)
    torch.testing.assert_close(g_mixed, g_full, rtol=1e-6, atol=1e-12)
