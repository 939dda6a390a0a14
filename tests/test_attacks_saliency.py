"""Attribution attacks: exact gradient, walk invariants, zero directions, batching, effect on real MNIST."""

from __future__ import annotations

import contextlib
import pytest
import torch
import torch.nn.functional as F

from attrrob import metrics, models
from attrrob.attacks.saliency import (SaliencyObjective, attack_batch, default_target_masks, real_saliency,
                                         surrogate_objective_gradient)
from attrrob.ig import integrated_gradients, logit_fn, saliency_map
from conftest import shared_path

BASE = dict(eps=0.1, step_size=0.02, iterations=6, k_attack=12, k_metric=8, ig_steps=10, restarts=1,
            zero_direction="random_sign")


def _train(model, x, y, steps, lr, batch, seed):
    with _one_thread():
        return _train_steps(model, x, y, steps, lr, batch, seed)


@contextlib.contextmanager
def _one_thread():
    """Small training fixtures run ~10x faster on one thread when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_steps(model, x, y, steps, lr, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    """A small CNN trained briefly on scikit-learn's 8x8 digits, and correctly classified test images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    torch.manual_seed(0)
    model = _train(models.build("digits"), x[:1400], y[:1400], steps=150, lr=3e-3, batch=64, seed=0)
    x_test, y_test = x[1400:1460], y[1400:1460]
    with torch.no_grad():
        keep = model(x_test).argmax(1) == y_test
    assert keep.float().mean() > 0.8, "the fixture model did not learn the digits"
    return model, x_test[keep][:8], y_test[keep][:8], torch.arange(1400, 1460)[keep][:8].tolist()


def _objective_value(model, x, y, objective, steps):
    ig = integrated_gradients(logit_fn(model, y, smooth=True), x, 0.0, steps)
    return objective(saliency_map(ig)).sum()


