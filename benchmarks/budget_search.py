"""Budget search: the smallest training budget at which natural and Madry training are what they claim.

The rule never looks at attribution metrics (so the comparison between methods stays honest):
train natural and madry with the config's settings, extending the same run along a grid of step
counts (`attrrob train --steps N` into the same output and checkpoint directory resumes
bit-identically, so each grid point costs only the extra steps), evaluate NA and PGD AA after
each grid point with the config's accuracy settings on the first `--eval-examples` images of the
prepared file's validation split (never the test split: a choice made on test data would flatter
the test numbers; `prepare` keeps that split, see its `validation_*` settings),
and stop at the first grid point where the rule holds:
- `--rule threshold` (MNIST): Madry's AA >= `--min-aa` and natural's NA >= `--min-na`;
- `--rule separated` (digits): Madry's AA above natural's AA with non-overlapping 95% CIs.
Then every method of the config is timed for `--timing-steps` steps (one short run each, from
scratch, at the config's IG settings) to give seconds per training step, and the test images'
support sizes (non-zero pixel counts) are summarised, from which a smaller top-k attack's k can be
chosen without looking at results.

Every result is a small JSON file under `--results` (committed in git with the study it documents,
studies/<study>/budget/; `render` turns them into a Markdown page, docs/budgets.md, which is
committed and checked against its sources in CI, tests/test_study_regenerates.py). Models and checkpoints go under `--work`
(not versioned).

  OMP_NUM_THREADS=1 nice -n 19 python benchmarks/budget_search.py search --config config/mnist_cpu.yaml \\
      --dataset mnist --data data/prepared/mnist.npz --work /tmp/budget --results studies/mnist_cpu/budget \\
      --grid 250 500 1000 1500 2000 --rule threshold --min-aa 0.80 --min-na 0.98 --eval-examples 1000
  python benchmarks/budget_search.py render --results studies/mnist_cpu/budget \\
      studies/digits_quickstart/budget --out docs/budgets.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULE_METHODS = ("natural", "madry")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _run(cmd: list[str], log: Path) -> float:
    """Run one attrrob command (output to `log`); returns its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=os.environ.copy())
    if done.returncode:
        sys.exit(f"command failed (exit {done.returncode}), see {log}: {' '.join(cmd)}")
    return time.perf_counter() - start


def _attrrob(*args: str) -> list[str]:
    return [sys.executable, "-m", "attrrob", *args]


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "python": platform.python_version()}


def rule_holds(args: argparse.Namespace, natural: dict, madry: dict) -> bool:
    if args.rule == "threshold":
        return madry["adversarial_accuracy"]["mean"] >= args.min_aa and natural["natural_accuracy"]["mean"] >= args.min_na
    return madry["adversarial_accuracy"]["ci_low"] > natural["adversarial_accuracy"]["ci_high"]


def search(args: argparse.Namespace) -> None:
    work, results = Path(args.work), Path(args.results)
    common = ["--dataset", args.dataset, "--config", str(args.config), "--no-progress", "--device", "cpu"]
    chosen = None
    for steps in args.grid:
        point = {"steps": steps, "dataset": args.dataset, "config": str(args.config), "rule": args.rule,
                 "min_aa": args.min_aa, "min_na": args.min_na, "eval_examples": args.eval_examples,
                 "eval_split": "validation",
                 "machine": _machine(), "methods": {}}
        for method in RULE_METHODS:
            out, ckpt = work / method, work / "checkpoints" / method
            load_before = _load()
            train_wall = _run(_attrrob("train", "--method", method, "--data", str(args.data), "--out", str(out),
                                       "--checkpoint-dir", str(ckpt), "--steps", str(steps), *common),
                              work / "logs" / f"{method}.log")
            acc_dir = out / f"accuracy_{steps}"
            eval_wall = _run(_attrrob("evaluate-accuracy", "--model", str(out / "model.pt"), "--data", str(args.data),
                                      "--out", str(acc_dir), "--num-examples", str(args.eval_examples), "--split", "validation",
                                      *args.accuracy_args, *common),
                             work / "logs" / f"{method}.log")
            trained = json.loads((out / "train_metrics.json").read_text(encoding="utf-8"))
            summary = json.loads((acc_dir / "summary.json").read_text(encoding="utf-8"))
            point["methods"][method] = {
                "natural_accuracy": summary["natural_accuracy"],
                "adversarial_accuracy": summary["adversarial_accuracy"],
                "accuracy_settings": summary["settings"],
                "train_steps_this_run": trained["steps_this_run"],
                "train_wall_time_s_total": trained["wall_time_s"],
                "train_wall_time_s_this_run": train_wall,
                "evaluate_wall_time_s": eval_wall,
                "load_average_before": load_before, "load_average_after": _load(),
                "train_settings": trained["settings"],
            }
        point["rule_holds"] = rule_holds(args, point["methods"]["natural"], point["methods"]["madry"])
        _write(results / f"grid_{steps:06d}.json", point)
        print(f"steps {steps}: natural NA {point['methods']['natural']['natural_accuracy']['mean']:.4f}, "
              f"madry AA {point['methods']['madry']['adversarial_accuracy']['mean']:.4f}, rule "
              f"{'holds' if point['rule_holds'] else 'fails'}", flush=True)
        if point["rule_holds"]:
            chosen = steps
            break
    _write(results / "chosen.json", {"steps": chosen, "grid": args.grid, "rule": args.rule,
                                     "min_aa": args.min_aa, "min_na": args.min_na})
    if chosen is None:
        print("the rule holds at no grid point; extend the grid", flush=True)


