"""Prepared device check of attrrob on one CUDA GPU: correctness against the CPU, speed, memory.

One command, at most `--budget-s` seconds (default 480 = 8 minutes; every section has its own share
and stops where its time ends, keeping what it measured). Writes one Markdown report and one JSON
file (default `docs/gpu/gpu_check-<date>-<device>.{md,json}`, rewritten after every section so that
a run killed from outside still leaves what it had) and prints the report's tables.

    PYTHONPATH=src python benchmarks/gpu_check.py                 # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --cpu-smoke     # same code, tiny sizes, CPU, < 1 min

Sections:
1. environment (versions, device, the float32 precision in force, which data were found);
2. CUDA correctness, each against the CPU on the same weights and inputs: saliency maps (IG of the
   true-class logit, real and smooth networks, MNIST CNN and both ResNets); one training step of each
   of the seven methods (MNIST and GTSRB: finite, loss within 1e-4 relative of the CPU's); the top-k
   attack on MNIST images (same kept iterate, else τ within 1e-3: the report says which); `--device
   auto`'s GPU lock (a second process waits, or takes another GPU);
3. the evaluator's memory budget and batch plan per data set, and the peak memory of one attack
   iteration run with that plan;
4. evaluator speed on MNIST (batched vs `--batch-images 1`, projected 10,000 × 100 protocol time);
5. training speed of every data set × method at the paper's settings (random data of the right
   shapes; examples/s, peak memory), and the projected hours of the paper grid on one and two GPUs;
6. whether TF32 or bf16 autocast changes the training losses (and how much faster they are).

Needs: Python ≥ 3.10, torch (any recent 2.x; the project pins 2.14.1), numpy, scipy, pyyaml, and
this repository's `src/` on PYTHONPATH (or `pip install --no-deps -e .`). Optional: tqdm (a stub
stands in when absent), nvidia-smi (free memory per GPU), the MNIST files (data/prepared/mnist.npz,
or $ATTRROB_SHARED/data/mnist, else ../shared/data/mnist) and the golden file
$ATTRROB_SHARED/data/golden/rar_mnist_natural.npz (trained weights); without them random weights
and inputs are used, and the report says so. See docs/gpu/README.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import types
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # works from a bare checkout without installing the package
    sys.path.insert(0, str(REPO / "src"))


def _tqdm_stub() -> None:
    """A do-nothing `tqdm.auto.tqdm` where tqdm is not installed (a bare GPU machine)."""
    try:
        import tqdm.auto  # noqa: F401
        return
    except ImportError:
        pass

    class tqdm:  # noqa: N801 - the name the package imports
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, *args, **kwargs):
            pass

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    package, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
    package.tqdm = auto.tqdm = tqdm
    package.auto = auto
    package.__attrrob_stub__ = True
    sys.modules["tqdm"], sys.modules["tqdm.auto"] = package, auto


_tqdm_stub()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from attrrob import config, devices, evaluation, models, objectives, training  # noqa: E402
from attrrob.attacks import saliency as saliency_attacks  # noqa: E402
from attrrob.ig import integrated_gradients, logit_fn, saliency_map  # noqa: E402

LOSS_RTOL = 1e-4        # one training step: CPU vs GPU loss, relative
TAU_ATOL = 1e-3         # top-k attack: kept τ where the iterates differ
SALIENCY_RTOL = 1e-4    # IG saliency maps, per image, relative to the largest value
PROTOCOL_IMAGES, PROTOCOL_ITERATIONS = 10_000, 100
TRAIN_DATASETS = ("mnist", "fashion_mnist", "gtsrb", "flower")
GOLDEN = "rar_mnist_natural.npz"
OutOfMemory = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)  # torch < 1.13 has no class of its own


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Profile:
    """Problem sizes: the GPU run's, or the CPU smoke test's (the same code at tiny sizes)."""

    name: str
    train_batch: dict          # dataset -> batch size of the correctness step (None: the paper's)
    train_overrides: dict      # training settings changed for every measurement (smoke only)
    attack_images: int
    attack_iterations: int
    ig_steps: int | None       # None: the paper's 100
    eval_images: int           # batched-evaluator images
    eval_single_images: int    # images of the --batch-images 1 run
    eval_iterations: int
    eval_batch_images: tuple   # batch_images values measured for the batched evaluator
    timed_steps: int
    plan_batch_images: dict    # dataset -> batch_images of the plan check (None: the paper's)
    autocast_datasets: tuple
    ig_images: int


GPU = Profile(
    name="gpu", train_batch={"mnist": 8, "gtsrb": 4}, train_overrides={},
    attack_images=8, attack_iterations=10, ig_steps=None,
    eval_images=256, eval_single_images=4, eval_iterations=5, eval_batch_images=(64, 256),
    timed_steps=2, plan_batch_images={"mnist": None, "gtsrb": None, "flower": None},
    autocast_datasets=("mnist", "gtsrb", "flower"), ig_images=4,
)
SMOKE = Profile(
    name="cpu-smoke", train_batch={"mnist": 2, "gtsrb": 1},
    train_overrides={"batch_size": 1, "m": 2, "approx_factor": 1, "pgd_steps": 1},
    attack_images=2, attack_iterations=2, ig_steps=4,
    eval_images=2, eval_single_images=1, eval_iterations=1, eval_batch_images=(2,),
    timed_steps=1, plan_batch_images={"mnist": 2, "gtsrb": 1, "flower": 1},
    autocast_datasets=("mnist",), ig_images=1,
)


# ----------------------------------------------------------------------------- time budget


class SectionTimeout(Exception):
    """A section ran out of its share of the time budget."""


class Budget:
    """The run's deadline and the sections' shares of it; an alarm ends a section that overruns."""

    def __init__(self, total_s: float, shares: dict[str, float]):
        self.start = time.monotonic()
        self.total = total_s
        self.shares = shares
        self.section_deadline = math.inf

    def left(self) -> float:
        return min(self.section_deadline, self.start + self.total) - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise SectionTimeout()

    @contextmanager
    def section(self, name: str, remaining_shares: float):
        """Give `name` its share of what is left (shares of the sections not yet run, renormalised)."""
        run_left = self.start + self.total - time.monotonic()
        share = self.shares.get(name, 0.0) / max(remaining_shares, 1e-9)
        allowed = max(run_left * share, 0.0)
        self.section_deadline = time.monotonic() + allowed
        use_alarm = hasattr(signal, "SIGALRM") and allowed > 0

        def on_alarm(signum, frame):
            raise SectionTimeout()

        if use_alarm:  # a hard stop 10% past the soft deadline, for a call that never checks
            previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, allowed * 1.1 + 2.0)
        try:
            yield allowed
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            self.section_deadline = math.inf


SHARES = {"correctness": 0.30, "plan": 0.08, "evaluator": 0.20, "training": 0.27, "autocast": 0.15}


# ----------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative(a: float, b: float) -> float:
    """|a − b| / max(|b|, tiny): the relative difference of `a` from the reference `b`."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-30)


