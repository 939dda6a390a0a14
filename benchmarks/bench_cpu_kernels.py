"""CPU kernels of the attack and of training, side by side in one process (GitHub issue 13 §2).

Measures, with the 1-minute load average printed beside every figure:
1. softplus alone on one conv-1 activation of an evaluator pass (167 rows × 32×28×28):
   `F.softplus` against `attrrob.activations.cpu_softplus` (log1p-free forward, custom autograd
   Function with double backward), forward and forward + double backward;
2. one attack iteration of the evaluator's CPU pass on the MNIST CNN (surrogate objective
   gradient through the 100-point IG, plus the real network's saliency of the new iterate), and
   one training double-backward pass (ig_norm's outer IG shape), for: baseline (F.softplus, IEEE
   float32), the log1p-free softplus, oneDNN float32 precision bf16 for conv/matmul, and both;
3. the spec's tolerances under each variant: logits and saliency maps against the golden outputs
   of RAR's TensorFlow code (logits ≤ 1e-5, ReLU saliency ≤ 1e-4, softplus saliency ≤ 2e-3, relative
   to the largest value; ../shared/data/golden/README.md), and a whole small top-k evaluation
   (8 images × `--iterations`) compared with the baseline's;
4. the thread policy: the attack iteration at 1 and 2 threads, on the machine as it is and with
   `--burners` extra busy processes of the same niceness (oversubscribed).
Variants alternate within each repeat, so load from other jobs hits all alike; ratios are of medians.

Run:  nice -n 10 python benchmarks/bench_cpu_kernels.py [--repeats 7] [--iterations 10] [--burners 2]
Uses the golden MNIST weights and images when ../shared/data/golden (or $ATTRROB_SHARED) has them,
else random weights and images (then section 3 is skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attrrob import activations, devices, evaluation, models
from attrrob.attacks.saliency import (SaliencyObjective, input_gradients_only, real_saliency,
                                      surrogate_objective_gradient)
from attrrob.ig import cross_entropy_fn, integrated_gradients, logit_fn, saliency_map
from attrrob import metrics

REPO = Path(__file__).resolve().parents[1]
GOLDEN = "rar_mnist_natural.npz"


def load() -> float:
    return os.getloadavg()[0]


def golden_file() -> Path:
    shared = Path(os.environ.get("ATTRROB_SHARED") or REPO.parent / "shared")
    return shared / "data" / "golden" / GOLDEN


@contextlib.contextmanager
def variant(softplus: str, precision: str):
    """Select the surrogate's softplus ("torch" or "log1p-free") and oneDNN float32 precision."""
    saved = activations.softplus
    activations.softplus = F.softplus if softplus == "torch" else activations.cpu_softplus
    try:
        with devices.float32_precision("cpu", precision):
            yield
    finally:
        activations.softplus = saved


VARIANTS = {
    "baseline (F.softplus, ieee)": ("torch", "ieee"),
    "log1p-free softplus": ("log1p-free", "ieee"),
    "oneDNN bf16 precision": ("torch", "bf16"),
    "both": ("log1p-free", "bf16"),
}


def model_and_images():
    path = golden_file()
    torch.manual_seed(0)
    model = models.build("mnist")
    if path.exists():
        g = np.load(path)
        models.load_tf_weights(model, g)
        x = torch.from_numpy(g["images"]).permute(0, 3, 1, 2).contiguous().float()
        y = torch.from_numpy(g["labels"].astype(np.int64))
        return model.eval(), x, y, g
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model.eval(), x, y, None