def _child_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timing(args: argparse.Namespace) -> None:
    """Seconds per training step of every method: short runs from scratch.

    Two numbers per method: the wall time per step that `attrrob train` itself measures (it
    grows with the machine's load), and the CPU time per step of the training process, taken as
    the difference between a run of `--timing-steps` steps and a run of 1 step (start-up, data
    loading and the first step cancel), which is far less sensitive to other jobs on the machine.
    """
    import yaml

    work, results = Path(args.work), Path(args.results)
    methods = args.methods or yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))["methods"]
    rows = {}
    for method in methods:
        load_before = _load()
        cpu, wall = {}, {}
        for steps in (1, args.timing_steps):
            out, ckpt = work / "timing" / f"{method}_{steps}", work / "timing" / "checkpoints" / f"{method}_{steps}"
            for folder in (out, ckpt):  # from scratch: a checkpoint left by an earlier timing would resume
                shutil.rmtree(folder, ignore_errors=True)
            before = _child_cpu()
            wall[steps] = _run(_attrrob("train", "--dataset", args.dataset, "--method", method, "--data", str(args.data),
                                        "--out", str(out), "--checkpoint-dir", str(ckpt), "--steps", str(steps),
                                        "--config", str(args.config), "--no-progress", "--device", "cpu",
                                        "--set", f"checkpoint_every={steps}", "--set", f"log_every={steps}"),
                               work / "logs" / f"timing_{method}.log")
            cpu[steps] = _child_cpu() - before
        trained = json.loads((out / "train_metrics.json").read_text(encoding="utf-8"))
        s = trained["settings"]
        per_step = s["batch_size"] / trained["examples_per_s"]
        cpu_per_step = (cpu[args.timing_steps] - cpu[1]) / (args.timing_steps - 1)
        rows[method] = {"seconds_per_step": per_step, "cpu_seconds_per_step": cpu_per_step,
                        "steps": trained["steps"], "process_wall_time_s": wall[args.timing_steps],
                        "process_cpu_time_s": cpu, "load_average_before": load_before, "load_average_after": _load(),
                        "m": s["m"], "approx_factor": s["approx_factor"], "pgd_steps": s["pgd_steps"],
                        "batch_size": s["batch_size"]}
        rows[method]["timing_steps"] = args.timing_steps
        print(f"{method}: {per_step:.3f} s/step wall, {cpu_per_step:.3f} CPU s/step", flush=True)
        # Written after every method, merged with the methods timed by earlier invocations.
        path = results / "timing.json"
        earlier = json.loads(path.read_text(encoding="utf-8"))["methods"] if path.exists() else {}
        _write(path, {"dataset": args.dataset, "config": str(args.config), "machine": _machine(),
                      "methods": {**earlier, **rows}})