def per_image_error(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """max |a − b| / max |b| per image (the golden tests' measure)."""
    a = a.detach().double().cpu().flatten(1)
    b = b.detach().double().cpu().flatten(1)
    return ((a - b).abs().amax(1) / b.abs().amax(1).clamp_min(1e-30)).numpy()


def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def shared_dir() -> Path:
    return Path(os.environ.get("ATTRROB_SHARED") or REPO.parent / "shared")


def golden_weights() -> dict | None:
    path = shared_dir() / "data" / "golden" / GOLDEN
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files if not k.startswith("attack/")}


def mnist_model(weights: dict | None, seed: int = 0) -> torch.nn.Module:
    model = models.build("mnist", generator=torch.Generator().manual_seed(seed))
    if weights is not None:
        models.load_tf_weights(model, weights)
    return model.eval()


def real_mnist_test(count: int) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """Real MNIST test images (prepared file, else the raw files), or None."""
    prepared = REPO / "data" / "prepared" / "mnist.npz"
    if prepared.is_file():
        try:
            from attrrob.data.store import load_prepared

            x, y = load_prepared(prepared, "test")
            return x[:count], y[:count], str(prepared.relative_to(REPO))
        except Exception:  # noqa: BLE001 - fall back to the raw files
            pass
    raw = shared_dir() / "data" / "mnist"
    if (raw / "t10k-images-idx3-ubyte.gz").is_file():
        from attrrob.data.idx import read_idx

        images = read_idx(raw / "t10k-images-idx3-ubyte.gz", ndim=3)[:count]
        labels = read_idx(raw / "t10k-labels-idx1-ubyte.gz", ndim=1)[:count]
        x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
        return x, torch.from_numpy(labels.astype(np.int64)), str(raw)
    return None


def random_inputs(dataset: str, n: int, seed: int) -> torch.Tensor:
    """Inputs of the data set's shape and value range (integer pixels where the data set has them)."""
    spec = config.dataset_input(dataset)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, spec["channels"], spec["height"], spec["width"], generator=g) * float(spec["max_value"])
    return torch.floor(x) if spec["integral"] else x


def random_labels(dataset: str, n: int, seed: int) -> torch.Tensor:
    classes = config.dataset_input(dataset)["classes"]
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed + 1))


def build(dataset: str, seed: int = 0) -> torch.nn.Module:
    return models.build(dataset, generator=torch.Generator().manual_seed(seed))


def train_settings(dataset: str, method: str, profile: Profile, batch: int | None = None) -> dict:
    overrides = dict(profile.train_overrides)
    if batch is not None:
        overrides["batch_size"] = batch
    return config.train_settings(dataset, method, overrides=overrides or None)


def attack_settings(dataset: str, profile: Profile, **extra) -> dict:
    overrides = dict(extra)
    if profile.ig_steps is not None:
        overrides["ig_steps"] = profile.ig_steps
    return config.attack_settings(dataset, overrides=overrides or None)


def one_step(method: str, model, optimizer, x, y, settings, seed: int):
    """compute_loss + backward + update, as the training loop does; returns (terms, grad norm)."""
    loss, terms = objectives.compute_loss(method, model, x, y, settings, torch.Generator().manual_seed(seed))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.detach().double().pow(2).sum() for p in model.parameters() if p.grad is not None]
    norm = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    optimizer.step()
    return terms, norm


# ----------------------------------------------------------------------------- 2. correctness


def check_ig(device: torch.device, profile: Profile, budget: Budget, golden: dict | None) -> list[dict]:
    rows = []
    for dataset in ("mnist", "gtsrb", "flower"):
        budget.check()
        model_cpu = mnist_model(golden) if dataset == "mnist" else build(dataset).eval()
        if dataset == "mnist" and golden is not None:
            x = torch.from_numpy(golden["images"][:profile.ig_images]).permute(0, 3, 1, 2).contiguous().float()
        else:
            x = random_inputs(dataset, profile.ig_images, 11)
        with torch.no_grad():
            y = model_cpu(x).argmax(1)
        model_dev = copy.deepcopy(model_cpu).to(device)
        steps = profile.ig_steps or 100
        for smooth in (False, True):
            maps = []
            for model, where in ((model_cpu, torch.device("cpu")), (model_dev, device)):
                xd, yd = x.to(where), y.to(where)
                if smooth:
                    ig = integrated_gradients(logit_fn(model, yd, smooth=True), xd, 0.0, steps)
                    maps.append(saliency_map(ig).cpu())
                else:
                    maps.append(saliency_attacks.real_saliency(model, xd, yd, steps).cpu())
            err = per_image_error(maps[1], maps[0])
            rows.append({"model": dataset, "network": "smooth (softplus)" if smooth else "real (ReLU)",
                         "images": len(x), "ig_steps": steps, "max_rel_error": float(err.max()),
                         "median_rel_error": float(np.median(err)), "tolerance": SALIENCY_RTOL,
                         "pass": bool(err.max() <= SALIENCY_RTOL),
                         "weights": "golden RAR MNIST" if dataset == "mnist" and golden is not None else "random"})
    return rows


