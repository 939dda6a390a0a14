"""CUDA paths against the CPU on the same weights and inputs (marker `cuda`; skipped without a GPU).

IG saliency maps (real and smooth networks, MNIST CNN and both ResNets), one training step of each
method (MNIST, GTSRB), the top-k attack on MNIST images, `--device auto`'s GPU lock, and the
evaluator's batch plan against its memory budget; the training steps, the costliest on the CPU side,
come last. Each test has its own time limit (pytest-timeout).

    python -m pytest -m cuda tests/test_cuda.py            # on a GPU machine
    ATTRROB_CUDA_TESTS_ON_CPU=1 python -m pytest tests/test_cuda.py

The second line is the smoke mode CI uses (through benchmarks/gpu_check.sh): the same tests at tiny
sizes with the CPU standing in for the GPU, which proves only that they run, never a GPU result.
On a GPU, `--junitxml` keeps the measured numbers (record_property) beside each verdict.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import torch

from attrrob import config, devices, evaluation, models, objectives, registry, training
from attrrob.attacks import saliency as saliency_attacks
from attrrob.ig import integrated_gradients, logit_fn, saliency_map
from conftest import REPO, shared_dir

ON_CPU = os.environ.get("ATTRROB_CUDA_TESTS_ON_CPU") == "1"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (ON_CPU or torch.cuda.is_available()),
                                 reason="needs a CUDA GPU (ATTRROB_CUDA_TESTS_ON_CPU=1: smoke mode on the CPU)")]

LOSS_RTOL = 1e-4        # one training step: device vs CPU loss, relative
TAU_ATOL = 1e-3         # top-k attack: kept τ where the iterates differ
SALIENCY_RTOL = 1e-4    # IG saliency maps, per image, relative to the largest value
# Problem sizes: the GPU run's, or the smoke mode's (None: the paper's setting).
SIZES = {
    "ig_images": 4, "ig_steps": None, "train_batch": {"mnist": 8, "gtsrb": 4}, "train_overrides": {},
    "attack_images": 8, "attack_iterations": 10,
    "plan_batch_images": {"mnist": None, "gtsrb": None, "flower": None},
}
if ON_CPU:
    SIZES = {
        "ig_images": 1, "ig_steps": 4, "train_batch": {"mnist": 2, "gtsrb": 1},
        "train_overrides": {"m": 2, "approx_factor": 1, "pgd_steps": 1},
        "attack_images": 2, "attack_iterations": 2,
        "plan_batch_images": {"mnist": 2, "gtsrb": 1, "flower": 1},
    }
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def device():
    """cuda:0 with IEEE float32 on it and on the CPU (the spec's float32, not cuDNN's TF32 default)."""
    where = CPU if ON_CPU else torch.device("cuda", 0)
    previous = {t: devices.set_float32_precision(t, "ieee") for t in {"cpu", where.type}}
    yield where
    for t, mode in previous.items():
        devices.set_float32_precision(t, mode)


@pytest.fixture(scope="module")
def golden():
    """RAR's trained MNIST weights and test images, or None (random weights are used then)."""
    path = shared_dir() / "data" / "golden" / "rar_mnist_natural.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files if not k.startswith("attack/")}


def per_image_error(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """max |a − b| / max |b| per image (the golden tests' measure)."""
    a, b = a.detach().double().cpu().flatten(1), b.detach().double().cpu().flatten(1)
    return ((a - b).abs().amax(1) / b.abs().amax(1).clamp_min(1e-30)).numpy()


def relative(a: float, b: float) -> float:
    """|a − b| / max(|b|, tiny), infinite where either is not finite."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-30)


def test_measures():
    assert relative(1.0001, 1.0) == pytest.approx(1e-4) and relative(float("nan"), 1.0) == math.inf
    a = torch.tensor([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 2.0, 3.0], [0.0, 2.0, 1.0]])
    assert per_image_error(a, b).tolist() == pytest.approx([1 / 3, 1 / 2])


def build(dataset: str, seed: int, golden=None) -> torch.nn.Module:
    model = models.build(dataset, generator=torch.Generator().manual_seed(seed))
    if dataset == "mnist" and golden is not None:
        models.load_tf_weights(model, golden)
    return model


def random_inputs(dataset: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the data set's shape and value range (integer pixels where it has them), labels."""
    spec = config.dataset_input(dataset)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, spec["channels"], spec["height"], spec["width"], generator=g) * float(spec["max_value"])
    y = torch.randint(0, spec["classes"], (n,), generator=g)
    return (torch.floor(x) if spec["integral"] else x), y


def golden_images(golden, n: int) -> torch.Tensor:
    return torch.from_numpy(golden["images"][:n]).permute(0, 3, 1, 2).contiguous().float()


def attack_settings(dataset: str, **extra) -> dict:
    if SIZES["ig_steps"] is not None:
        extra["ig_steps"] = SIZES["ig_steps"]
    return config.attack_settings(dataset, overrides=extra or None)


# ----------------------------------------------------------------------------- IG saliency


