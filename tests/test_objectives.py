"""The seven objectives against a direct, per-point-loop transcription of the reference sketch
(details-from-code.md §1.7), plus descent, PGD-range and shared-iterate properties."""

import pytest
import torch
import torch.nn.functional as F

from attrrob import config, ig, models, objectives, registry
from attrrob.errors import ConfigError

METHODS = list(registry.METHODS)


def tiny_settings(method, **extra):
    over = dict(m=4, approx_factor=2, pgd_steps=2, eps=0.1, pgd_step_size=0.03, batch_size=4)
    over.update(extra)
    return config.train_settings("digits", method, overrides=over)


def tiny_problem(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = models.build("digits").to(dtype)
    x = torch.rand(4, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(seed + 1))
    y = torch.tensor([0, 3, 7, 9])
    return model, x, y


# ---------------------------------------------------------------- reference: the §1.7 sketch, looped

def ref_ig(g, a, b, m, pts=None):
    ks = range(1, m + 1) if pts is None else pts
    tot = 0
    for k in ks:
        z = a + k / m * (b - a)
        if not z.requires_grad:
            z = z.requires_grad_(True)
        tot = tot + torch.autograd.grad(g(z).sum(), z, create_graph=True)[0]
    return (b - a) * tot / len(ks)


def reference_loss(method, net, x, y, s, gen):
    eps, m, af = s["eps"], s["m"], s["approx_factor"]
    # λ for ig_norm and sarkar*, β for ig_sum_norm; the inner PGD weight is tied to it (defaults).
    lam = s["beta"] if method == "ig_sum_norm" else s["lam"]

    def ce(z):
        return -torch.log(F.softmax(net(z), 1).gather(1, y[:, None]).clamp(1e-10, 1)).squeeze(1)

    def py(z):
        return F.softmax(net(z), 1).gather(1, y[:, None]).squeeze(1)

    def pneg(z):
        p = F.softmax(net(z), 1)
        top2 = p.topk(2, 1).indices
        n = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
        return p.gather(1, n[:, None]).squeeze(1)

    def inner(z):
        if method == "madry":
            return F.cross_entropy(net(z), y, reduction="sum")
        approx = ref_ig(ce, x, z, m, pts=range(af, m + 1, af)).abs().sum()
        # adv_xent is unclipped (TF's sparse_softmax_cross_entropy_with_logits); ce stays inside IG.
        return approx if method == "ig_norm" else F.cross_entropy(net(z), y, reduction="sum") + lam * approx

    xa = None
    if method != "natural":
        xa = x + torch.empty(x.shape, dtype=x.dtype).uniform_(-eps, eps, generator=gen)
        for _ in range(s["pgd_steps"]):
            xa.requires_grad_(True)
            g, = torch.autograd.grad(inner(xa), xa)
            xa = torch.min(torch.max(xa.detach() + s["pgd_step_size"] * g.sign(), x - eps), x + eps).clamp(0, 1)
        xa = xa.detach()
    red = s["loss_reduction"]
    if method == "natural":
        return F.cross_entropy(net(x), y, reduction=red)
    if method == "madry":
        return F.cross_entropy(net(xa), y, reduction=red)
    if method == "ig_norm":
        return F.cross_entropy(net(x), y, reduction="sum") + lam * ref_ig(ce, x, xa, m).abs().sum()
    if method == "ig_sum_norm":
        return F.cross_entropy(net(xa), y, reduction="sum") + lam * ref_ig(ce, x, xa, m).abs().sum()
    A = -ref_ig(ce, x, xa, m)
    B = ref_ig(py, torch.zeros_like(x), x, m)
    T = ref_ig(py, torch.zeros_like(xa), xa, m).sum(1).flatten(1)
    N = ref_ig(pneg, torch.zeros_like(xa), xa, m).sum(1).flatten(1)
    cacr = ((T.mean(1) - T.logsumexp(1)) - (N.mean(1) - N.logsumexp(1))).sum()
    Bf, Af = B.flatten(1), A.flatten(1)
    match = Bf.sign() == Af.sign()
    wacr = (Bf * Af)[match].sum() + Af[~match].abs().sum()
    reg = {"sarkar": cacr + wacr, "sarkar_cacr": cacr, "sarkar_wacr": wacr}[method]
    return F.cross_entropy(net(xa), y, reduction="sum") + lam * reg


@pytest.mark.parametrize("method", METHODS)
def test_loss_and_weight_gradient_match_reference_sketch(method):
    model, x, y = tiny_problem()
    s = tiny_settings(method, weight_decay=0.0)
    loss, terms = objectives.compute_loss(method, model, x, y, s, torch.Generator().manual_seed(5))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref = reference_loss(method, model, x, y, s, torch.Generator().manual_seed(5))
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-10)
    assert set(terms) == set(objectives.term_names(method))
    assert terms["total"] == pytest.approx(ref.item(), rel=1e-9)
    # The regularisers must actually be exercised (non-zero) for this comparison to mean something.
    for name in ("ig_l1", "cacr", "wacr"):
        if name in terms:
            assert terms[name] != 0.0