def timed_medians(fns: dict, repeats: int) -> dict[str, tuple[float, float, float]]:
    """Per function (called alternately): median wall seconds, median process CPU seconds per call
    (all threads; on a CPU shared with other jobs it shows the work done, where wall time also
    shows the other jobs), and the mean 1-minute load average while it ran."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    loads = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            loads[name].append(load())
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), statistics.fmean(loads[k])) for k in fns}


def print_table(title: str, results: dict, base: str | None = None) -> None:
    base = base or next(iter(results))
    print(f"\n{title}")
    header = f"{'variant':<34}{'wall ms':>10}{'speed-up':>10}{'CPU ms':>10}{'CPU sp-up':>10}{'load avg':>10}"
    print(header)
    print("-" * len(header))
    bw, bc = results[base][0], results[base][1]
    for name, (w, c, ld) in results.items():
        print(f"{name:<34}{w * 1e3:>10.1f}{bw / w:>9.2f}x{c * 1e3:>10.1f}{bc / c:>9.2f}x{ld:>10.2f}", flush=True)


def softplus_alone(repeats: int) -> None:
    x = torch.randn(167, 32, 28, 28) * 3

    def fwd(f):
        return lambda: f(x)

    def double(f):
        def run():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
            g.square().sum().backward()
        return run

    print_table("1. softplus alone, 167 x 32 x 28 x 28 elements",
                timed_medians({"F.softplus forward": fwd(F.softplus), "log1p-free forward": fwd(activations.cpu_softplus),
                               "F.softplus fwd + double bwd": double(F.softplus),
                               "log1p-free fwd + double bwd": double(activations.cpu_softplus)}, repeats))


def attack_iteration(model, x, y):
    """One top-k attack iteration on one image (the CPU plan: one image's 100 rows per pass)."""
    xa, ya = x[:1], y[:1]
    mask = metrics.topk_mask(real_saliency(model, xa, ya, 100), 200)
    objective = SaliencyObjective("topk", mask, 28, 28)

    def run():
        with input_gradients_only(model):
            d = surrogate_objective_gradient(model, xa + 0.01, ya, objective, 100, None)
            real_saliency(model, (xa + 0.01 * d.sign()).clamp(0, 1), ya, 100)
    return run


def training_pass(model, x, y):
    """ig_norm's outer double-backward over 8 images × 20 path points (ReLU network)."""
    xb, yb = x[:8], y[:8]

    def run():
        ig = integrated_gradients(cross_entropy_fn(model, yb), (xb + 0.1).clamp(0, 1), xb, 20, create_graph=True)
        ig.abs().sum().backward()
        model.zero_grad(set_to_none=True)
    return run


def in_variants(fn_factory, *args):
    out = {}
    for name, (sp, prec) in VARIANTS.items():
        fn = fn_factory(*args)

        def wrapped(fn=fn, sp=sp, prec=prec):
            with variant(sp, prec):
                fn()
        out[name] = wrapped
    return out


def per_image_error(a: torch.Tensor, b: np.ndarray) -> np.ndarray:
    """max |a − b| / max |b| per image (the golden tests' measure)."""
    a = a.detach().double().numpy().reshape(len(b), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    return np.abs(a - b).max(1) / np.abs(b).max(1)


def tolerances(model, x, y, golden, iterations: int) -> None:
    """The golden tests' tolerances (tests/test_golden_mnist_models.py) under each variant, and a
    whole small evaluation against the baseline's."""
    if golden is None:
        print("\n3. tolerances: skipped (no golden file)")
        return
    from attrrob import config

    print(f"\n3. golden tolerances (tests/test_golden_mnist_models.py: logits <= 1e-5 of the largest; ReLU "
          f"saliency per image median <= 1e-5, max <= 1e-3; softplus saliency max <= 2e-3) and a whole small "
          f"evaluation (8 golden images x {iterations} top-k iterations) against the baseline's")
    header = (f"{'variant':<30}{'logits':>9}{'soft lg':>9}{'relu med':>10}{'relu max':>10}{'soft max':>10}"
              f"{'within':>8}{'same kept':>10}{'max dtau':>10}{'mean tau':>10}{'load':>6}")
    print(header)
    print("-" * len(header))
    settings = dict(config.attack_settings("mnist"), iterations=iterations, num_examples=8)
    base = None
    for name, (sp, prec) in VARIANTS.items():
        with variant(sp, prec):
            with torch.no_grad():
                logits, soft_logits = model(x), model(x, smooth=True)
            relu = real_saliency(model, x, y, 100)
            soft = saliency_map(integrated_gradients(logit_fn(model, y, smooth=True), x, 0.0, 100))
            outcome = evaluation.evaluate_attack(model, x, y, "topk", settings, dataset="mnist", progress=False)
        lg = float(np.abs(logits.double().numpy() - golden["logits"]).max() / np.abs(golden["logits"]).max())
        slg = float(np.abs(soft_logits.double().numpy() - golden["logits_softplus"]).max()
                    / np.abs(golden["logits_softplus"]).max())
        relu_e, soft_e = per_image_error(relu, golden["saliency_ig100"]), per_image_error(soft, golden["saliency_ig100_softplus"])
        ok = lg <= 1e-5 and slg <= 1e-5 and np.median(relu_e) <= 1e-5 and relu_e.max() <= 1e-3 and soft_e.max() <= 2e-3
        rows = [r for r in outcome.rows if r["status"] == "attacked"]
        if base is None:
            base = rows
        same = sum(a["step"] == b["step"] for a, b in zip(rows, base))
        dtau = max(abs(a["kendall_tau"] - b["kendall_tau"]) for a, b in zip(rows, base))
        tau = statistics.fmean(r["kendall_tau"] for r in rows)
        print(f"{name:<30}{lg:>9.1e}{slg:>9.1e}{np.median(relu_e):>10.1e}{relu_e.max():>10.1e}{soft_e.max():>10.1e}"
              f"{'yes' if ok else 'NO':>8}{same:>6}/{len(rows):<3}{dtau:>10.1e}{tau:>10.4f}{load():>6.2f}", flush=True)


@contextlib.contextmanager
def burners(count: int):
    """`count` busy processes (pure-Python loops) of this process's niceness; ended by their pid."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def thread_policy(model, x, y, repeats: int, count: int) -> None:
    fn = attack_iteration(model, x, y)
    before = torch.get_num_threads()
    results = {}

    def at(threads):
        def run():
            torch.set_num_threads(threads)
            fn()
        return run

    try:
        for label, extra in (("as is", 0), (f"+{count} busy processes", count)):
            with burners(extra):
                r = timed_medians({f"1 thread, {label}": at(1), f"2 threads, {label}": at(2)}, repeats)
            results.update(r)
    finally:
        torch.set_num_threads(before)
    print_table(f"4. thread policy: one attack iteration (speed-up vs 1 thread on the machine as it is; "
                f"{os.cpu_count()} CPUs)", results)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iterations", type=int, default=5, help="top-k iterations of the small evaluation (section 3)")
    p.add_argument("--burners", type=int, default=2, help="busy processes for the oversubscribed case (0: skip)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of sections 1-3")
    p.add_argument("--sections", default="1234")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, x, y, golden = model_and_images()
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"weights: {'golden RAR MNIST' if golden is not None else 'random'}", flush=True)
    if "1" in args.sections:
        softplus_alone(args.repeats)
    if "2" in args.sections:
        print_table("2a. one top-k attack iteration, 1 image, 100-point IG (surrogate gradient + real saliency)",
                    timed_medians(in_variants(attack_iteration, model, x, y), args.repeats))
        print_table("2b. one training double-backward pass (ig_norm outer IG, 8 images x 20 points, ReLU)",
                    timed_medians(in_variants(training_pass, model, x, y), args.repeats))
    if "3" in args.sections:
        tolerances(model, x, y, golden, args.iterations)
    if "4" in args.sections and args.burners > 0:
        thread_policy(model, x, y, args.repeats, args.burners)


if __name__ == "__main__":
    main()