def check_train_steps(device: torch.device, profile: Profile, budget: Budget) -> list[dict]:
    rows = []
    for dataset in ("mnist", "gtsrb"):
        for method in config.METHODS:
            budget.check()
            s = train_settings(dataset, method, profile, profile.train_batch[dataset])
            x = random_inputs(dataset, s["batch_size"], 21)
            y = random_labels(dataset, s["batch_size"], 21)
            results = []
            for where in (torch.device("cpu"), device):
                model = build(dataset, 3).to(where).train()
                opt = training.make_optimizer(model, s)
                t0 = time.perf_counter()
                terms, norm = one_step(method, model, opt, x.to(where), y.to(where), s, 5)
                sync(where)
                results.append((terms, norm, time.perf_counter() - t0))
            (cpu_terms, cpu_norm, cpu_t), (dev_terms, dev_norm, dev_t) = results
            finite = all(math.isfinite(v) for v in dev_terms.values())
            rel = relative(dev_terms["total"], cpu_terms["total"])
            row = {"dataset": dataset, "method": method, "batch": s["batch_size"], "pgd_steps": s["pgd_steps"],
                   "m": s["m"], "loss_cpu": cpu_terms["total"], "loss_device": dev_terms["total"],
                   "rel_diff": rel, "grad_norm_rel_diff": relative(dev_norm, cpu_norm), "finite": finite,
                   "terms_rel_diff": {k: relative(dev_terms[k], cpu_terms[k]) for k in cpu_terms},
                   "cpu_s": round(cpu_t, 3), "device_s": round(dev_t, 3),
                   "pass": bool(finite and rel <= LOSS_RTOL)}
            if not row["pass"] and objectives.get_objective(method).inner is not None:
                row["adversarial_pixels_differing"] = _adversarial_difference(dataset, method, s, x, y, device)
            rows.append(row)
    return rows


def _adversarial_difference(dataset, method, s, x, y, device) -> float:
    """Fraction of pixels where the inner PGD's x′ differs between CPU and device (diagnosis of a
    loss difference: sign steps amplify a rounding difference of a near-zero gradient)."""
    found = []
    for where in (torch.device("cpu"), device):
        model = build(dataset, 3).to(where).train()
        found.append(objectives.adversarial_example(method, model, x.to(where), y.to(where), s,
                                                    torch.Generator().manual_seed(5)).cpu())
    return float((found[0] != found[1]).float().mean())


def check_topk_attack(device: torch.device, profile: Profile, budget: Budget, golden: dict | None) -> dict:
    budget.check()
    model_cpu = mnist_model(golden)
    if golden is not None:
        x = torch.from_numpy(golden["images"][:profile.attack_images]).permute(0, 3, 1, 2).contiguous().float()
        source = "golden RAR MNIST weights and test images"
    else:
        x = random_inputs("mnist", profile.attack_images, 31)
        source = "random weights, random 28x28 inputs"
    with torch.no_grad():
        y = model_cpu(x).argmax(1)
    settings = attack_settings("mnist", profile, iterations=profile.attack_iterations)
    indices = list(range(len(x)))
    results = []
    for model, where in ((model_cpu, torch.device("cpu")), (copy.deepcopy(model_cpu).to(device), device)):
        t0 = time.perf_counter()
        r = saliency_attacks.attack_batch(model, x.to(where), y.to(where), indices, "topk", settings,
                                          lo=0.0, hi=1.0, integral=False, seed=0)
        sync(where)
        results.append((r, time.perf_counter() - t0))
    (a, t_cpu), (b, t_dev) = results
    images = []
    for i in indices:
        same_step = int(a.step[i]) == int(b.step[i]) and int(a.restart[i]) == int(b.restart[i])
        x_diff = float((a.x_kept[i].cpu() - b.x_kept[i].cpu()).abs().max())
        tau_diff = abs(float(a.kendall_tau[i]) - float(b.kendall_tau[i]))
        if same_step and x_diff <= 1e-6:
            verdict = "same kept iterate"
        elif tau_diff <= TAU_ATOL:
            verdict = "tau within 1e-3"
        else:
            verdict = "DIFFERENT"
        images.append({"image": i, "step_cpu": int(a.step[i]), "step_device": int(b.step[i]),
                       "tau_cpu": float(a.kendall_tau[i]), "tau_device": float(b.kendall_tau[i]),
                       "tau_diff": tau_diff, "x_kept_max_diff": x_diff,
                       "zero_direction_cpu": bool(a.zero_direction[i]), "zero_direction_device": bool(b.zero_direction[i]),
                       "verdict": verdict})
    return {"source": source, "iterations": settings["iterations"], "k_attack": settings["k_attack"],
            "ig_steps": settings["ig_steps"], "eps": settings["eps"], "cpu_s": round(t_cpu, 2),
            "device_s": round(t_dev, 2), "images": images,
            "pass": all(r["verdict"] != "DIFFERENT" for r in images)}


_LOCK_CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {src!r})
    from attrrob import devices
    fake = {fake!r}
    mode, wait_s = sys.argv[1], float(sys.argv[2])
    t0 = time.monotonic()
    try:
        if fake:  # cpu-smoke: the lock logic of select_device('auto') on a stand-in GPU
            index, lock = devices.acquire_gpu([devices.GpuInfo(0, fake, 1)], wait_s)
            where = 'gpu%d' % index
        else:
            device, lock = devices.select_device('auto', wait_s=wait_s)
            import torch
            where = str(device) + ' ' + (devices._physical_id(device.index) if device.type == 'cuda' else '')
        print('TOOK %s after %.2f s' % (where, time.monotonic() - t0), flush=True)
        if mode == 'hold':
            sys.stdin.readline()
    except Exception as exc:
        print('REFUSED after %.2f s: %s' % (time.monotonic() - t0, str(exc).splitlines()[0]), flush=True)
