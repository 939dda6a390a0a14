"""What attrrob costs on one CUDA GPU: evaluator and training speed, memory, reduced precision.

The speed half of the GPU check; the correctness half (CUDA against the CPU) is the test file
`tests/test_cuda.py`. `benchmarks/gpu_check.sh` runs both as one command (see docs/gpu/README.md).

    PYTHONPATH=src python benchmarks/gpu_check.py                 # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --cpu-smoke     # same code, tiny sizes, CPU

At most `--budget-s` seconds (default 300): each section gets its share of what is left and stops
at its first measurement past it, keeping what it measured. Writes one Markdown report and one JSON
file (default `docs/gpu/gpu_check-<date>-<device>.{md,json}`, rewritten after every section so that
a run killed from outside still leaves what it had) and prints the report. `--tests-junit FILE`
adds the verdict of a `pytest --junitxml` run of tests/test_cuda.py to the report.

Sections: environment (versions, device, float32 precision, which data were found); evaluator
speed on MNIST (batched vs `--batch-images 1`, projected 10,000 × 100 protocol time); training speed
of every data set × method at the paper's settings (random data of the right shapes; examples/s,
peak memory) and the projected hours of the paper grid on one and two GPUs; whether TF32 or bf16
autocast changes the one-step training loss, and how much faster it is.

Needs: Python ≥ 3.10, torch, numpy, scipy, pyyaml, tqdm and this repository's `src/` on PYTHONPATH.
Optional: nvidia-smi, the MNIST files (data/prepared/mnist.npz or $ATTRROB_SHARED/data/mnist, else
../shared/data/mnist) and $ATTRROB_SHARED/data/golden/rar_mnist_natural.npz (trained weights);
without them random weights and inputs are used, and the report says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "src", REPO / "benchmarks"):  # a bare checkout, no install; and gpu_report beside this
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from attrrob import config, devices, evaluation, models, objectives, registry, training  # noqa: E402
from gpu_report import LOSS_RTOL, cuda_tests, write_outputs  # noqa: E402

PROTOCOL_IMAGES, PROTOCOL_ITERATIONS = 10_000, 100
TRAIN_DATASETS = tuple(d for d in registry.DATASETS if d != "digits")  # the paper's four (digits: the quickstart's)
GOLDEN = "rar_mnist_natural.npz"
SHARES = {"evaluator": 0.32, "training": 0.44, "autocast": 0.24}
OutOfMemory = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)  # torch < 1.13 has no class of its own


@dataclass(frozen=True)
class Profile:
    """Problem sizes: the GPU run's, or the CPU smoke test's (the same code at tiny sizes)."""

    name: str
    train_overrides: dict      # training settings changed for every measurement (smoke only)
    autocast_batch: dict       # dataset -> batch size of the reduced-precision step (None: the paper's)
    ig_steps: int | None       # None: the paper's 100
    eval_images: int           # batched-evaluator images
    eval_single_images: int    # images of the --batch-images 1 run
    eval_iterations: int
    eval_batch_images: tuple   # batch_images values measured for the batched evaluator
    timed_steps: int


GPU = Profile(name="gpu", train_overrides={}, autocast_batch={"mnist": 8, "gtsrb": 4, "flower": None},
              ig_steps=None, eval_images=256, eval_single_images=4, eval_iterations=5, eval_batch_images=(64, 256),
              timed_steps=2)
SMOKE = Profile(name="cpu-smoke", train_overrides={"batch_size": 1, "m": 2, "approx_factor": 1, "pgd_steps": 1},
                autocast_batch={"mnist": 2}, ig_steps=4, eval_images=2, eval_single_images=1, eval_iterations=1,
                eval_batch_images=(2,), timed_steps=1)


class SectionTimeout(Exception):
    """A section ran out of its share of the time budget."""


class Budget:
    """The run's deadline and the sections' shares of it. Sections call `check()` between
    measurements; one measurement is short, and gpu_check.sh's `timeout` is the backstop."""

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
        allowed = max(run_left * self.shares.get(name, 0.0) / max(remaining_shares, 1e-9), 0.0)
        self.section_deadline = time.monotonic() + allowed
        try:
            yield allowed
        finally:
            self.section_deadline = math.inf