def support(args: argparse.Namespace) -> None:
    """Non-zero pixel counts of the test images (the saliency map is zero wherever the pixel is)."""
    import numpy as np

    from attrrob.data import load_prepared

    x, _ = load_prepared(args.data, "test")
    counts = (x.flatten(1) != 0).sum(1).numpy()
    quantiles = {f"q{int(q * 100):02d}": float(np.quantile(counts, q)) for q in (0.01, 0.05, 0.10, 0.25, 0.5, 0.75, 0.9)}
    payload = {"dataset": args.dataset, "n_images": int(len(counts)), "pixels": int(x[0].numel()),
               "min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean()), **quantiles,
               "share_at_most": {str(k): float((counts <= k).mean()) for k in (25, 50, 75, 100, 150, 200)}}
    # A top-k attack whose mask lies inside the support for most images (so true gradients, not
    # the zero-direction fallback, drive it): the largest multiple of 25 not above the 5% quantile.
    small_k = int(quantiles["q05"] // 25 * 25)
    payload["small_k"] = {"k": small_k, "rule": "largest multiple of 25 not above the 5% quantile of support size",
                          "share_with_support_above_k": float((counts > small_k).mean())}
    _write(Path(args.results) / "support.json", payload)
    print(json.dumps(payload, indent=1))


# ----------------------------------------------------------------------------- rendering


def _pct(ci: dict) -> str:
    return f"{100 * ci['mean']:.1f} [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"


def record_run(args: argparse.Namespace) -> None:
    """The workflow run at the chosen budget: per job, Snakemake's benchmark wall and CPU seconds
    (results/benchmarks/<rule>/<wildcards>.tsv), each training's steps and s/step, and the whole run's
    elapsed wall time (between --started and --ended, epoch seconds, summed over invocations)."""
    workflow = args.workflow
    jobs = []
    for tsv in sorted((workflow / "results" / "benchmarks").rglob("*.tsv")):
        header, *rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8").splitlines() if line.strip()]
        values = dict(zip(header, rows[-1]))
        parts = tsv.relative_to(workflow / "results" / "benchmarks").with_suffix("").parts
        jobs.append({"rule": parts[0], "wildcards": "/".join(parts[1:]), "wall_s": float(values["s"]),
                     "cpu_s": float(values["cpu_time"]), "mean_load_percent": float(values["mean_load"])})
    training = {}
    for metrics_file in sorted((workflow / "results").glob("*/*/train_metrics.json")):
        m = json.loads(metrics_file.read_text(encoding="utf-8"))
        settings = m["settings"]
        training[f"{m['dataset']}/{m['method']}"] = {
            "steps": settings["steps"], "m": settings["m"], "approx_factor": settings["approx_factor"],
            "pgd_steps": settings["pgd_steps"], "wall_time_s": m["wall_time_s"],
            "seconds_per_step": m["wall_time_s"] / settings["steps"]}
    spans = [(float(a), float(b)) for a, b in zip(args.started, args.ended, strict=True)]
    payload = {"config": str(args.config), "jobs": jobs, "training": training,
               "invocations_wall_s": [b - a for a, b in spans], "elapsed_wall_s": sum(b - a for a, b in spans),
               "jobs_cpu_s": sum(j["cpu_s"] for j in jobs), "load_average_at_end": _load(),
               "note": args.note, "machine": _machine()}
    _write(args.results / "run.json", payload)
    print(f"wrote {args.results / 'run.json'}: {len(jobs)} jobs, elapsed {payload['elapsed_wall_s'] / 60:.1f} min")


def _render_run(run: dict) -> list[str]:
    lines = [f"The workflow at this budget (`snakemake all --cores 2 --configfile {run['config']}`), per job "
             "(Snakemake's benchmark files: wall and CPU seconds of the job's process tree):", "",
             "| job | wall | CPU time | s per training step |", "|---|---:|---:|---:|"]
    for job in run["jobs"]:
        per_step = run["training"].get(job["wildcards"], {}).get("seconds_per_step") if job["rule"] == "train" else None
        lines.append(f"| {job['rule']} {job['wildcards']} | {job['wall_s'] / 60:.1f} min | {job['cpu_s'] / 60:.1f} min | "
                     f"{'' if per_step is None else f'{per_step:.2f}'} |")
    lines += ["", f"All jobs: {run['jobs_cpu_s'] / 3600:.2f} CPU-hours; the whole run took "
              f"{run['elapsed_wall_s'] / 3600:.2f} h of wall time on 2 cores ("
              + " + ".join(f"{s / 60:.0f} min" for s in run["invocations_wall_s"])
              + f" over {len(run['invocations_wall_s'])} invocation(s)); load average at the end "
              f"{' / '.join(map(str, run['load_average_at_end']))}. {run.get('note') or ''}".rstrip(), ""]
    return lines


_BUDGETS_INTRO = [
    "# Training budgets for one CPU",
    "",
    "Generated from the result files named below, which are committed with the study they belong to "
    "(`studies/<study>/budget/`), by `attrrob study report --budgets docs/budgets.md` (which runs "
    "`python benchmarks/budget_search.py render`); do not edit by hand. The MNIST budget is the one "
    "chosen on the validation split for the MNIST study; the records of the earlier, test-split MNIST "
    "search are in git history (`git show 29da331^:benchmarks/results/budget_mnist/run.json` etc.).",
    "",
    "The budget of a CPU configuration is chosen by a rule that never looks at attribution metrics, "
    "so the comparison between methods stays honest: at a fixed ε and one optimiser setting for all "
    "methods, the smallest number of training steps on a grid at which Madry PGD-AT and natural training "
    "are what they claim. Every method then trains for those steps. Each grid point extends the same "
    "run (`attrrob train --steps N` resumes bit-identically from its checkpoint). Accuracies are on the "
    "first images of the split named in each section, with Wilson 95% intervals; AA under L∞ PGD (CE, random "
    "start) with the config's accuracy settings.",
    "",
]


def _render_grid(points: list[dict], chosen: dict) -> list[str]:
    """The search's settings, its rule and one table row per grid point."""
    first = points[0]
    madry_settings = first["methods"]["madry"]["train_settings"]
    acc = first["methods"]["madry"]["accuracy_settings"]
    if first["rule"] == "threshold":
        rule = (f"Madry AA ≥ {100 * first['min_aa']:.0f}% and natural NA ≥ {100 * first['min_na']:.0f}% "
                "(point estimates)")
    else:
        rule = "Madry's AA above natural's AA with non-overlapping 95% intervals"
    lines = [f"## {first['dataset']} (`{first['config']}`)", "",
             f"- Rule: {rule}; {first['eval_examples']} {first.get('eval_split', 'test')} images.",
             f"- Training: batch {madry_settings['batch_size']}, {madry_settings['optimizer']} "
             f"LR schedule {madry_settings['lr_schedule']}, Madry's inner PGD ε {madry_settings['eps']}, "
             f"{madry_settings['pgd_steps']} steps of {madry_settings['pgd_step_size']}.",
             f"- Evaluation: PGD ε {acc['eps']}, {acc['steps']} steps of {acc['step_size']}, seed {acc['seed']}.",
             (f"- Chosen: **{chosen['steps']} steps** (grid {chosen['grid']})." if chosen.get("steps")
              else "- Chosen: none yet (the search has not finished, or the rule held at no grid point)."), "",
             "| steps | Madry AA % | Madry NA % | natural NA % | natural AA % | rule | Madry train s (total) | load avg (1/5/15 min) |",
             "|---:|---|---|---|---|---|---:|---|"]
    for p in points:
        mad, nat = p["methods"]["madry"], p["methods"]["natural"]
        lines.append(f"| {p['steps']} | {_pct(mad['adversarial_accuracy'])} | {_pct(mad['natural_accuracy'])} | "
                     f"{_pct(nat['natural_accuracy'])} | {_pct(nat['adversarial_accuracy'])} | "
                     f"{'holds' if p['rule_holds'] else 'fails'} | {mad['train_wall_time_s_total']:.0f} | "
                     f"{' / '.join(map(str, mad['load_average_after']))} |")
    return lines + [""]


def _render_timing(t: dict, steps: int | None, last_grid_steps: int) -> list[str]:
    """Seconds per training step of each method, and the CPU time of training them all at the budget."""
    lines = [f"Seconds per training step (one short run of T steps per method, from scratch, "
             f"{t['machine']['omp_num_threads'] or 'default'} thread(s)). Wall s/step is what `attrrob train` "
             "measures and grows with the machine's load; CPU s/step = (CPU time of the T-step run − that of "
             "a 1-step run) / (T − 1), far less sensitive to other jobs (though not immune: shared caches and "
             "cores). A single measurement each:", "",
             "| method | m | approx factor | inner PGD steps | T | wall s/step | CPU s/step | training, CPU time (min) | load avg before |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    total = 0.0
    for method, r in t["methods"].items():
        # Before the search has chosen a budget, the largest grid point reached stands in.
        minutes = r["cpu_seconds_per_step"] * (steps or last_grid_steps) / 60
        total += minutes
        lines.append(f"| {method} | {r['m']} | {r['approx_factor']} | {r['pgd_steps']} | {r['timing_steps']} | "
                     f"{r['seconds_per_step']:.3f} | {r['cpu_seconds_per_step']:.3f} | {minutes:.1f} | "
                     f"{' / '.join(map(str, r['load_average_before']))} |")
    at = steps or last_grid_steps
    return lines + ["", f"Training all of them for {at} steps one after another: about {total:.0f} min of CPU time "
                    "(wall time on a loaded machine is longer).", ""]


def _render_support(s: dict) -> list[str]:
    """The support-size distribution of the test images and the second top-k setting chosen from it."""
    shares = ", ".join(f"≤ {k}: {100 * v:.0f}%" for k, v in sorted(s["share_at_most"].items(), key=lambda kv: int(kv[0])))
    return [f"Support size of the {s['n_images']} test images (non-zero pixels of {s['pixels']}; the "
            f"saliency map is zero outside it): min {s['min']}, 5% quantile {s['q05']:.0f}, "
            f"10% {s['q10']:.0f}, median {s['q50']:.0f}, max {s['max']}; share of images with a support of "
            f"{shares}.", "",
            f"A second top-k attack setting whose mask lies inside the support for most images: "
            f"k = {s['small_k']['k']} ({s['small_k']['rule']}; {100 * s['small_k']['share_with_support_above_k']:.1f}% "
            "of the test images have a larger support). Chosen from this distribution alone, not from results.", ""]


def _render_folder(folder: Path, grid: list[Path]) -> list[str]:
    """One result folder's section: the grid, then timing, support and the recorded run where present."""
    points = [json.loads(p.read_text(encoding="utf-8")) for p in grid]
    chosen = json.loads((folder / "chosen.json").read_text(encoding="utf-8")) if (folder / "chosen.json").exists() else {}
    lines = _render_grid(points, chosen)
    sources = [str(p.relative_to(REPO) if p.is_absolute() and p.is_relative_to(REPO) else p) for p in grid]
    timing_file = folder / "timing.json"
    if timing_file.exists():
        lines += _render_timing(json.loads(timing_file.read_text(encoding="utf-8")), chosen.get("steps"),
                                points[-1]["steps"])
        sources.append(str(timing_file))
    support_file = folder / "support.json"
    if support_file.exists():
        lines += _render_support(json.loads(support_file.read_text(encoding="utf-8")))
        sources.append(str(support_file))
    run_file = folder / "run.json"
    if run_file.exists():
        lines += _render_run(json.loads(run_file.read_text(encoding="utf-8")))
        sources.append(str(run_file))
    return lines + ["Sources: " + ", ".join(f"`{x}`" for x in sources) + ".", ""]


def render(args: argparse.Namespace) -> None:
    lines = list(_BUDGETS_INTRO)
    for folder in map(Path, args.results):
        grid = sorted(folder.glob("grid_*.json"))
        if grid:
            lines += _render_folder(folder, grid)
    out = Path(args.out)
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("search", "timing", "support"):
        q = sub.add_parser(name)
        q.add_argument("--dataset", required=True)
        q.add_argument("--data", type=Path, required=True, help="prepared data file")
        q.add_argument("--results", type=Path, required=True, help="folder of the result JSON files")
        if name != "support":
            q.add_argument("--config", type=Path, required=True)
            q.add_argument("--work", type=Path, required=True, help="folder for models, checkpoints, logs")
        if name == "search":
            q.add_argument("--grid", type=int, nargs="+", required=True)
            q.add_argument("--rule", choices=("threshold", "separated"), required=True)
            q.add_argument("--min-aa", type=float, default=0.80)
            q.add_argument("--min-na", type=float, default=0.98)
            q.add_argument("--eval-examples", type=int, default=1000)
            q.add_argument("--accuracy-args", nargs=argparse.REMAINDER, default=[],
                           help="extra options for attrrob evaluate-accuracy (last)")
        if name == "timing":
            q.add_argument("--timing-steps", type=int, default=20)
            q.add_argument("--methods", nargs="*", default=None)
    w = sub.add_parser("record-run", help="record the workflow run at the chosen budget (after it finished)")
    w.add_argument("--workflow", type=Path, required=True, help="the folder the workflow ran in")
    w.add_argument("--config", type=Path, required=True)
    w.add_argument("--results", type=Path, required=True, help="folder of the result JSON files")
    w.add_argument("--started", nargs="+", required=True, help="epoch seconds each invocation started")
    w.add_argument("--ended", nargs="+", required=True, help="epoch seconds each invocation ended")
    w.add_argument("--note", default="", help="one sentence on how the run went (interruptions, load)")
    r = sub.add_parser("render")
    r.add_argument("--results", type=Path, nargs="+", required=True)
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    {"search": search, "timing": timing, "support": support, "record-run": record_run,
     "render": render}[args.command](args)


if __name__ == "__main__":
    main()