class _ConfidentlyWrong(torch.nn.Module):
    """Logits (0, 50·Σx): every image in [0.5, 1]^4 is class 1 with p_0 < e^-100 (far below 1e-10)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.0] * 4, [50.0] * 4], dtype=torch.float64))

    def forward(self, z, smooth=False):
        return z.flatten(1) @ self.w.T


@pytest.mark.parametrize("method", ["ig_sum_norm", "sarkar"])
def test_inner_cross_entropy_is_unclipped_where_the_clipped_one_is_flat(method):
    """p_y < 1e-10: −log clip(p_y, 1e-10) is flat, so the old inner gradient was exactly 0; the
    reference's adv_xent (unclipped) has the closed-form gradient Wᵀ(softmax − e_y) ≠ 0. The IG term
    (clipped ℓ inside IG, as the reference) contributes nothing there."""
    net = _ConfidentlyWrong()
    x = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64) + 0.1 * torch.rand(2, 1, 2, 2, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    z = (x + 0.05).requires_grad_(True)
    s = {**tiny_settings(method), "method": method}
    (grad,) = torch.autograd.grad(registry.method(method).inner_loss(net, x, y, s)(z), z)
    p = F.softmax(net(z.detach()), 1)
    assert (p[:, 0] < 1e-10).all()
    expected = ((p - F.one_hot(y, 2).double()) @ net.w.detach()).view_as(z)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)
    assert grad.abs().min() > 0.1
    (clipped,) = torch.autograd.grad(ig.cross_entropy_fn(net, y)(z).sum(), z)
    assert not clipped.any()  # the clipped form would not move this x′ at all


def test_terms_recombine_to_total_with_weight_decay():
    model, x, y = tiny_problem()
    s = tiny_settings("sarkar", weight_decay=0.01, lam=0.3)
    _, t = objectives.compute_loss("sarkar", model, x, y, s, torch.Generator().manual_seed(1))
    wd = sum(0.5 * (w ** 2).sum().item() for w in models.decayed_parameters(model))
    assert t["weight_decay"] == pytest.approx(wd, rel=1e-12)
    assert t["total"] == pytest.approx(t["ce"] + 0.3 * (t["cacr"] + t["wacr"]) + 0.01 * wd, rel=1e-12)


def record_pgd_iterates(monkeypatch):
    seen = []
    real = objectives.pgd

    def spy(loss_fn, x, **kw):
        def wrapped(z):
            seen.append(z.detach().clone())
            return loss_fn(z)
        out = real(wrapped, x, **kw)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(objectives, "pgd", spy)
    return seen


@pytest.mark.parametrize("method", [m for m in METHODS if m != "natural"])
def test_inner_pgd_iterates_stay_in_ball_and_range(monkeypatch, method):
    seen = record_pgd_iterates(monkeypatch)
    model, x, y = tiny_problem(torch.float32)
    x[0, 0, :2] = 0.0  # pixels at the range's edges, where the range clip matters
    x[1, 0, :2] = 1.0
    s = tiny_settings(method, eps=0.2, pgd_steps=3, pgd_step_size=0.1)
    x_adv = objectives.adversarial_example(method, model, x, y, s, torch.Generator().manual_seed(2))
    assert len(seen) == 4 and torch.equal(seen[-1], x_adv)
    for z in seen[1:]:  # the random start is not clipped (reference); every later iterate is
        assert (z - x).abs().max() <= 0.2 + 1e-6
        assert z.min() >= 0.0 and z.max() <= 1.0
    assert (x_adv - x).abs().max() > 0.1  # it moved


def test_ig_sum_norm_and_sarkar_variants_draw_identical_inner_iterates(monkeypatch):
    assert all(registry.method(m).inner_loss is registry.method("ig_sum_norm").inner_loss
               for m in ("sarkar", "sarkar_cacr", "sarkar_wacr"))
    runs = {}
    for method in ("ig_sum_norm", "sarkar", "sarkar_wacr"):
        seen = record_pgd_iterates(monkeypatch)
        model, x, y = tiny_problem(torch.float32)
        objectives.compute_loss(method, model, x, y, tiny_settings(method), torch.Generator().manual_seed(9))
        runs[method] = seen
        monkeypatch.undo()
    for method in ("sarkar", "sarkar_wacr"):
        assert len(runs[method]) == len(runs["ig_sum_norm"]) == 3
        assert all(torch.equal(a, b) for a, b in zip(runs[method], runs["ig_sum_norm"]))


@pytest.mark.parametrize("method", METHODS)
def test_a_few_steps_lower_the_loss(method):
    model, x, y = tiny_problem(torch.float32, seed=3)
    s = tiny_settings(method)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        # The same PGD start every step, so the loss sequence reflects only the weights.
        loss, _ = objectives.compute_loss(method, model, x, y, s, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses

    # Falling CE alone would pass the check above with the regulariser detached, mis-weighted or
    # missing its double-backward graph. So also check the gradient the optimiser follows (float64,
    # fixed PGD start): for the CE-only methods it is the central difference of the reported loss;
    # for the regularised ones (whose IG terms jump where a ReLU switches at a path point, so a
    # difference quotient is meaningless) it must move linearly and non-trivially with the weight.
    model, x, y = tiny_problem(torch.float64, seed=3)
    params = list(model.parameters())

    def grad_and_loss(**extra):
        s = tiny_settings(method, **extra)
        loss, _ = objectives.compute_loss(method, model, x, y, s, torch.Generator().manual_seed(0))
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]), loss.item()

    if method in ("natural", "madry"):
        grad, _ = grad_and_loss()
        direction = torch.randn(grad.shape, generator=torch.Generator().manual_seed(11), dtype=grad.dtype)
        h, values = 1e-6, []
        for sign in (1, -1):
            offset = 0
            with torch.no_grad():
                for p in params:
                    p.add_(sign * h * direction[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
            values.append(grad_and_loss()[1])
            with torch.no_grad():  # back to the start
                offset = 0
                for p in params:
                    p.sub_(sign * h * direction[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
        assert (values[0] - values[1]) / (2 * h) == pytest.approx(float(grad @ direction), rel=1e-5)
    else:
        weight = "beta" if method == "ig_sum_norm" else "lam"
        fixed = {} if method == "ig_norm" else {"inner_ig_weight": 0.1}  # x′ must not move with the weight
        g0, g1, g2 = (grad_and_loss(**{weight: w}, **fixed)[0] for w in (0.0, 1.0, 2.0))
        assert (g1 - g0).norm() > 1e-6 * g0.norm()  # the regulariser does push the weights
        torch.testing.assert_close(g2 - g1, g1 - g0, rtol=1e-6, atol=1e-9)


def test_ig_max_batch_chunks_give_the_same_loss():
    model, x, y = tiny_problem()
    full, _ = objectives.compute_loss("sarkar", model, x, y, tiny_settings("sarkar"), torch.Generator().manual_seed(4))
    chunked, _ = objectives.compute_loss("sarkar", model, x, y, tiny_settings("sarkar", ig_max_batch=4),
                                         torch.Generator().manual_seed(4))
    torch.testing.assert_close(full, chunked, rtol=1e-10, atol=1e-12)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown method 'trades'"):
        objectives.compute_loss("trades", None, None, None, {})


def test_rows_per_ig_call_honours_the_budget_and_caps_cpu_passes():
    s = tiny_settings("sarkar")
    mnist = torch.zeros(50, 1, 28, 28)
    assert objectives.rows_per_ig_call(dict(s, ig_max_batch=0), mnist) == ig.CPU_INPUT_ELEMENTS_PER_CALL // 784
    assert objectives.rows_per_ig_call(dict(s, ig_max_batch=100), mnist) == 100
    flower = torch.zeros(16, 3, 128, 128)
    assert objectives.rows_per_ig_call(dict(s, ig_max_batch=0), flower) == 16  # never below one point


@pytest.mark.parametrize("method", ["sarkar", "sarkar_cacr"])
def test_resnet_zero_baseline_shortcut_equals_the_full_path(monkeypatch, method):
    """B, T, N through per-image standardisation: one gradient (scale invariance) = m of them."""
    torch.manual_seed(0)
    model = models.build("gtsrb").double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=gen).double()
    y = torch.tensor([1, 7])
    s = config.train_settings("gtsrb", method, overrides=dict(m=5, approx_factor=5, pgd_steps=1, weight_decay=0.0))
    assert models.input_scale_invariant(model, x, 1 / s["m"])

    def loss_and_grads():
        loss, _ = objectives.compute_loss(method, model, x, y, s, torch.Generator().manual_seed(5))
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    fast, fast_grads = loss_and_grads()
    calls = []
    real = models.scale_invariant_images
    monkeypatch.setattr(models, "scale_invariant_images",
                        lambda m, x, s: calls.append(bool(real(m, x, s).all())) or torch.zeros(len(x), dtype=torch.bool))
    full, full_grads = loss_and_grads()
    assert calls and all(calls)  # the full path was forced where the shortcut would apply
    torch.testing.assert_close(fast, full, rtol=1e-9, atol=1e-12)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