# ----------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative(a: float, b: float) -> float:
    """|a − b| / max(|b|, tiny): the relative difference of `a` from the reference `b`."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-30)


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


def build(dataset: str, seed: int = 0, golden: dict | None = None) -> torch.nn.Module:
    model = models.build(dataset, generator=torch.Generator().manual_seed(seed))
    if dataset == "mnist" and golden is not None:
        models.load_tf_weights(model, golden)
    return model


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


def random_batch(dataset: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the data set's shape and value range (integer pixels where it has them), labels."""
    spec = config.dataset_input(dataset)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, spec["channels"], spec["height"], spec["width"], generator=g) * float(spec["max_value"])
    y = torch.randint(0, spec["classes"], (n,), generator=g)
    return (torch.floor(x) if spec["integral"] else x), y


def train_settings(dataset: str, method: str, profile: Profile, batch: int | None = None) -> dict:
    overrides = dict(profile.train_overrides)
    if batch is not None:
        overrides["batch_size"] = batch
    return config.train_settings(dataset, method, overrides=overrides or None)


def one_step(method: str, model, optimizer, x, y, settings, seed: int) -> dict:
    """compute_loss + backward + update, as the training loop does; returns the loss terms."""
    loss, terms = objectives.compute_loss(method, model, x, y, settings, torch.Generator().manual_seed(seed))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return terms


def _free_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- evaluator speed


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


def evaluator_inputs(device, profile: Profile, golden) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """The MNIST model and the correctly classified images the evaluator is timed on, and their source."""
    need = max(profile.eval_images, profile.eval_single_images)
    real = real_mnist_test(max(need * 2, 64))
    if real is None:
        model = build("mnist").to(device).eval()
        x = random_batch("mnist", need, 51)[0]
        with torch.no_grad():
            y = model(x.to(device)).argmax(1).cpu()  # every image "correctly classified": all are attacked
        return model, x, y, "random weights and random 28x28 inputs (no MNIST found)"
    x, y, where = real
    if golden is not None:
        model, source = build("mnist", 0, golden).to(device).eval(), "golden RAR natural weights"
    else:
        model = _train_natural(device, x, y, 300 if profile.name == "gpu" else 5)
        source = "a natural CNN trained here for a few steps"
    with torch.no_grad():
        keep = (model(x.to(device)).argmax(1).cpu() == y).nonzero().flatten()
    return model, x[keep], y[keep], f"real MNIST test images ({where}), {source}"


def time_evaluator(device, model, x, y, settings: dict, batch_images: int, n: int, iterations: int) -> dict:
    """One timed `evaluate_attack` run, scaled to the protocol's iterations and images."""
    s = dict(settings, num_examples=n)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    outcome = evaluation.evaluate_attack(model, x[:n], y[:n], "topk", s, dataset="mnist", batch_images=batch_images,
                                         progress=False)
    sync(device)
    wall = time.perf_counter() - t0
    used = outcome.summary["settings"]
    attacked = outcome.summary["counts"]["n_attacked"]
    per_image_run = wall / max(attacked, 1) * PROTOCOL_ITERATIONS / iterations
    return {"images": attacked, "wall_s": round(wall, 3), "images_per_s_at_100_iterations": 1.0 / per_image_run,
            "s_per_image_run": per_image_run, "protocol_hours": per_image_run * PROTOCOL_IMAGES / 3600,
            "batch_images_used": used["batch_images_used"], "ig_rows_per_call": used["ig_rows_per_call"],
            "memory_budget_gib": round(used["memory_budget_bytes"] / 2**30, 3),
            "peak_mib": peak_mib(device), "load_avg": load_avg()}


def section_evaluator(device, profile, budget, golden, report) -> None:
    out = report["evaluator"]
    model, x, y, out["source"] = evaluator_inputs(device, profile, golden)
    overrides = {"iterations": profile.eval_iterations, **({"ig_steps": profile.ig_steps} if profile.ig_steps else {})}
    settings = config.attack_settings("mnist", overrides=overrides)
    out["settings"] = {k: settings[k] for k in ("eps", "step_size", "k_attack", "ig_steps", "zero_direction")}
    out["iterations_timed"] = profile.eval_iterations
    modes = [(f"batched (batch_images={b})", b, profile.eval_images) for b in profile.eval_batch_images]
    modes.insert(1, ("per-image (--batch-images 1)", 1, profile.eval_single_images))
    # warm-up: kernels, allocator, cuDNN autotuning
    evaluation.evaluate_attack(model, x[:2], y[:2], "topk", dict(settings, iterations=1, num_examples=2),
                               dataset="mnist", progress=False)
    for label, batch_images, n in modes:
        budget.check()
        run = time_evaluator(device, model, x, y, settings, batch_images, min(n, len(x)), profile.eval_iterations)
        out["runs"].append({"mode": label, **run})
    batched = [r for r in out["runs"] if r["mode"].startswith("batched")]
    single = [r for r in out["runs"] if r["mode"].startswith("per-image")]
    if batched and single:
        best = max(batched, key=lambda r: r["images_per_s_at_100_iterations"])
        out["best_batched"] = best["mode"]
        out["ratio_batched_vs_per_image"] = best["images_per_s_at_100_iterations"] / single[0]["images_per_s_at_100_iterations"]
        out["projected_protocol_hours"] = best["protocol_hours"]


