"""The GPU check's report: the Markdown and JSON files of benchmarks/gpu_check.py, its verdict, and
the summary of tests/test_cuda.py's JUnit XML it includes (kept apart from the measurements)."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

LOSS_RTOL = 1e-4        # reduced precision: the one-step loss change that would be acceptable


def cuda_tests(junit: Path, exit_code: int | None = None) -> dict:
    """Counts and failures of a `pytest --junitxml` run of tests/test_cuda.py, and pytest's exit code
    (non-zero with no failure listed: cut short, e.g. by pytest-timeout's session limit)."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as exc:
        return {"file": str(junit), "exit_code": exit_code, "error": f"unreadable: {exc}"}
    cases = list(root.iter("testcase"))
    failures, skipped, rows = [], 0, []
    for case in cases:
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped += case.find("skipped") is not None
        outcome = "skipped" if case.find("skipped") is not None else "FAILED" if problem is not None else "passed"
        measured = ", ".join(f"{p.get('name')} {p.get('value')}" for p in case.iter("property"))
        rows.append([case.get("name"), outcome, case.get("time"), measured])
        if problem is not None:
            message = (problem.get("message") or "").strip().splitlines()
            failures.append(f"{case.get('name')}: {message[0][:200] if message else problem.tag}")
    return {"file": junit.name, "exit_code": exit_code, "tests": len(cases), "failed": len(failures),
            "skipped": skipped, "passed": len(cases) - len(failures) - skipped, "failures": failures, "rows": rows}


def tests_verdict(tests: dict) -> tuple[str, bool]:
    if "error" in tests:
        return f"FAILED: CUDA tests' results {tests['file']} {tests['error']} (pytest exit {tests['exit_code']})", False
    if tests["failures"]:
        return "FAILED: " + "; ".join(tests["failures"]), False
    if not tests["passed"] or tests["exit_code"] not in (0, None):
        return (f"INCOMPLETE: {tests['passed']} CUDA tests passed, none failed, but pytest exited "
                f"{tests['exit_code']} (cut short by its time limit?)"), False
    return f"all {tests['passed']} CUDA correctness tests passed ({tests['skipped']} skipped)", True


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


def _render_header(report: dict) -> list[str]:
    env = report["environment"]
    if env["mode"] == "cpu-smoke":
        lines = ["# attrrob GPU check — cpu-smoke (NOT a GPU result)", "",
                 "This is the **cpu-smoke** run: the check's code at tiny sizes on the CPU. It shows that the "
                 "check runs; none of its numbers is a GPU measurement.", ""]
    else:
        lines = [f"# attrrob GPU check — {env.get('gpu_name', env['device'])}", ""]
    gpu = (f" ({env.get('gpu_name')}, {env.get('gpu_memory_gib')} GiB, capability {env.get('capability')}, driver "
           f"{env.get('driver')}, {env.get('gpu_count')} GPU(s) visible)" if "gpu_name" in env else "")
    return lines + [
        f"{env['date_utc']} UTC · torch {env['torch']} (project pins {env['torch_pinned']}) · CUDA "
        f"{env['cuda_runtime']} · cuDNN {env['cudnn']} · Python {env['python']} · numpy {env['numpy']} · "
        f"scipy {env['scipy']} · pyyaml {env['yaml']} · tqdm {env['tqdm']}",
        f"device {env['device']}{gpu} · {env['cpu_count']} CPUs, {env['cpu_threads']} torch threads, load average "
        f"{env['load_avg']} · float32 precision {env['float32_precision']['values']} · golden weights "
        f"{_fmt(env['golden_weights'])} · MNIST files {_fmt(env['mnist_found'])}",
        f"time budget {env['budget_s']} s; used {report.get('elapsed_s', '–')} s. Sections: "
        + ", ".join(f"{k} {v}" for k, v in report["sections"].items()), ""]


def _render_tests(tests: dict) -> list[str]:
    lines = ["## CUDA correctness (tests/test_cuda.py, device vs CPU on the same weights and inputs)", ""]
    if "error" in tests:
        return lines + [f"{tests['file']}: {tests['error']}", ""]
    lines += [f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped of {tests['tests']}, "
              f"pytest exit code {tests['exit_code']} ({tests['file']})", ""]
    lines += _table(["test", "outcome", "s", "measured"], tests["rows"]) + [""]
    return lines + [f"- FAILED {f}" for f in tests["failures"]] + ([""] if tests["failures"] else [])


def _render_evaluator(e: dict) -> list[str]:
    lines = [f"## Evaluator speed (MNIST top-k; {e.get('source')}; {e.get('iterations_timed')} iterations "
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
    return lines


def _render_training(t: dict) -> list[str]:
    lines = ["## Training speed (paper settings, random data of the right shapes)", ""]
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
    return lines


def _render_autocast(rows: list[dict]) -> list[str]:
    labels = [k for k in rows[0] if isinstance(rows[0][k], dict)][1:]
    lines = [f"## Reduced precision: change of the one-step loss against IEEE fp32 (tolerance {LOSS_RTOL:g}; "
             "fp32 stays the default)", ""]
    return lines + _table(["data", "method"] + [f"{lab} rel diff" for lab in labels] + [f"{lab} time ×" for lab in labels],
                          [[r["dataset"], r["method"]] + [r[lab].get("rel_diff", r[lab].get("error")) for lab in labels]
                           + [r[lab].get("time_ratio") for lab in labels] for r in rows]) + [""]


def render(report: dict) -> str:
    lines = _render_header(report)
    if "cuda_tests" in report:
        lines += _render_tests(report["cuda_tests"])
    if report["evaluator"].get("runs"):
        lines += _render_evaluator(report["evaluator"])
    if report["training"].get("rows"):
        lines += _render_training(report["training"])
    if report["autocast"].get("rows"):
        lines += _render_autocast(report["autocast"]["rows"])
    if report.get("verdict"):
        lines += ["## Verdict", "", report["verdict"], ""]
    return "\n".join(lines)


def verdict(report: dict) -> tuple[str, bool]:
    """The report's last line and whether the run is a success (tests passed, every section complete)."""
    parts, ok = [], True
    if "cuda_tests" in report:
        text, ok = tests_verdict(report["cuda_tests"])
        parts.append(text)
    errors = [f"training {r['dataset']}/{r['method']}: {r['error']}" for r in report["training"]["rows"] if "error" in r]
    cut = [f"{k} ({v})" for k, v in report["sections"].items() if v != "done"]
    if cut:
        ok = False
        parts.append("INCOMPLETE: not done or cut short: " + ", ".join(cut))
    elif not errors:
        parts.append("every speed section complete")
    if errors:
        ok = False
        parts.append("; ".join(errors))
    if report["environment"]["mode"] == "cpu-smoke":
        parts.append("cpu-smoke: not a GPU result")
    return ". ".join(parts).rstrip(".") + ".", ok


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