@pytest.mark.timeout(120)
@pytest.mark.parametrize("smooth", [False, True], ids=["real", "smooth"])
@pytest.mark.parametrize("dataset", ["mnist", "gtsrb", "flower"])
def test_ig_saliency_matches_cpu(dataset, smooth, device, golden, record_property):
    model_cpu = build(dataset, 0, golden).eval()
    use_golden = dataset == "mnist" and golden is not None
    x = golden_images(golden, SIZES["ig_images"]) if use_golden else random_inputs(dataset, SIZES["ig_images"], 11)[0]
    with torch.no_grad():
        y = model_cpu(x).argmax(1)
    steps = SIZES["ig_steps"] or 100
    maps = []
    for model, where in ((model_cpu, CPU), (copy.deepcopy(model_cpu).to(device), device)):
        xd, yd = x.to(where), y.to(where)
        if smooth:
            maps.append(saliency_map(integrated_gradients(logit_fn(model, yd, smooth=True), xd, 0.0, steps)).cpu())
        else:
            maps.append(saliency_attacks.real_saliency(model, xd, yd, steps).cpu())
    err = per_image_error(maps[1], maps[0])
    record_property("max_rel_error", float(err.max()))
    record_property("weights", "golden RAR MNIST" if use_golden else "random")
    assert err.max() <= SALIENCY_RTOL, f"per-image relative errors {err.tolist()} (tolerance {SALIENCY_RTOL:g})"


# ----------------------------------------------------------------------------- top-k attack


@pytest.mark.timeout(180)
def test_topk_attack_keeps_the_same_iterate_or_tau(device, golden, record_property):
    model_cpu = build("mnist", 0, golden).eval()
    n = SIZES["attack_images"]
    x = golden_images(golden, n) if golden is not None else random_inputs("mnist", n, 31)[0]
    with torch.no_grad():
        y = model_cpu(x).argmax(1)
    settings = attack_settings("mnist", iterations=SIZES["attack_iterations"])
    indices = list(range(n))
    a, b = (saliency_attacks.attack_batch(model, x.to(where), y.to(where), indices, "topk", settings,
                                          lo=0.0, hi=1.0, integral=False, seed=0)
            for model, where in ((model_cpu, CPU), (copy.deepcopy(model_cpu).to(device), device)))
    verdicts = []
    for i in indices:
        same_step = int(a.step[i]) == int(b.step[i]) and int(a.restart[i]) == int(b.restart[i])
        x_diff = float((a.x_kept[i].cpu() - b.x_kept[i].cpu()).abs().max())
        tau_diff = abs(float(a.kendall_tau[i]) - float(b.kendall_tau[i]))
        verdicts.append("same kept iterate" if same_step and x_diff <= 1e-6
                        else "tau within 1e-3" if tau_diff <= TAU_ATOL
                        else f"DIFFERENT (steps {int(a.step[i])}/{int(b.step[i])}, |dtau| {tau_diff:.3g})")
    record_property("verdicts", verdicts)
    assert not [v for v in verdicts if v.startswith("DIFFERENT")], verdicts
    if ON_CPU:
        assert set(verdicts) == {"same kept iterate"}, verdicts


# ----------------------------------------------------------------------------- --device auto lock


_LOCK_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    from attrrob import devices
    stand_in = {stand_in!r}
    mode, wait_s = sys.argv[1], float(sys.argv[2])
    t0 = time.monotonic()
    try:
        if stand_in:  # smoke mode: the lock logic of select_device('auto') on a stand-in GPU
            index, lock = devices.acquire_gpu([devices.GpuInfo(0, stand_in, 1)], wait_s)
            where = 'gpu%d' % index
        else:
            device, lock = devices.select_device('auto', wait_s=wait_s)
            where = str(device) + ' ' + (devices._physical_id(device.index) if device.type == 'cuda' else '')
        print('TOOK %s after %.2f s' % (where, time.monotonic() - t0), flush=True)
        if mode == 'hold':
            sys.stdin.readline()
    except Exception as exc:
        print('REFUSED after %.2f s: %s' % (time.monotonic() - t0, str(exc).splitlines()[0]), flush=True)