# ----------------------------------------------------------------------------- training speed


def grid_steps() -> dict[tuple[str, str], int]:
    """Steps of each (dataset, method) of the paper grid as config/config.yaml runs it."""
    import yaml

    path = REPO / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else {}
    datasets = cfg.get("datasets") or list(TRAIN_DATASETS)
    methods = cfg.get("methods") or list(registry.METHODS)
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


def time_training(device, profile: Profile, dataset: str, method: str) -> dict:
    """Median seconds per training step after a warm-up, examples/s and peak memory."""
    s = train_settings(dataset, method, profile)
    x, y = (t.to(device) for t in random_batch(dataset, s["batch_size"], 61))
    model = build(dataset, 4).to(device).train()
    opt = training.make_optimizer(model, s)
    row = {"dataset": dataset, "method": method, "batch": s["batch_size"], "pgd_steps": s["pgd_steps"], "m": s["m"]}
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
        row.update(step_s=step, examples_per_s=s["batch_size"] / step, peak_mib=peak_mib(device), load_avg=load_avg())
    except OutOfMemory as exc:
        row["error"] = "out of memory: " + str(exc).splitlines()[0][:160]
    except Exception as exc:  # noqa: BLE001 - the other data sets and methods still run
        row["error"] = _error(exc)
    return row


def section_training(device, profile, budget, report) -> None:
    out = report["training"]
    rows = out["rows"]
    for dataset in TRAIN_DATASETS:
        for method in registry.METHODS:
            budget.check()
            rows.append(time_training(device, profile, dataset, method))
            _free_cuda(device)
    steps = grid_steps()
    measured = {(r["dataset"], r["method"]): r["step_s"] for r in rows if "step_s" in r}
    jobs = {k: n * measured[k] for k, n in steps.items() if k in measured}
    missing = sorted(f"{d}/{m}" for d, m in steps if (d, m) not in measured)
    out["grid"] = {"jobs": len(steps), "measured_jobs": len(jobs), "missing": missing,
                   "hours_per_job": {f"{d}/{m}": t / 3600 for (d, m), t in jobs.items()},
                   "hours_one_gpu": sum(jobs.values()) / 3600,
                   "hours_two_gpus": schedule_hours(list(jobs.values()), 2),
                   "complete": not missing}


# ----------------------------------------------------------------------------- reduced precision


def precision_variants(device, profile: Profile, dataset: str, method: str) -> dict:
    """One step from the same weights, batch and PGD start in fp32, TF32/bf16 matmul and bf16 autocast."""
    fast = "tf32" if device.type == "cuda" else "bf16"
    variants = [("fp32 (ieee)", "ieee", False), (f"{fast} matmul/conv", fast, False), ("bf16 autocast", "ieee", True)]
    s = train_settings(dataset, method, profile, profile.autocast_batch.get(dataset))
    x, y = (t.to(device) for t in random_batch(dataset, s["batch_size"], 71))
    row, reference = {"dataset": dataset, "method": method, "batch": s["batch_size"]}, None
    for label, precision, autocast in variants:
        model = build(dataset, 6).to(device).train()
        opt = training.make_optimizer(model, s)
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
        try:
            with devices.float32_precision(device.type, precision), cast:
                sync(device)
                t0 = time.perf_counter()
                terms = one_step(method, model, opt, x, y, s, 9)
                sync(device)
            elapsed = time.perf_counter() - t0
            if reference is None:
                reference = (terms["total"], elapsed)
            row[label] = {"loss": terms["total"], "rel_diff": relative(terms["total"], reference[0]),
                          "time_ratio": elapsed / reference[1]}
        except Exception as exc:  # noqa: BLE001 - e.g. an op without a bf16 kernel
            row[label] = {"error": _error(exc)}
    return row


def section_autocast(device, profile, budget, report) -> None:
    for dataset in profile.autocast_batch:
        for method in registry.METHODS:
            budget.check()
            report["autocast"]["rows"].append(precision_variants(device, profile, dataset, method))
    report["autocast"]["tolerance"] = LOSS_RTOL
    report["autocast"]["note"] = ("one step from the same weights, batch and PGD start; the first step's time "
                                  "includes kernel selection for each variant alike")