@pytest.mark.parametrize("attack", ["topk", "mass_center", "targeted"])
def test_surrogate_gradient_is_the_exact_derivative(digits, attack):
    model, x, y, idx = digits
    model = models.build("digits").double()
    model.load_state_dict({k: v.double() for k, v in digits[0].state_dict().items()})
    model.eval()
    # No zero pixels (|IG| is smooth) and no equal neighbours (no max-pool ties): differentiable here.
    noise = torch.rand(x[:3].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x[:3].double() * 0.8 + 0.1 + 0.05 * noise
    y = y[:3]
    steps = 6
    map0 = real_saliency(model, x, y, steps)
    constant = {"topk": metrics.topk_mask(map0, 12), "mass_center": metrics.mass_center(map0, 8, 8),
                "targeted": default_target_masks(idx[:3], 8, 8, 12, seed=1).double()}[attack]
    objective = SaliencyObjective(attack, constant, 8, 8)
    grad = surrogate_objective_gradient(model, x, y, objective, steps)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-6
    finite = (_objective_value(model, x + h * direction, y, objective, steps)
              - _objective_value(model, x - h * direction, y, objective, steps)) / (2 * h)
    assert (grad * direction).sum().item() == pytest.approx(finite.item(), rel=1e-5, abs=1e-8)
    # The chunked (memory-bounded) path gives the same derivative.
    chunked = surrogate_objective_gradient(model, x, y, objective, steps, max_rows=4)
    torch.testing.assert_close(chunked, grad, rtol=1e-10, atol=1e-12)


def test_resnet_saliency_shortcut_equals_the_full_path(monkeypatch):
    """Per-image standardisation: the one-gradient IG gives the same maps and attack gradient."""
    import attrrob.attacks.saliency as attacks

    torch.manual_seed(0)
    model = models.build("gtsrb").double().eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(2)).double()
    y = torch.tensor([3, 11])
    steps = 20
    map0 = real_saliency(model, x, y, steps)
    objective = SaliencyObjective("topk", metrics.topk_mask(map0, 50), 32, 32)
    grad = surrogate_objective_gradient(model, x, y, objective, steps)
    monkeypatch.setattr(attacks, "input_scale_invariant", lambda *a, **k: False)
    torch.testing.assert_close(real_saliency(model, x, y, steps), map0, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(surrogate_objective_gradient(model, x, y, objective, steps), grad,
                               rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("attack", ["topk", "random", "mass_center", "targeted"])
def test_walk_invariants(digits, attack):
    model, x, y, idx = digits
    result = attack_batch(model, x, y, idx, attack, BASE, lo=0.0, hi=1.0, integral=False, seed=3)
    x_kept = result.x_kept
    assert (x_kept - x).abs().max() <= BASE["eps"] + 1e-6
    assert x_kept.min() >= 0 and x_kept.max() <= 1
    with torch.no_grad():
        assert (model(x_kept).argmax(1) == y).all()
    assert (result.kendall_tau <= 1).all()
    out = result.metrics(BASE["k_metric"], 8, 8)
    assert ((out["topk_intersection"] >= 0) & (out["topk_intersection"] <= 1)).all()
    # The kept map is the real map of the kept iterate, and its τ the recorded criterion.
    torch.testing.assert_close(result.map_kept, real_saliency(model, x_kept, y, BASE["ig_steps"]))
    torch.testing.assert_close(metrics.kendall_tau_b(result.map_original, result.map_kept)[result.improved],
                               result.kendall_tau[result.improved])
    assert ((result.step > 0) == result.improved).all()
    assert result.improved.any(), "no image's map moved at all"
    torch.testing.assert_close(out["linf"], (x_kept - x).flatten(1).abs().amax(1).double())


def test_zero_epsilon_gives_one(digits):
    model, x, y, idx = digits
    result = attack_batch(model, x, y, idx, "topk", {**BASE, "eps": 0.0}, lo=0.0, hi=1.0, integral=False)
    out = result.metrics(BASE["k_metric"], 8, 8)
    assert out["topk_intersection"].tolist() == [1.0] * len(y)
    assert out["kendall_tau"].tolist() == [1.0] * len(y)
    assert out["spearman_rho"].tolist() == [1.0] * len(y)
    assert torch.equal(result.x_kept, x) and (result.step == 0).all()


def test_integral_inputs_stay_integral():
    torch.manual_seed(0)
    model = models.RarResNet(units_per_stage=1, classes=5, in_channels=3, dataset="gtsrb").eval()
    x = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        y = model(x).argmax(1)  # "correctly classified" by construction
    settings = dict(BASE, eps=8.0, step_size=1.5, iterations=4, k_attack=20, k_metric=20, ig_steps=6)
    for attack in ("topk", "random"):
        result = attack_batch(model, x, y, [0, 1, 2], attack, settings, lo=0.0, hi=255.0, integral=True, seed=0)
        kept = result.x_kept
        assert torch.equal(kept, kept.trunc())
        assert (kept - x).abs().max() <= 8 and kept.min() >= 0 and kept.max() <= 255
        with torch.no_grad():
            assert (model(kept).argmax(1) == y).all()
        assert result.improved.any()


@pytest.mark.parametrize("attack", ["topk", "random", "targeted"])
def test_batched_equals_per_image(digits, attack):
    model, x, y, idx = digits
    settings = {**BASE, "restarts": 2 if attack == "random" else 1}
    batched = attack_batch(model, x, y, idx, attack, settings, lo=0.0, hi=1.0, integral=False, seed=11)
    singles = [attack_batch(model, x[i:i + 1], y[i:i + 1], idx[i:i + 1], attack, settings, lo=0.0, hi=1.0,
                            integral=False, seed=11) for i in range(len(y))]
    for field in ("restart", "step", "zero_direction", "improved"):
        assert getattr(batched, field).tolist() == [getattr(s, field).item() for s in singles], field
    torch.testing.assert_close(batched.x_kept, torch.cat([s.x_kept for s in singles]), rtol=0, atol=1e-6)
    torch.testing.assert_close(batched.kendall_tau, torch.cat([s.kendall_tau for s in singles]), rtol=0, atol=1e-6)


def test_zero_direction_flag_and_modes(digits):
    model, x, y, idx = digits
    # k_attack = all 64 pixels: the mask covers every map's support, the true direction is exactly 0.
    settings = {**BASE, "k_attack": 64}
    stay = attack_batch(model, x, y, idx, "topk", {**settings, "zero_direction": "stay"}, lo=0.0, hi=1.0,
                        integral=False)
    assert stay.zero_direction.all()
    assert torch.equal(stay.x_kept, x) and not stay.improved.any()
    moved = attack_batch(model, x, y, idx, "topk", settings, lo=0.0, hi=1.0, integral=False, seed=2)
    assert moved.zero_direction.all() and moved.improved.any()
    # Not flagged when the mask leaves part of the support out.
    partial = attack_batch(model, x, y, idx, "topk", {**BASE, "iterations": 1, "k_attack": 4}, lo=0.0, hi=1.0,
                           integral=False)
    assert not partial.zero_direction.any()


def test_restarts_keep_the_best_run(digits):
    model, x, y, idx = digits
    one = attack_batch(model, x, y, idx, "random", BASE, lo=0.0, hi=1.0, integral=False, seed=5)
    three = attack_batch(model, x, y, idx, "random", {**BASE, "restarts": 3}, lo=0.0, hi=1.0, integral=False, seed=5)
    assert (three.kendall_tau <= one.kendall_tau).all()
    assert set(three.restart.tolist()) <= {0, 1, 2}
    assert (three.kendall_tau < one.kendall_tau).any() or (three.restart == 0).all()


def _mnist(split: str, count: int):
    from attrrob.data import read_idx

    root = shared_path("data", "mnist")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")[:count]
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")[:count]
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    return x, torch.tensor(labels, dtype=torch.long)


def test_topk_attack_lowers_intersection_on_natural_mnist():
    x_train, y_train = _mnist("train", 15000)
    torch.manual_seed(0)
    model = _train(models.build("mnist"), x_train, y_train, steps=150, lr=1e-3, batch=50, seed=0)
    x, y = _mnist("test", 40)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    assert keep.float().mean() > 0.8, "the briefly trained MNIST model did not learn"
    x, y = x[keep][:8], y[keep][:8]
    # The paper's ε and k at a reduced budget: 5 iterations of a 0.06 step, 20-point IG.
    settings = dict(eps=0.3, step_size=0.06, iterations=5, k_attack=200, k_metric=100, ig_steps=20,
                    restarts=1, zero_direction="random_sign")
    result = attack_batch(model, x, y, list(range(len(y))), "topk", settings, lo=0.0, hi=1.0, integral=False)
    out = result.metrics(100, 28, 28)
    # Measured here: mean IN 0.60 and mean τ 0.31 (unattacked: 1 and 1); margins leave room for
    # platform differences while still failing for an attack that does not work.
    assert out["topk_intersection"].mean() < 0.8
    assert out["kendall_tau"].mean() < 0.6
    # MNIST digits have ≤ 200 non-zero pixels, so the true top-200 direction starts at exactly zero.
    assert result.zero_direction.float().mean() > 0.5