""")


def check_lock(device: torch.device, profile: Profile) -> dict:
    """A first process takes `--device auto`'s lock; a second one waits (one GPU: refused after its
    wait limit, then served once the first lets go) or takes another GPU (several GPUs)."""
    fake = "" if device.type == "cuda" else "smoke-stand-in-gpu"
    code = _LOCK_CHILD.format(src=str(REPO / "src"), fake=fake)
    with tempfile.TemporaryDirectory(prefix="attrrob-lockcheck-") as lock_dir:
        env = dict(os.environ, **{devices.LOCK_DIR_ENV: lock_dir})
        env.pop(devices.WAIT_ENV, None)

        def start(mode, wait):
            return subprocess.Popen([sys.executable, "-c", code, mode, str(wait)], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        first = start("hold", 0)
        first_line = first.stdout.readline().strip()
        second = start("once", 3)
        second_out, second_err = second.communicate(timeout=120)
        waiter = start("once", 60)
        # Let go of the first lock only once the waiter says it waits (or has exited: then stderr ends).
        waiter_said = waiter.stderr.readline()
        first.stdin.write("\n")
        first.stdin.flush()
        first.communicate(timeout=60)
        waiter_out, waiter_err = waiter.communicate(timeout=120)
        waiter_err = waiter_said + waiter_err
    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    second_line, waiter_line = second_out.strip(), waiter_out.strip()
    if gpus == 1:
        ok = (first_line.startswith("TOOK") and second_line.startswith("REFUSED") and waiter_line.startswith("TOOK")
              and "waiting" in waiter_err)
        expect = "one GPU: the second process waits (refused after its 3 s limit) and a waiting one is served when the first exits"
    else:
        ok = first_line.startswith("TOOK") and second_line.startswith("TOOK") and first_line.split()[1:3] != second_line.split()[1:3]
        expect = f"{gpus} GPUs: the second process takes another GPU"
    return {"gpus": gpus, "stand_in": bool(fake), "first": first_line, "second": second_line,
            "waiter": waiter_line, "waiter_stderr": waiter_err.strip().splitlines()[:1], "expected": expect,
            "pass": bool(ok)}


def section_correctness(device, profile, budget, golden, report) -> None:
    out = report["correctness"]
    for name, fn in (("ig", lambda: check_ig(device, profile, budget, golden)),
                     ("train_step", lambda: check_train_steps(device, profile, budget)),
                     ("topk_attack", lambda: check_topk_attack(device, profile, budget, golden)),
                     ("device_auto_lock", lambda: check_lock(device, profile))):
        try:
            out[name] = fn()
        except SectionTimeout:
            out[name] = {"cut_short": True}
            raise
        except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others
            out[name] = {"error": _error(exc)}


# ----------------------------------------------------------------------------- 3. memory plan


def section_plan(device, profile, budget, report) -> None:
    rows = report["plan"]
    for dataset in ("mnist", "gtsrb", "flower"):
        budget.check()
        bi = profile.plan_batch_images[dataset]
        s = attack_settings(dataset, profile, iterations=1, **({"batch_images": bi} if bi else {}))
        model = build(dataset).to(device).eval()
        x = random_inputs(dataset, 1, 41).to(device)
        row = {"dataset": dataset, "ig_steps": s["ig_steps"], "batch_images_setting": s["batch_images"]}
        try:
            if device.type == "cuda":
                free, total = torch.cuda.mem_get_info(device)
                row.update(free_gib=round(free / 2**30, 2), total_gib=round(total / 2**30, 2))
            plan = evaluation.plan_batches(model, x, s["ig_steps"], s["batch_images"], int(s.get("ig_max_batch") or 0))
            row.update(budget_gib=round(plan.budget_bytes / 2**30, 3), row_kib=round(plan.row_bytes / 1024, 1),
                       max_rows=plan.max_rows, batch_images=plan.batch_images,
                       whole_ig_per_pass=plan.max_rows >= plan.batch_images * s["ig_steps"])
            n = plan.batch_images
            xb = random_inputs(dataset, n, 42).to(device)
            with torch.no_grad():
                yb = model(xb).argmax(1)
            reset_peak(device)
            base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            t0 = time.perf_counter()
            saliency_attacks.attack_batch(model, xb, yb, list(range(n)), "topk", s, lo=0.0,
                                          hi=float(config.dataset_input(dataset)["max_value"]),
                                          integral=bool(config.dataset_input(dataset)["integral"]), seed=0,
                                          max_rows=plan.max_rows)
            sync(device)
            row["iteration_s"] = round(time.perf_counter() - t0, 3)
            if device.type == "cuda":
                used = torch.cuda.max_memory_allocated(device) - base
                row.update(peak_gib=round(used / 2**30, 3), peak_of_budget=round(used / plan.budget_bytes, 3))
            row["ok"] = True
        except OutOfMemory as exc:
            row.update(ok=False, error="out of memory with the chosen plan: " + str(exc).splitlines()[0][:160])
        except SectionTimeout:
            raise
        except Exception as exc:  # noqa: BLE001
            row.update(ok=False, error=_error(exc))
        rows.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- 4. evaluator speed


def _train_natural(device, x, y, steps: int) -> torch.nn.Module:
    model = build("mnist", 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (50,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx].to(device)), y[idx].to(device)).backward()
        opt.step()
    return model.eval()


def section_evaluator(device, profile, budget, golden, report) -> None:
    out = report["evaluator"]
    need = max(profile.eval_images, profile.eval_single_images)
    real = real_mnist_test(max(need * 2, 64))
    if real is not None:
        x, y, where = real
        if golden is not None:
            model, out["source"] = mnist_model(golden).to(device), f"real MNIST test images ({where}), golden RAR natural weights"
        else:
            model = _train_natural(device, x, y, 300 if profile.name == "gpu" else 5)
            out["source"] = f"real MNIST test images ({where}), a natural CNN trained here for a few steps"
        with torch.no_grad():
            keep = (evaluation._predict(model, x.to(device)).cpu() == y).nonzero().flatten()
        x, y = x[keep], y[keep]
    else:
        model = mnist_model(None).to(device)
        x = random_inputs("mnist", need, 51)
        with torch.no_grad():
            y = model(x.to(device)).argmax(1).cpu()  # every image "correctly classified": all are attacked
        out["source"] = "random weights and random 28x28 inputs (no MNIST found)"
    settings = attack_settings("mnist", profile, iterations=profile.eval_iterations)
    out["settings"] = {k: settings[k] for k in ("eps", "step_size", "k_attack", "ig_steps", "zero_direction")}
    out["iterations_timed"] = profile.eval_iterations
    runs = out["runs"]
    modes = [(f"batched (batch_images={b})", b, profile.eval_images) for b in profile.eval_batch_images]
    modes.insert(1, ("per-image (--batch-images 1)", 1, profile.eval_single_images))
    # warm-up: kernels, allocator, cuDNN autotuning
    evaluation.evaluate_attack(model, x[:2], y[:2], "topk", dict(settings, iterations=1, num_examples=2),
                               dataset="mnist", progress=False)
    for label, batch_images, n in modes:
        budget.check()
        n = min(n, len(x))
        s = dict(settings, num_examples=n)
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        outcome = evaluation.evaluate_attack(model, x[:n], y[:n], "topk", s, dataset="mnist", batch_images=batch_images,
                                             progress=False)
        sync(device)
        wall = time.perf_counter() - t0
        attacked = outcome.summary["counts"]["n_attacked"]
        per_image_run = wall / max(attacked, 1) * PROTOCOL_ITERATIONS / profile.eval_iterations
        runs.append({"mode": label, "images": attacked, "wall_s": round(wall, 3),
                     "images_per_s_at_100_iterations": 1.0 / per_image_run,
                     "s_per_image_run": per_image_run,
                     "protocol_hours": per_image_run * PROTOCOL_IMAGES / 3600,
                     "batch_images_used": outcome.summary["settings"]["batch_images_used"],
                     "ig_rows_per_call": outcome.summary["settings"]["ig_rows_per_call"],
                     "memory_budget_gib": round(outcome.summary["settings"]["memory_budget_bytes"] / 2**30, 3),
                     "peak_mib": peak_mib(device), "load_avg": load_avg()})
    batched = [r for r in runs if r["mode"].startswith("batched")]
    single = [r for r in runs if r["mode"].startswith("per-image")]
    if batched and single:
        best = max(batched, key=lambda r: r["images_per_s_at_100_iterations"])
        out["best_batched"] = best["mode"]
        out["ratio_batched_vs_per_image"] = best["images_per_s_at_100_iterations"] / single[0]["images_per_s_at_100_iterations"]
        out["projected_protocol_hours"] = best["protocol_hours"]


# ----------------------------------------------------------------------------- 5. training speed


def grid_steps() -> dict[tuple[str, str], int]:
    """Steps of each (dataset, method) of the paper grid as config/config.yaml runs it."""
    import yaml

    path = REPO / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else {}
    datasets = cfg.get("datasets") or list(TRAIN_DATASETS)
    methods = cfg.get("methods") or list(config.METHODS)
    forced = cfg.get("train_steps")
    return {(d, m): int(forced) if forced else int(config.train_settings(d, m)["steps"])
            for d in datasets for m in methods}


def schedule_hours(durations: list[float], gpus: int) -> float:
    """Makespan of independent jobs on `gpus` GPUs, longest first onto the least loaded GPU (LPT;
    within 4/3 of the optimum, and what a scheduler handing out free GPUs does at best)."""
    loads = [0.0] * gpus
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads) / 3600 if durations else 0.0


def section_training(device, profile, budget, report) -> None:
    out = report["training"]
    rows = out["rows"]
    for dataset in TRAIN_DATASETS:
        for method in config.METHODS:
            budget.check()
            s = train_settings(dataset, method, profile)
            x = random_inputs(dataset, s["batch_size"], 61).to(device)
            y = random_labels(dataset, s["batch_size"], 61).to(device)
            model = build(dataset, 4).to(device).train()
            opt = training.make_optimizer(model, s)
            row = {"dataset": dataset, "method": method, "batch": s["batch_size"], "pgd_steps": s["pgd_steps"],
                   "m": s["m"]}
            try:
                reset_peak(device)
                one_step(method, model, opt, x, y, s, 0)  # warm-up
                sync(device)
                times = []
                for i in range(profile.timed_steps):
                    t0 = time.perf_counter()
                    one_step(method, model, opt, x, y, s, i + 1)
                    sync(device)
                    times.append(time.perf_counter() - t0)
                step = sorted(times)[len(times) // 2]
                row.update(step_s=step, examples_per_s=s["batch_size"] / step, peak_mib=peak_mib(device),
                           load_avg=load_avg())
            except SectionTimeout:
                raise
            except OutOfMemory as exc:
                row["error"] = "out of memory: " + str(exc).splitlines()[0][:160]
            except Exception as exc:  # noqa: BLE001 - the other data sets and methods still run
                row["error"] = _error(exc)
            rows.append(row)
            del model, opt
            if device.type == "cuda":
                torch.cuda.empty_cache()
    steps = grid_steps()
    measured = {(r["dataset"], r["method"]): r["step_s"] for r in rows if "step_s" in r}
    jobs = {k: n * measured[k] for k, n in steps.items() if k in measured}
    missing = sorted(f"{d}/{m}" for d, m in steps if (d, m) not in measured)
    out["grid"] = {"jobs": len(steps), "measured_jobs": len(jobs), "missing": missing,
                   "hours_per_job": {f"{d}/{m}": t / 3600 for (d, m), t in jobs.items()},
                   "hours_one_gpu": sum(jobs.values()) / 3600,
                   "hours_two_gpus": schedule_hours(list(jobs.values()), 2),
                   "complete": not missing}


# ----------------------------------------------------------------------------- 6. autocast / TF32


def section_autocast(device, profile, budget, report) -> None:
    rows = report["autocast"]["rows"]
    fast = "tf32" if device.type == "cuda" else "bf16"
    variants = [("fp32 (ieee)", "ieee", False), (f"{fast} matmul/conv", fast, False), ("bf16 autocast", "ieee", True)]
    for dataset in profile.autocast_datasets:
        for method in config.METHODS:
            budget.check()
            s = train_settings(dataset, method, profile, profile.train_batch.get(dataset))
            x = random_inputs(dataset, s["batch_size"], 71).to(device)
            y = random_labels(dataset, s["batch_size"], 71).to(device)
            row = {"dataset": dataset, "method": method, "batch": s["batch_size"]}
            reference = None
            for label, precision, autocast in variants:
                model = build(dataset, 6).to(device).train()
                opt = training.make_optimizer(model, s)
                cast = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
                try:
                    with devices.float32_precision(device.type, precision), cast:
                        sync(device)
                        t0 = time.perf_counter()
                        terms, _ = one_step(method, model, opt, x, y, s, 9)
                        sync(device)
                    elapsed = time.perf_counter() - t0
                    if reference is None:
                        reference = (terms["total"], elapsed)
                    row[label] = {"loss": terms["total"], "rel_diff": relative(terms["total"], reference[0]),
                                  "time_ratio": elapsed / reference[1]}
                except SectionTimeout:
                    raise
                except Exception as exc:  # noqa: BLE001 - e.g. an op without a bf16 kernel
                    row[label] = {"error": _error(exc)}
            rows.append(row)
    report["autocast"]["tolerance"] = LOSS_RTOL
    report["autocast"]["note"] = ("one step from the same weights, batch and PGD start; the first step's time "
                                  "includes kernel selection for each variant alike")


# ----------------------------------------------------------------------------- 1. environment


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return getattr(mod, "__version__", "present")


def environment(device: torch.device, profile: Profile, golden, args) -> dict:
    env = {
        "mode": profile.name, "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(), "torch": torch.__version__, "torch_pinned": _pinned_torch(),
        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": _version("numpy"), "scipy": _version("scipy"), "yaml": _version("yaml"),
        "tqdm": "stub (not installed)" if getattr(sys.modules.get("tqdm"), "__attrrob_stub__", False) else _version("tqdm"),
        "device": str(device), "cpu_count": os.cpu_count(), "cpu_threads": torch.get_num_threads(),
        "load_avg": load_avg(), "budget_s": args.budget_s,
        "golden_weights": golden is not None, "mnist_found": real_mnist_test(1) is not None,
        "float32_precision": devices.get_float32_precision(device.type),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            env["driver"] = None
    return env


def _pinned_torch() -> str | None:
    try:
        text = (REPO / "pyproject.toml").read_text()
    except OSError:
        return None
    match = re.search(r'"torch==([^"]+)"', text)
    return match.group(1) if match else None


def _error(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" ({Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}{at}"


# ----------------------------------------------------------------------------- report


def _fmt(value, digits=3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 and abs(value) < 1e5 else f"{value:.2e}"
    return str(value)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _state(value) -> str:
    """A check that did not complete, in words."""
    if isinstance(value, dict) and value.get("cut_short"):
        return "not completed: cut short by its time budget"
    if isinstance(value, dict) and "error" in value:
        return f"not completed: {value['error']}"
    return f"not completed ({value})"


def render(report: dict) -> str:
    env = report["environment"]
    smoke = env["mode"] == "cpu-smoke"
    title = ("# attrrob GPU check — cpu-smoke (NOT a GPU result)" if smoke
             else f"# attrrob GPU check — {env.get('gpu_name', env['device'])}")
    lines = [title, ""]
    if smoke:
        lines += ["This is the **cpu-smoke** run: the check's code at tiny sizes on the CPU, comparing the CPU "
                  "with itself. It shows that the check runs; none of its numbers is a GPU measurement.", ""]
    lines += [f"{env['date_utc']} UTC · torch {env['torch']} (project pins {env['torch_pinned']}) · CUDA "
              f"{env['cuda_runtime']} · cuDNN {env['cudnn']} · Python {env['python']} · numpy {env['numpy']} · "
              f"scipy {env['scipy']} · pyyaml {env['yaml']} · tqdm {env['tqdm']}",
              f"device {env['device']}" + (f" ({env.get('gpu_name')}, {env.get('gpu_memory_gib')} GiB, capability "
                                            f"{env.get('capability')}, driver {env.get('driver')}, {env.get('gpu_count')} "
                                            f"GPU(s) visible)" if "gpu_name" in env else "")
              + f" · {env['cpu_count']} CPUs, {env['cpu_threads']} torch threads, load average {env['load_avg']} · "
                f"float32 precision {env['float32_precision']['values']} · golden weights "
                f"{_fmt(env['golden_weights'])} · MNIST files {_fmt(env['mnist_found'])}",
              f"time budget {env['budget_s']} s; used {report.get('elapsed_s', '–')} s. Sections: "
              + ", ".join(f"{k} {v}" for k, v in report["sections"].items()), ""]
    c = report["correctness"]
    lines += ["## CUDA correctness (device vs CPU, same weights and inputs)", ""]
    if isinstance(c.get("ig"), list):
        lines += [f"IG saliency maps (per image, max error / max value; tolerance {SALIENCY_RTOL:g}):", ""]
        lines += _table(["model", "network", "weights", "images", "IG steps", "max rel err", "median", "pass"],
                        [[r["model"], r["network"], r["weights"], r["images"], r["ig_steps"], r["max_rel_error"],
                          r["median_rel_error"], r["pass"]] for r in c["ig"]]) + [""]
    elif "ig" in c:
        lines += [f"IG: {_state(c['ig'])}", ""]
    if isinstance(c.get("train_step"), list):
        lines += [f"One training step per method (loss before the update; tolerance {LOSS_RTOL:g} relative):", ""]
        lines += _table(["data", "method", "batch", "PGD", "m", "loss CPU", "loss device", "rel diff", "grad-norm rel",
                         "x' px differ", "finite", "pass"],
                        [[r["dataset"], r["method"], r["batch"], r["pgd_steps"], r["m"], r["loss_cpu"], r["loss_device"],
                          r["rel_diff"], r["grad_norm_rel_diff"], r.get("adversarial_pixels_differing"), r["finite"],
                          r["pass"]] for r in c["train_step"]]) + [""]
    elif "train_step" in c:
        lines += [f"Training step: {_state(c['train_step'])}", ""]
    a = c.get("topk_attack")
    if isinstance(a, dict) and "images" in a:
        lines += [f"Top-k attack ({a['source']}; k={a['k_attack']}, ε={a['eps']}, {a['ig_steps']}-point IG, "
                  f"{a['iterations']} iterations; CPU {a['cpu_s']} s, device {a['device_s']} s):", ""]
        lines += _table(["image", "kept step CPU", "device", "τ CPU", "τ device", "|Δτ|", "max |Δx kept|",
                         "zero dir CPU/dev", "verdict"],
                        [[r["image"], r["step_cpu"], r["step_device"], r["tau_cpu"], r["tau_device"], r["tau_diff"],
                          r["x_kept_max_diff"], f"{int(r['zero_direction_cpu'])}/{int(r['zero_direction_device'])}",
                          r["verdict"]] for r in a["images"]]) + [""]
    elif a is not None:
        lines += [f"Top-k attack: {_state(a)}", ""]
    lk = c.get("device_auto_lock")
    if isinstance(lk, dict) and "first" in lk:
        lines += [f"`--device auto` lock ({'stand-in GPU, ' if lk['stand_in'] else ''}{lk['expected']}): first "
                  f"`{lk['first']}`; second `{lk['second']}`; waiting one `{lk['waiter']}` — pass {_fmt(lk['pass'])}", ""]
    elif lk is not None:
        lines += [f"`--device auto` lock: {_state(lk)}", ""]
    if report["plan"]:
        lines += ["## Evaluator memory budget and batch plan (one attack iteration run with the plan)", ""]
        lines += _table(["data", "IG steps", "batch setting", "free GiB", "budget GiB", "row KiB", "max rows",
                         "images/pass", "whole IG per pass", "peak GiB", "peak/budget", "s/iteration", "ok"],
                        [[r["dataset"], r["ig_steps"], r["batch_images_setting"], r.get("free_gib"), r.get("budget_gib"),
                          r.get("row_kib"), r.get("max_rows"), r.get("batch_images"), r.get("whole_ig_per_pass"),
                          r.get("peak_gib"), r.get("peak_of_budget"), r.get("iteration_s"),
                          r["ok"] if "error" not in r else r["error"]] for r in report["plan"]]) + [""]
    e = report["evaluator"]
    if e.get("runs"):
        lines += [f"## Evaluator speed (MNIST top-k; {e.get('source')}; {e.get('iterations_timed')} iterations "
                  "timed, scaled to the protocol's 100)", ""]
        lines += _table(["mode", "images", "wall s", "images/s (100 it.)", "s/image/run", "protocol h (10k×100)",
                         "images/pass", "IG rows/call", "budget GiB", "peak MiB", "load"],
                        [[r["mode"], r["images"], r["wall_s"], r["images_per_s_at_100_iterations"], r["s_per_image_run"],
                          r["protocol_hours"], r["batch_images_used"], r["ig_rows_per_call"], r["memory_budget_gib"],
                          r["peak_mib"], r["load_avg"]] for r in e["runs"]]) + [""]
        if "ratio_batched_vs_per_image" in e:
            lines += [f"Batched ({e['best_batched']}) vs per-image: **{e['ratio_batched_vs_per_image']:.1f}×** "
                      f"(target ≥ 10×); projected full MNIST protocol: **{e['projected_protocol_hours']:.2f} h** "
                      "(target < 1 h on one H100; all 10,000 images counted as attacked).", ""]
    t = report["training"]
    if t.get("rows"):
        lines += ["## Training speed (paper settings, random data of the right shapes)", ""]
        lines += _table(["data", "method", "batch", "PGD", "m", "s/step", "examples/s", "peak MiB", "load"],
                        [[r["dataset"], r["method"], r["batch"], r["pgd_steps"], r["m"], r.get("step_s"),
                          r.get("examples_per_s"), r.get("peak_mib"), r.get("load_avg", r.get("error"))]
                         for r in t["rows"]]) + [""]
        g = t.get("grid")
        if g:
            lines += [f"Paper grid ({g['jobs']} jobs at config/config.yaml's steps; {g['measured_jobs']} measured"
                      + (f", missing {', '.join(g['missing'])}" if g["missing"] else "") + "): "
                      f"**{g['hours_one_gpu']:.1f} h on one GPU, {g['hours_two_gpus']:.1f} h on two** "
                      "(longest job first onto the freer GPU).", ""]
    ac = report["autocast"]
    if ac.get("rows"):
        labels = [k for k in ac["rows"][0] if isinstance(ac["rows"][0][k], dict)]
        lines += [f"## Reduced precision: change of the one-step loss against IEEE fp32 (tolerance {LOSS_RTOL:g}; "
                  "fp32 stays the default)", ""]
        lines += _table(["data", "method"] + [f"{lab} rel diff" for lab in labels[1:]] + [f"{lab} time ×" for lab in labels[1:]],
                        [[r["dataset"], r["method"]]
                         + [r[lab].get("rel_diff", r[lab].get("error")) for lab in labels[1:]]
                         + [r[lab].get("time_ratio") for lab in labels[1:]] for r in ac["rows"]]) + [""]
    verdict = report.get("verdict")
    if verdict:
        lines += ["## Verdict", "", verdict, ""]
    return "\n".join(lines)


def verdict(report: dict) -> tuple[str, bool]:
    c = report["correctness"]
    fails, notes = [], []
    for name in ("ig", "train_step"):
        v = c.get(name)
        if isinstance(v, list):
            fails += [f"{name}: {r.get('model', r.get('dataset'))} {r.get('network', r.get('method'))}" for r in v if not r["pass"]]
        else:
            notes.append(f"{name} not completed ({v})")
    for name in ("topk_attack", "device_auto_lock"):
        v = c.get(name)
        if isinstance(v, dict) and "pass" in v:
            if not v["pass"]:
                fails.append(name)
        else:
            notes.append(f"{name} not completed ({v})")
    if isinstance(c.get("topk_attack"), dict) and "images" in c["topk_attack"]:
        kinds = sorted({r["verdict"] for r in c["topk_attack"]["images"]})
        notes.append("top-k attack: " + ", ".join(kinds))
    errors = [f"plan {r['dataset']}: {r['error']}" for r in report["plan"] if "error" in r]
    cut = [k for k, v in report["sections"].items() if v != "done"]
    if fails:
        text = "FAILED: " + "; ".join(fails)
    elif notes and any("not completed" in n for n in notes):
        text = "INCOMPLETE: no check failed, but not every check ran"
    else:
        text = "all correctness checks passed"
    if notes:
        text += ". " + "; ".join(notes)
    if errors:
        text += ". " + "; ".join(errors)
    if cut:
        text += ". Not done or cut short: " + ", ".join(f"{k} ({report['sections'][k]})" for k in cut)
    if report["environment"]["mode"] == "cpu-smoke":
        text += ". (cpu-smoke: CPU compared with itself; not a GPU result.)"
    complete = not any("not completed" in n for n in notes)
    return text + ".", not fails and not errors and complete


def output_paths(out_dir: Path, env: dict) -> tuple[Path, Path]:
    date = env["date_utc"][:10]
    name = "cpu-smoke" if env["mode"] == "cpu-smoke" else re.sub(r"[^A-Za-z0-9]+", "-", env.get("gpu_name", env["device"])).strip("-")
    stem = f"gpu_check-{date}-{name}"
    return out_dir / f"{stem}.md", out_dir / f"{stem}.json"


def write_outputs(report: dict, out_dir: Path) -> tuple[Path, Path]:
    from attrrob.outputs import write_text

    report["verdict"], report["ok"] = verdict(report)
    md, js = output_paths(out_dir, report["environment"])
    write_text(js, json.dumps(report, indent=1, default=str, allow_nan=True) + "\n")
    write_text(md, render(report) + "\n")
    return md, js


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="the same code at tiny sizes on the CPU (CI); not a GPU result")
    p.add_argument("--device", default=None, help="cuda (default), cuda:i; the smoke run uses cpu")
    p.add_argument("--budget-s", type=float, default=None, help="whole-run time limit (default 480; smoke 60)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where the report goes (default docs/gpu; the smoke run: <tempdir>/attrrob-gpu-check, "
                        "so that docs/gpu holds GPU results only)")
    p.add_argument("--sections", default="correctness,plan,evaluator,training,autocast",
                   help="comma-separated subset, in this order")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    profile = SMOKE if args.cpu_smoke else GPU
    args.budget_s = args.budget_s or (60.0 if args.cpu_smoke else 480.0)
    if args.out_dir is None:
        args.out_dir = Path(tempfile.gettempdir()) / "attrrob-gpu-check" if args.cpu_smoke else REPO / "docs" / "gpu"
    if args.threads or args.cpu_smoke:
        # One thread in the smoke run: on a CPU shared with other jobs two threads stall each other
        # (measured 10x slower at load 20 on 2 cores, benchmarks/bench_cpu_kernels.py section 4).
        torch.set_num_threads(args.threads or 1)
    if args.cpu_smoke:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            print("gpu_check: CUDA is not available here (torch " + torch.__version__ + "); run with --cpu-smoke "
                  "to test the check itself on a CPU", file=sys.stderr)
            return 2
        device = torch.device(args.device or "cuda")
        if device.type != "cuda":
            p.error(f"--device {args.device}: the GPU run needs cuda or cuda:i (use --cpu-smoke for the CPU)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    devices.apply_precision_policy(device)  # IEEE float32 unless ATTRROB_FLOAT32_PRECISION says otherwise
    if device.type == "cuda":
        devices.apply_precision_policy(torch.device("cpu"))
    torch.manual_seed(0)
    golden = golden_weights()
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SHARES)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SHARES)}")
    budget = Budget(args.budget_s, {k: v for k, v in SHARES.items() if k in wanted})
    report = {"environment": environment(device, profile, golden, args), "sections": {k: "not run" for k in wanted},
              "correctness": {}, "plan": [], "evaluator": {"runs": []}, "training": {"rows": []},
              "autocast": {"rows": []}}
    steps = {"correctness": lambda: section_correctness(device, profile, budget, golden, report),
             "plan": lambda: section_plan(device, profile, budget, report),
             "evaluator": lambda: section_evaluator(device, profile, budget, golden, report),
             "training": lambda: section_training(device, profile, budget, report),
             "autocast": lambda: section_autocast(device, profile, budget, report)}
    md = js = None
    for i, name in enumerate(wanted):
        remaining = sum(SHARES[k] for k in wanted[i:])
        t0, c0 = time.monotonic(), time.process_time()
        try:
            with budget.section(name, remaining) as allowed:
                print(f"[gpu_check] {name}: up to {allowed:.0f} s", file=sys.stderr, flush=True)
                steps[name]()
            report["sections"][name] = "done"
        except SectionTimeout:
            report["sections"][name] = "cut short by its time budget"
        except Exception as exc:  # noqa: BLE001 - the report must still be written
            report["sections"][name] = f"error: {_error(exc)}"
        report["section_seconds"] = {**report.get("section_seconds", {}), name: round(time.monotonic() - t0, 1)}
        report["section_cpu_seconds"] = {**report.get("section_cpu_seconds", {}), name: round(time.process_time() - c0, 1)}
        report["elapsed_s"] = round(time.monotonic() - budget.start, 1)
        md, js = write_outputs(report, args.out_dir)
    if md is None:
        md, js = write_outputs(report, args.out_dir)
    print(md.read_text())
    print(f"[gpu_check] wrote {md} and {js}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
