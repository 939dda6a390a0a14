"""Benchmark of the attribution-attack evaluator on real MNIST (GitHub issue 4).

Trains a natural MNIST CNN briefly on the local mirror (`../shared/data/mnist`, or
$ATTRROB_SHARED/data/mnist), then runs the paper's MNIST top-k attack settings (k = 200,
ε = 0.3, α = 0.01, 100-point IG; fewer iterations and images than the protocol, stated in the
table) side by side:

- the batched evaluator (all images in one batch) and the per-image mode (--batch-images 1);
- the raw limit: one batched forward + double-backward pass through the surrogate's IG plus one
  forward + input-gradient pass through the real network's IG over the same rows, i.e. the work
  one attack iteration cannot avoid; the evaluator's throughput as a fraction of it;
- the projected time of the full protocol (10,000 images, 100 iterations, 100-point IG, one run)
  and the speed-up over RAR's TensorFlow evaluator (≈ 53 s per image per run on 2 CPU cores).

Usage: python benchmarks/bench_evaluate.py [--images 8] [--iterations 10] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attrrob import metrics, models
from attrrob.attacks.saliency import (SaliencyObjective, attack_batch, input_gradients_only, real_saliency,
                                         surrogate_objective_gradient)
from attrrob.data import read_idx
from attrrob.devices import select_device
from attrrob.evaluation import plan_batches

TF_SECONDS_PER_IMAGE_RUN = 53.0
PROTOCOL_IMAGES, PROTOCOL_ITERATIONS = 10_000, 100


def mnist_dir() -> Path:
    shared = os.environ.get("ATTRROB_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared"
    return root / "data" / "mnist"


def load_mnist(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(mnist_dir() / f"{prefix}-images-idx3-ubyte.gz")[:count]
    labels = read_idx(mnist_dir() / f"{prefix}-labels-idx1-ubyte.gz")[:count]
    return torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0, torch.tensor(labels, dtype=torch.long)


def train_natural(device: torch.device, steps: int) -> torch.nn.Module:
    x, y = load_mnist("train", 20000)
    torch.manual_seed(0)
    model = models.build("mnist").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (50,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[idx].to(device)), y[idx].to(device)).backward()
        opt.step()
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CPU_SECONDS: dict[str, float] = {}
LOADS: dict[str, float] = {}  # 1-minute load average at the end of each timed mode


def timed(fn, device, repeats: int = 1, name: str | None = None) -> float:
    """Wall seconds per call; the process CPU seconds per call are kept in CPU_SECONDS[name]
    (on a shared CPU they show the work done, where the wall time also shows other jobs)."""
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync(device)
    if name:
        CPU_SECONDS[name] = (time.process_time() - cpu_start) / repeats
        LOADS[name] = os.getloadavg()[0]
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not mnist_dir().is_dir():
        sys.exit(f"skipped: {mnist_dir()} is absent (set ATTRROB_SHARED to the shared folder)")
    device, _lock = select_device(args.device)
    settings = dict(eps=0.3, step_size=0.01, iterations=args.iterations, k_attack=200, k_metric=100, ig_steps=100,
                    restarts=1, random_restarts=3, zero_direction="random_sign", ties="expected")

    model = train_natural(device, args.train_steps)
    x, y = load_mnist("test", 200)
    with torch.no_grad():
        keep = (model(x.to(device)).argmax(1).cpu() == y).nonzero().flatten()[: args.images]
    x, y = x[keep].to(device), y[keep].to(device)
    n, indices = len(y), keep.tolist()
    attack = dict(lo=0.0, hi=1.0, integral=False, seed=0)

    plan = plan_batches(model, x[:1], 100, batch_images=64, ig_max_batch=0)
    chosen = plan.batch_images

    def run_attack(batch: int) -> None:
        for start in range(0, n, batch):
            part = slice(start, start + batch)
            attack_batch(model, x[part], y[part], indices[part], "topk", settings, max_rows=plan.max_rows, **attack)

    def run_raw(batch: int) -> None:
        # The two passes of one iteration, over the same rows as the evaluator's batches.
        for start in range(0, n, batch):
            part = slice(start, start + batch)
            surrogate_objective_gradient(model, x[part], y[part], objective.rows(torch.arange(start, min(start + batch, n))),
                                         100, plan.max_rows)
            real_saliency(model, x[part], y[part], 100, plan.max_rows)

    attack_batch(model, x[:1], y[:1], indices[:1], "topk", {**settings, "iterations": 1}, **attack)  # warm-up
    objective = SaliencyObjective("topk", metrics.topk_mask(real_saliency(model, x, y, 100), 200), 28, 28)
    modes = {f"batched ({chosen})": chosen, "per-image": 1}
    if n > chosen:
        modes[f"one batch ({n})"] = n
    wall = {}
    for mode, batch in modes.items():
        wall[mode] = timed(lambda: run_attack(batch), device, name=mode)
    with input_gradients_only(model):
        wall["raw limit"] = timed(lambda: run_raw(chosen), device, repeats=2, name="raw limit")

    image_iterations = n * args.iterations
    per_iteration = {m: t / image_iterations for m, t in wall.items() if m != "raw limit"}
    per_iteration["raw limit"] = wall["raw limit"] / n
    cpu = {m: c / image_iterations for m, c in CPU_SECONDS.items() if m != "raw limit"}
    cpu["raw limit"] = CPU_SECONDS["raw limit"] / n
    print_table(device, args, n, chosen, per_iteration, cpu)


def print_table(device: torch.device, args: argparse.Namespace, n: int, chosen: int, per_iteration: dict,
                cpu: dict) -> None:
    """The setting, one line per mode (speed, share of the raw limit, speed-up over TF, protocol time), a legend."""
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.1f}")
    print(f"device: {device} ({where})")
    print(f"setting: MNIST CNN trained {args.train_steps} steps; top-k attack k=200, eps=0.3, alpha=0.01, "
          f"100-point IG, zero_direction=random_sign; {n} images x {args.iterations} iterations, one run "
          f"(protocol: {PROTOCOL_IMAGES} x {PROTOCOL_ITERATIONS}; time is linear in both); the evaluator's "
          f"plan: {chosen} images per pass")
    print()
    header = (f"{'mode':<18}{'images/s*':>10}{'s/image/run':>13}{'of raw':>8}{'vs TF':>8}{'protocol':>10}{'load':>6}"
              + (f"{'CPU s/img/run':>15}{'CPU of raw':>11}" if device.type == "cpu" else ""))
    print(header)
    print("-" * len(header))
    for mode, t in per_iteration.items():
        per_run = t * PROTOCOL_ITERATIONS
        line = (f"{mode:<18}{1 / per_run:>10.4f}{per_run:>13.2f}{per_iteration['raw limit'] / t:>8.2f}"
                f"{TF_SECONDS_PER_IMAGE_RUN / per_run:>7.1f}x{per_run * PROTOCOL_IMAGES / 3600:>8.1f} h"
                f"{LOADS.get(mode, float('nan')):>6.2f}")
        if device.type == "cpu":
            line += f"{cpu[mode] * PROTOCOL_ITERATIONS:>15.2f}{cpu['raw limit'] / cpu[mode]:>11.2f}"
        print(line)
    print()
    print("* complete 100-iteration runs per second. 'of raw': raw-limit time / mode time. 'vs TF': "
          f"{TF_SECONDS_PER_IMAGE_RUN:.0f} s (RAR's TensorFlow evaluator per image per run, 2 CPU cores) / mode time.")
    print("  'protocol': 10,000 images x 100 iterations, one run. CPU columns: process CPU seconds (all threads),")
    print("  which on a CPU shared with other jobs show the work done where wall time also shows the other jobs.")
    print(f"  'load': 1-minute load average when the mode's timing ended ({os.cpu_count()} CPUs).")


if __name__ == "__main__":
    main()
