"""The batched evaluator against an independent per-image transcription of the reference walk.

The transcription follows the spec's protocol (RAR's `ig_attack.py`) one image at a time, with
plain loops: its own IG (one autograd call per path point), numpy for maps, steps, projection,
top-k sets and centres, `scipy.stats.kendalltau` / `spearmanr` for the criterion and metrics, all
iterations without an early stop, and the runs one after another. It shares with attrrob only
the model and the conventions that define the random streams (`image_generator`, which stream
feeds which draw, the default target square). `evaluate_attack` runs batched, in float64 so that
no sign of a near-zero gradient component can differ between the two.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from attrrob import config, models
from attrrob.attacks import saliency as attacks
from attrrob.evaluation import evaluate_attack

H = W = 8


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model trains much faster on one thread of a shared CPU
    try:
        torch.manual_seed(0)
        model = models.build("digits")
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(150):
            idx = torch.randint(0, 1400, (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model = model.double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x[1400:1408].double(), y[1400:1408]


# ----------------------------------------------------------------------------- the transcription


def ig_by_loop(model, x: torch.Tensor, label: int, steps: int, smooth: bool, create_graph: bool) -> torch.Tensor:
    """IG of logit_label from a zero baseline: x ⊙ (1/n) Σ_{i=1..n} ∇f((i/n)·x), one point at a time."""
    total = torch.zeros_like(x)
    for i in range(1, steps + 1):
        point = (i / steps) * x
        if not point.requires_grad:
            point = point.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point, smooth=smooth)[0, label], point, create_graph=create_graph)
        total = total + grad
    return x * total / steps


def normalised(mass: torch.Tensor) -> torch.Tensor:
    return H * W * mass / mass.sum() if float(mass.detach().sum()) > 0 else mass


def real_map(model, x: np.ndarray, label: int, steps: int) -> np.ndarray:
    ig = ig_by_loop(model, torch.from_numpy(x)[None], label, steps, smooth=False, create_graph=False)
    return normalised(ig.abs().sum(1).flatten()).numpy()


def surrogate_map(model, x: torch.Tensor, label: int, steps: int) -> torch.Tensor:
    """Differentiable in x (a [1, C, H, W] leaf)."""
    ig = ig_by_loop(model, x, label, steps, smooth=True, create_graph=True)
    return normalised(ig.abs().sum(1).flatten())


def centre_np(values: np.ndarray) -> np.ndarray:
    rows, cols = np.divmod(np.arange(H * W), W)
    return np.array([(values * rows).sum(), (values * cols).sum()]) / values.sum()


def centre_torch(values: torch.Tensor) -> torch.Tensor:
    rows, cols = np.divmod(np.arange(H * W), W)
    rows, cols = torch.from_numpy(rows).double(), torch.from_numpy(cols).double()
    return torch.stack([(values * rows).sum(), (values * cols).sum()]) / values.sum()


def top_set_index(values: np.ndarray, k: int) -> set:
    return set(np.argsort(-values, kind="stable")[:k].tolist())


def top_set_shuffled(values: np.ndarray, k: int, generator: torch.Generator) -> set:
    """Ties among equal values in the order of a random permutation drawn from `generator`."""
    perm = torch.randperm(len(values), generator=generator).numpy()
    return set(perm[np.argsort(-values[perm], kind="stable")[:k]].tolist())


def expected_intersection(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """The spec's closed form with S (above the k-th value) and T (equal to it) written as sets."""
    def split(values):
        kth = np.sort(values)[::-1][k - 1]
        s, t = set(np.flatnonzero(values > kth)), set(np.flatnonzero(values == kth))
        return s, t, (k - len(s)) / len(t)
    s1, t1, p1 = split(a)
    s2, t2, p2 = split(b)
    return (len(s1 & s2) + len(s1 & t2) * p2 + len(t1 & s2) * p1 + len(t1 & t2) * p1 * p2) / k


def random_signs(generator: torch.Generator, shape) -> np.ndarray:
    return torch.randint(0, 2, tuple(shape), generator=generator).numpy() * 2.0 - 1.0


