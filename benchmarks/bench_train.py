"""Training-step throughput of the seven objectives on real MNIST at the paper's settings.

For each method (m = 50, batch 50, MNIST PGD ε 0.3 / 40 steps / 0.01, approx_factor 5) it times,
in one run and on one device:
- batched: the step as training runs it (IG path points batched, `--ig-max-batch`, 0 = all);
- loop:    the same step with IG one path point per call (ig_max_batch = batch size);
- raw:     the raw limit — plain batched double-backward passes (forward, input gradient with
           create_graph, backward of its L1 norm to the weights) over the same number of
           input-gradient evaluations (rows) as the step: one pass of a PGD iteration's rows
           (× pgd_steps) plus the outer loss's rows at the per-row cost of a 2,500-row pass
           (batch × m; one pass of all 10,000 outer rows of sarkar would not be cheaper per row);
and reports examples/s, loop/batched speed-up, the fraction of the raw limit reached, and memory.

A step = inner PGD (`pgd_steps` identical iterations) + outer loss + backward + optimizer update.
The inner PGD is timed over `--pgd-iters` iterations (default: all 40 for madry, 1 for the
attribution objectives, whose iterations each cost 10 IG points of double backprop), and the
step time is the outer time plus 40 × the measured per-iteration time: every iteration is the same
computation, so this is a linear extrapolation of measured parts, stated in the table.

Run:  python benchmarks/bench_train.py [--device cpu|cuda] [--methods ...] [--pgd-iters N] [--repeats R]
Needs ../shared/data/mnist (or $ATTRROB_SHARED/data/mnist); exits with a message when absent.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

from attrrob import config, models, objectives, registry
from attrrob.data.idx import read_idx

REPO = Path(__file__).resolve().parents[1]
CLOCK = time.perf_counter  # --clock process: this process's CPU time, robust to other jobs' load


def mnist_dir() -> Path:
    shared = Path(os.environ.get("ATTRROB_SHARED") or REPO.parent / "shared")
    return shared / "data" / "mnist"


def load_batch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    root = mnist_dir()
    images = read_idx(root / "train-images-idx3-ubyte.gz", ndim=3)[:n]
    labels = read_idx(root / "train-labels-idx1-ubyte.gz", ndim=1)[:n]
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    return x.to(device), torch.from_numpy(labels.astype("int64")).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def input_gradient_rows(method: str, s: dict) -> tuple[int, int]:
    """(rows per PGD iteration, rows of the outer loss) of double-backpropagated input gradients."""
    b, m, a = s["batch_size"], s["m"], s["approx_factor"]
    approx = (m // a) * b
    inner = {"natural": 0, "madry": 0, "ig_norm": approx}.get(method, approx + b)  # + CE(x') for *sum*
    outer = {"natural": 0, "madry": 0, "ig_norm": m * b, "ig_sum_norm": m * b,
             "sarkar": 4 * m * b, "sarkar_cacr": 2 * m * b, "sarkar_wacr": 2 * m * b}[method]
    return inner, outer


def time_step(method, model, opt, x, y, s, pgd_iters, repeats, device):
    """Median over repeats of (seconds per PGD iteration, seconds of outer loss + backward + update)."""
    outer_loss = registry.method(method).outer_loss
    timed = dict(s, pgd_steps=pgd_iters)
    inner_t, outer_t = [], []
    for r in range(repeats):
        gen = torch.Generator().manual_seed(r)
        sync(device)
        t0 = CLOCK()
        x_adv = objectives.adversarial_example(method, model, x, y, timed, gen)
        sync(device)
        t1 = CLOCK()
        loss, _ = outer_loss(model, x, x_adv, y, timed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        t2 = CLOCK()
        inner_t.append((t1 - t0) / max(pgd_iters, 1))
        outer_t.append(t2 - t1)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return med(inner_t), med(outer_t)


def raw_row_cost(model, x, y, rows: int, device, repeats: int) -> float:
    """Seconds per row of one plain batched double-backward pass over `rows` rows."""
    z0 = x.repeat((rows + len(x) - 1) // len(x), 1, 1, 1)[:rows]
    labels = y.repeat((rows + len(y) - 1) // len(y))[:rows]
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = CLOCK()
        z = z0.detach().requires_grad_(True)
        out = torch.nn.functional.cross_entropy(model(z), labels, reduction="sum")
        (g,) = torch.autograd.grad(out, z, create_graph=True)
        g.abs().sum().backward()
        sync(device)
        times.append(CLOCK() - t0)
    model.zero_grad(set_to_none=True)
    return sorted(times)[len(times) // 2] / rows


def memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS so far (Linux: KiB)


def measure_method(method: str, args: argparse.Namespace, model, opt, x, y, raw_rows: int,
                   device: torch.device) -> None:
    """Time one method's step (batched IG and the per-point loop, alternated with the raw passes) and print its row."""
    s = config.train_settings("mnist", method, overrides={"ig_max_batch": args.ig_max_batch})
    loop = dict(s, ig_max_batch=s["batch_size"])
    iters = args.pgd_iters if args.pgd_iters is not None else (s["pgd_steps"] if method == "madry" else 1)
    iters = min(iters, s["pgd_steps"]) if method != "natural" else 0
    attributional = method not in ("natural", "madry")
    repeats = args.repeats if attributional else max(args.repeats, 5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Alternate the variants (and the raw pass) so that load from other processes hits all alike.
    batched_t, loop_t, row_costs = [], [], []
    for _ in range(repeats):
        batched_t.append(time_step(method, model, opt, x, y, s, iters, 1, device))
        mem = memory_mb(device)
        if attributional:  # natural and madry take no IG: their loop variant is the same step
            loop_t.append(time_step(method, model, opt, x, y, loop, iters, 1, device))
            inner_rows, outer_rows = input_gradient_rows(method, s)
            row_costs.append((raw_row_cost(model, x, y, inner_rows, device, 1),
                              raw_row_cost(model, x, y, min(outer_rows, raw_rows), device, 1)))
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    it_b, out_b = med([t[0] for t in batched_t]), med([t[1] for t in batched_t])
    it_l, out_l = (med([t[0] for t in loop_t]), med([t[1] for t in loop_t])) if loop_t else (it_b, out_b)
    step_b = out_b + s["pgd_steps"] * it_b * (method != "natural")
    step_l = out_l + s["pgd_steps"] * it_l * (method != "natural")
    inner_rows, outer_rows = input_gradient_rows(method, s)
    rows = inner_rows * s["pgd_steps"] + outer_rows
    raw = (inner_rows * s["pgd_steps"] * med([c[0] for c in row_costs])
           + outer_rows * med([c[1] for c in row_costs])) if row_costs else 0.0
    eps_b, eps_l = s["batch_size"] / step_b, s["batch_size"] / step_l
    frac = f"{raw / step_b:6.2f}" if rows else "   n/a"
    versus = f"{step_l / step_b:>6.2f}x" if loop_t else "    n/a"
    loop_cols = f"{step_l:>8.2f}" if loop_t else f"{'-':>8}"
    loop_eps = f"{eps_l:>9.2f}" if loop_t else f"{'-':>9}"
    print(f"{method:<12} {rows:>9} {iters:>3}/{s['pgd_steps']:<2} {step_b:>9.2f} {loop_cols} {raw:>8.2f} "
          f"{eps_b:>7.2f} {loop_eps} {versus} {frac} {mem:>7.0f} {os.getloadavg()[0]:>5.2f}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", nargs="+", default=list(registry.METHODS), choices=registry.method_names())
    p.add_argument("--pgd-iters", type=int, default=None,
                   help="PGD iterations timed per step (default: 40 for madry, 1 for attribution objectives)")
    p.add_argument("--repeats", type=int, default=1, help="timed steps per method and variant (median)")
    p.add_argument("--ig-max-batch", type=int, default=0, help="rows per IG call in the batched variant (0: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="process: time by this process's CPU time (CPU only; use with --threads 1 on a "
                        "machine shared with other jobs — ratios stay meaningful, s are CPU-seconds)")
    args = p.parse_args(argv)
    global CLOCK
    if args.clock == "process":
        if args.device != "cpu":
            p.error("--clock process measures CPU time; use it with --device cpu")
        CLOCK = time.process_time
    if not (mnist_dir() / "train-images-idx3-ubyte.gz").exists():
        print(f"bench_train: skipped — real MNIST not found in {mnist_dir()} (set ATTRROB_SHARED)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = models.build("mnist").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    base = config.train_settings("mnist", "sarkar")
    x, y = load_batch(base["batch_size"], device)

    # Warm-up: allocator and kernels, on a small IG step of the largest objective.
    warm = config.train_settings("mnist", "sarkar", overrides={"m": 5, "pgd_steps": 1})
    objectives.compute_loss("sarkar", model, x, y, warm, torch.Generator().manual_seed(0))[0].backward()
    raw_rows = base["batch_size"] * base["m"]
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, clock {args.clock}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs); "
          "raw limit from plain double-backward passes of the step's shapes, measured beside each method", flush=True)

    rows_call = objectives.rows_per_ig_call(dict(base, ig_max_batch=args.ig_max_batch), x)
    if rows_call:  # IG calls hold whole path points: batch rows each
        rows_call = max(rows_call // base["batch_size"], 1) * base["batch_size"]
    print(f"batched variant: {rows_call or 'all'} rows per IG call (ig_max_batch={args.ig_max_batch}"
          f"{', capped for CPU caches' if device.type == 'cpu' else ''}); loop: {base['batch_size']} rows "
          f"(one path point) per call", flush=True)
    header = (f"{'method':<12} {'rows/step':>9} {'pgd it':>6} {'batched s':>9} {'loop s':>8} {'raw s':>8} "
              f"{'ex/s':>7} {'loop ex/s':>9} {'vs loop':>7} {'of raw':>6} {'mem MB':>7} {'load':>5}")
    print(header, flush=True)
    print("-" * len(header), flush=True)
    for method in args.methods:
        measure_method(method, args, model, opt, x, y, raw_rows, device)
    print("\nrows/step: double-backpropagated input-gradient evaluations per step at the paper's settings;"
          "\npgd it: PGD iterations timed / per step (step time = outer + pgd_steps × measured iteration);"
          "\nvs loop: batched speed-up over the per-point loop; of raw: raw-limit time / batched step time;"
          "\nload: 1-minute load average when the row was measured (above the CPU count, wall times include waiting);"
          "\nmem: " + ("peak CUDA memory of the batched variant" if device.type == "cuda"
                       else "peak process RSS so far (monotone: the largest objective so far sets it)") + ".")


if __name__ == "__main__":
    sys.exit(main())