# ----------------------------------------------------------------------------- environment


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return getattr(mod, "__version__", "present")


def environment(device: torch.device, profile: Profile, golden, budget_s: float) -> dict:
    env = {
        "mode": profile.name, "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(), "torch": torch.__version__, "torch_pinned": _pinned_torch(),
        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": _version("numpy"), "scipy": _version("scipy"), "yaml": _version("yaml"), "tqdm": _version("tqdm"),
        "device": str(device), "cpu_count": os.cpu_count(), "cpu_threads": torch.get_num_threads(),
        "load_avg": load_avg(), "budget_s": budget_s,
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


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="the same code at tiny sizes on the CPU (CI); not a GPU result")
    p.add_argument("--device", default=None, help="cuda (default), cuda:i; the smoke run uses cpu")
    p.add_argument("--budget-s", type=float, default=None, help="whole-run time limit (default 300; smoke 60)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where the report goes (default docs/gpu; the smoke run: <tempdir>/attrrob-gpu-check, "
                        "so that docs/gpu holds GPU results only)")
    p.add_argument("--sections", default=",".join(SHARES), help="comma-separated subset, in this order")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--tests-junit", type=Path, default=None,
                   help="JUnit XML of a pytest run of tests/test_cuda.py, summarised in the report and its verdict")
    p.add_argument("--tests-exit-code", type=int, default=None, help="that pytest run's exit code")
    args = p.parse_args(argv)
    args.budget_s = args.budget_s or (60.0 if args.cpu_smoke else 300.0)
    if args.out_dir is None:
        args.out_dir = Path(tempfile.gettempdir()) / "attrrob-gpu-check" if args.cpu_smoke else REPO / "docs" / "gpu"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SHARES)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SHARES)}")
    return p, args


def choose_device(p: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device | None:
    """The device measured, with IEEE float32 unless ATTRROB_FLOAT32_PRECISION says otherwise; None without CUDA."""
    if args.threads or args.cpu_smoke:
        # One thread in the smoke run: on a CPU shared with other jobs two threads stall each other
        # (measured 10x slower at load 20 on 2 cores, benchmarks/bench_cpu_kernels.py section 4).
        torch.set_num_threads(args.threads or 1)
    if args.cpu_smoke:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here (torch " + torch.__version__ + "); run with --cpu-smoke "
              "to test the check itself on a CPU", file=sys.stderr)
        return None
    else:
        device = torch.device(args.device or "cuda")
        if device.type != "cuda":
            p.error(f"--device {args.device}: the GPU run needs cuda or cuda:i (use --cpu-smoke for the CPU)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        devices.apply_precision_policy(torch.device("cpu"))
    devices.apply_precision_policy(device)
    return device


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    device = choose_device(p, args)
    if device is None:
        return 2
    profile = SMOKE if args.cpu_smoke else GPU
    torch.manual_seed(0)
    golden = golden_weights()
    budget = Budget(args.budget_s, {k: v for k, v in SHARES.items() if k in args.sections})
    report = {"environment": environment(device, profile, golden, args.budget_s),
              "sections": {k: "not run" for k in args.sections},
              "evaluator": {"runs": []}, "training": {"rows": []}, "autocast": {"rows": []}}
    if args.tests_junit is not None:
        report["cuda_tests"] = cuda_tests(args.tests_junit, args.tests_exit_code)
    steps = {"evaluator": lambda: section_evaluator(device, profile, budget, golden, report),
             "training": lambda: section_training(device, profile, budget, report),
             "autocast": lambda: section_autocast(device, profile, budget, report)}
    md, js = write_outputs(report, args.out_dir)
    for i, name in enumerate(args.sections):
        t0, c0 = time.monotonic(), time.process_time()
        try:
            with budget.section(name, sum(SHARES[k] for k in args.sections[i:])) as allowed:
                print(f"[gpu_check] {name}: up to {allowed:.0f} s", file=sys.stderr, flush=True)
                steps[name]()
            report["sections"][name] = "done"
        except SectionTimeout:
            report["sections"][name] = "cut short by its time budget"
        except Exception as exc:  # noqa: BLE001 - the report must still be written
            report["sections"][name] = f"error: {_error(exc)}"
        report.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)
        report.setdefault("section_cpu_seconds", {})[name] = round(time.process_time() - c0, 1)
        report["elapsed_s"] = round(time.monotonic() - budget.start, 1)
        md, js = write_outputs(report, args.out_dir)
    print(md.read_text())
    print(f"[gpu_check] wrote {md} and {js}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