""")


@pytest.mark.timeout(240)
def test_device_auto_lock_makes_a_second_process_wait_or_move(device, record_property):
    """A first process takes `--device auto`'s lock; a second one waits (one GPU: refused after its
    3 s limit, and a third, waiting one is served once the first lets go) or takes another GPU."""
    code = _LOCK_CHILD.format(src=str(REPO / "src"), stand_in="" if device.type == "cuda" else "smoke-stand-in-gpu")
    with tempfile.TemporaryDirectory(prefix="attrrob-lockcheck-") as lock_dir:
        env = dict(os.environ, **{devices.LOCK_DIR_ENV: lock_dir})
        env.pop(devices.WAIT_ENV, None)

        def start(mode, wait):
            return subprocess.Popen([sys.executable, "-c", code, mode, str(wait)], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        first = start("hold", 0)
        first_line = first.stdout.readline().strip()
        second = start("once", 3)
        second_line = second.communicate(timeout=120)[0].strip()
        waiter = start("once", 60)
        waiter_said = waiter.stderr.readline()  # let go of the first lock once the waiter says it waits
        first.communicate("\n", timeout=60)
        waiter_line, waiter_err = waiter.communicate(timeout=120)
    lines = f"first {first_line!r}, second {second_line!r}, waiting one {waiter_line.strip()!r}"
    record_property("processes", lines)
    assert first_line.startswith("TOOK"), lines
    if (torch.cuda.device_count() if device.type == "cuda" else 1) == 1:
        assert second_line.startswith("REFUSED") and waiter_line.startswith("TOOK"), lines
        assert "waiting" in waiter_said + waiter_err, waiter_said + waiter_err
    else:
        assert second_line.startswith("TOOK") and first_line.split()[1:3] != second_line.split()[1:3], lines


# ----------------------------------------------------------------------------- evaluator batch plan


@pytest.mark.timeout(180)
@pytest.mark.parametrize("dataset", ["mnist", "gtsrb", "flower"])
def test_evaluator_plan_fits_its_memory_budget(dataset, device, record_property):
    """One attack iteration run with the evaluator's batch plan stays within its memory budget."""
    bi = SIZES["plan_batch_images"][dataset]
    s = attack_settings(dataset, iterations=1, **({"batch_images": bi} if bi else {}))
    model = build(dataset, 0).to(device).eval()
    plan = evaluation.plan_batches(model, random_inputs(dataset, 1, 41)[0].to(device), s["ig_steps"],
                                   s["batch_images"], int(s.get("ig_max_batch") or 0))
    for key in ("budget_bytes", "row_bytes", "max_rows", "batch_images"):
        record_property(key, getattr(plan, key))
    xb = random_inputs(dataset, plan.batch_images, 42)[0].to(device)
    with torch.no_grad():
        yb = model(xb).argmax(1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    spec = config.dataset_input(dataset)
    saliency_attacks.attack_batch(model, xb, yb, list(range(plan.batch_images)), "topk", s, lo=0.0,
                                  hi=float(spec["max_value"]), integral=bool(spec["integral"]), seed=0,
                                  max_rows=plan.max_rows)
    record_property("iteration_s", round(time.perf_counter() - t0, 3))
    assert plan.batch_images >= 1 and plan.max_rows >= 1
    if device.type == "cuda":
        peak_of_budget = (torch.cuda.max_memory_allocated(device) - base) / plan.budget_bytes
        record_property("peak_of_budget", round(peak_of_budget, 3))
        assert peak_of_budget <= 1.0, f"peak {peak_of_budget:.3f} of the plan's budget"


# ----------------------------------------------------------------------------- training step


def one_step(method, model, x, y, settings, seed: int) -> tuple[dict, float]:
    """compute_loss + backward + update, as the training loop does; returns (terms, grad norm)."""
    optimizer = training.make_optimizer(model, settings)
    loss, terms = objectives.compute_loss(method, model, x, y, settings, torch.Generator().manual_seed(seed))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.detach().double().pow(2).sum() for p in model.parameters() if p.grad is not None]
    optimizer.step()
    return terms, float(torch.stack(grads).sum().sqrt()) if grads else 0.0


def adversarial_difference(dataset, method, settings, x, y, device) -> float:
    """Fraction of pixels where the inner PGD's x′ differs between CPU and device: says whether a
    sign step flipped (sign steps amplify a rounding difference of a near-zero gradient)."""
    found = []
    for where in (CPU, device):
        model = build(dataset, 3).to(where).train()
        found.append(objectives.adversarial_example(method, model, x.to(where), y.to(where), settings,
                                                    torch.Generator().manual_seed(5)).cpu())
    return float((found[0] != found[1]).float().mean())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", registry.METHODS)
@pytest.mark.parametrize("dataset", ["mnist", "gtsrb"])
def test_one_training_step_matches_cpu(dataset, method, device, record_property):
    overrides = dict(SIZES["train_overrides"], batch_size=SIZES["train_batch"][dataset])
    s = config.train_settings(dataset, method, overrides=overrides)
    x, y = random_inputs(dataset, s["batch_size"], 21)
    results = []
    for where in (CPU, device):
        model = build(dataset, 3).to(where).train()
        results.append(one_step(method, model, x.to(where), y.to(where), s, 5))
    (cpu_terms, cpu_norm), (dev_terms, dev_norm) = results
    rel = relative(dev_terms["total"], cpu_terms["total"])
    record_property("rel_diff", rel)
    record_property("grad_norm_rel_diff", relative(dev_norm, cpu_norm))
    assert all(math.isfinite(v) for v in dev_terms.values()), dev_terms
    if rel > LOSS_RTOL:
        flipped = (adversarial_difference(dataset, method, s, x, y, device)
                   if registry.method(method).inner is not None else None)
        pytest.fail(f"loss {dev_terms['total']!r} on {device} vs {cpu_terms['total']!r} on the CPU: {rel:.3g} "
                    f"relative (tolerance {LOSS_RTOL:g}); fraction of x' pixels differing: {flipped}")