def reference_attack(model, x: np.ndarray, label: int, index: int, attack: str, s: dict, seed: int) -> dict:
    """One image, the whole protocol: runs, walk, criterion, kept iterate, metrics."""
    steps, k = s["ig_steps"], s["k_attack"]
    map0 = real_map(model, x, label, steps)
    if attack == "topk":
        generator = attacks.image_generator(seed, index, attacks._MASK_STREAM)
        mask = np.zeros(H * W)
        mask[list(top_set_shuffled(map0, k, generator))] = 1.0
    elif attack == "mass_center":
        x_leaf = torch.from_numpy(x)[None]
        c0 = np.trunc(centre_np(surrogate_map(model, x_leaf, label, steps).detach().numpy()))
    elif attack == "targeted":
        target = attacks.default_target_masks([index], H, W, k, seed)[0].double().numpy()

    def loss(m: torch.Tensor) -> torch.Tensor:
        if attack == "topk":
            return -(m * torch.from_numpy(1.0 - mask)).sum()
        if attack == "targeted":
            return -(m * torch.from_numpy(target)).sum()
        return -((centre_torch(m) - torch.from_numpy(c0)) ** 2).sum()

    runs = s["random_restarts"] if attack == "random" else s["restarts"]
    best = dict(tau=1.0, x=x, run=0, step=0)
    trace = np.ones(s["iterations"] + 1)
    trace_in = np.ones(s["iterations"] + 1)
    zero_seen = False
    run_traces = []
    for run in range(runs):
        generator = attacks.image_generator(seed, index, run)
        x_t = x.copy()
        kept = dict(tau=1.0, x=x, step=0, intersection=1.0)
        run_trace = [(1.0, 1.0)]
        for step in range(1, s["iterations"] + 1):
            if attack == "random":
                direction = random_signs(generator, x.shape)
            else:
                leaf = torch.from_numpy(x_t)[None].requires_grad_(True)
                (grad,) = torch.autograd.grad(loss(surrogate_map(model, leaf, label, steps)), leaf)
                direction = -grad[0].numpy()
                if not direction.any():
                    zero_seen = True
                    if s["zero_direction"] == "random_sign":
                        direction = random_signs(generator, x.shape)
            x_t = np.clip(x + np.clip(x_t + s["step_size"] * np.sign(direction) - x, -s["eps"], s["eps"]), 0.0, 1.0)
            with torch.no_grad():
                same_label = int(model(torch.from_numpy(x_t)[None]).argmax(1)) == label
            map_t = real_map(model, x_t, label, steps)
            criterion = stats.kendalltau(map0, map_t).statistic if same_label else 1.0
            if criterion < kept["tau"]:
                inter = (expected_intersection(map0, map_t, s["k_metric"]) if s["ties"] == "expected"
                         else len(top_set_index(map0, s["k_metric"]) & top_set_index(map_t, s["k_metric"]))
                         / s["k_metric"])
                kept = dict(tau=criterion, x=x_t.copy(), step=step, intersection=inter)
            run_trace.append((kept["tau"], kept["intersection"]))
        run_traces.append(run_trace)
        if kept["tau"] < best["tau"]:
            best = dict(kept, run=run)
    for t in range(s["iterations"] + 1):
        values = [rt[t] for rt in run_traces]
        first = min(range(runs), key=lambda r: (values[r][0], r))
        trace[t], trace_in[t] = values[first]
    map_kept = real_map(model, best["x"], label, steps)
    improved = best["tau"] < 1.0
    k_metric = s["k_metric"]
    return {
        "kendall_tau": best["tau"],
        "topk_intersection": (expected_intersection(map0, map_kept, k_metric) if s["ties"] == "expected"
                              else len(top_set_index(map0, k_metric) & top_set_index(map_kept, k_metric)) / k_metric)
        if improved else 1.0,
        "spearman_rho": stats.spearmanr(map0, map_kept).statistic if improved else 1.0,
        "mass_center_shift": float(np.linalg.norm(centre_np(map0) - centre_np(map_kept))) if improved else 0.0,
        "linf": float(np.abs(best["x"] - x).max()),
        "restart": best["run"] if improved else 0, "step": best["step"], "zero_direction": int(zero_seen),
        "trace_tau": trace, "trace_in": trace_in,
    }


# ----------------------------------------------------------------------------- the comparison


CASES = {
    "topk": ("topk", {}),
    "topk_tied_mask": ("topk", {"k_attack": 40, "k_metric": 40}),  # mask ties, zero directions, tied IN sets
    "random": ("random", {"random_restarts": 2}),
    "mass_center": ("mass_center", {}),
    "targeted": ("targeted", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_evaluator_equals_the_reference_walk_per_image(digits, case):
    model, x, y = digits
    attack, extra = CASES[case]
    s = config.attack_settings("digits", overrides={"iterations": 4, "ig_steps": 5, "step_size": 0.03,
                                                    "num_examples": len(y), **extra})
    seed = 7
    outcome = evaluate_attack(model, x, y, attack, s, dataset="digits", seed=seed, save_examples=0, progress=False)
    attacked = [r for r in outcome.rows if r["status"] == "attacked"]
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).nonzero().flatten().tolist()
    assert [r["index"] for r in attacked] == correct and len(correct) >= 5
    trace = outcome.trace
    assert trace["indices"].tolist() == correct
    for row, index in enumerate(correct):
        ours = attacked[row]
        ref = reference_attack(model, x[index].numpy(), int(y[index]), index, attack, s, seed)
        for name in ("restart", "step", "zero_direction"):
            assert ours[name] == ref[name], (index, name)
        for name in ("kendall_tau", "topk_intersection", "spearman_rho", "mass_center_shift", "linf"):
            assert ours[name] == pytest.approx(ref[name], abs=1e-9), (index, name)
        np.testing.assert_allclose(trace["kendall_tau"][row], ref["trace_tau"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(trace["topk_intersection"][row], ref["trace_in"], rtol=0, atol=1e-6)
    # The comparison covered what it is meant to: moving walks, and where asked, zero directions and ties.
    assert any(r["step"] > 0 for r in attacked)
    if case.startswith("topk_"):
        assert all(r["zero_direction"] == 1 for r in attacked) and all(r["topk_tied_slots"] > 0 for r in attacked)
    if attack == "random":
        assert any(r["restart"] == 1 for r in attacked)


def test_expected_intersection_transcription_agrees_with_enumeration():
    """The reference's closed form itself against brute force over every tie-break."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 12).astype(float)
    b = rng.integers(0, 3, 12).astype(float)
    k = 5

    def sets(values):
        kth = np.sort(values)[::-1][k - 1]
        above = set(np.flatnonzero(values > kth))
        return [above | set(c) for c in itertools.combinations(np.flatnonzero(values == kth), k - len(above))]

    exact = np.mean([len(p & q) for p in sets(a) for q in sets(b)]) / k
    assert expected_intersection(a, b, k) == pytest.approx(exact, abs=1e-12)
