"""Everything a study shows, rebuilt from its committed folder alone (no workflow results needed):
collect-results' table.md and metrics.json over the committed seeds, the README's results
section, the study README's status, docs/budgets.md, and the HTML reports (the workflow's
notebooks, executed by papermill and rendered self-contained by nbconvert, as report.smk does).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from attrrob import outputs
from attrrob.cli import collect_results
from attrrob.errors import AttrrobError
from attrrob.experiments import SWEEPS_ROOT
from attrrob.study import findings, store
from attrrob.study.plan import RESULTS, job_label, read_json

STATUS_START, STATUS_END = "<!-- study-status:start -->", "<!-- study-status:end -->"
NOTEBOOKS = {"summary": "workflow/notebooks/summary.ipynb", "dataset": "workflow/notebooks/dataset.ipynb"}
HTML_TEMPLATE = "workflow/report/offline.html.j2"
BUDGET_SCRIPT = "benchmarks/budget_search.py"
SIZE_LIMIT_MB = 25  # what a clone carries for the study (issue 23)


def load_plan(study: Path) -> dict | None:
    """The study's plan.json (written by `attrrob study run`); None before the study started."""
    return read_json(study / "plan.json")


def committed(study: Path, plan: dict | None) -> list[str]:
    return store.committed_runs(study, plan["runs"]) if plan else []


def committed_seeds(study: Path, plan: dict | None, runs: list[str]) -> list[int]:
    """The planned seeds with at least one committed run (tables average over those)."""
    return [seed for seed in plan["seeds"] if any(run.startswith(f"seed~{seed}/") for run in runs)] if plan else []


def status(study: Path, plan: dict | None, runs: list[str]) -> str:
    """The study's status line, and what an incomplete study's numbers mean."""
    if plan is None:
        return (f"**Study not started**: no run is committed in `{study}` yet (`attrrob study run` writes its "
                "plan.json and commits each run as it finishes), so this section has no numbers yet.")
    total = len(plan["runs"])
    if len(runs) == total:
        return f"Study complete: all {total} planned runs of `{plan['config']}` are committed in `{study}`."
    return (f"**Study in progress: {len(runs)} of {total} planned runs committed** (`{plan['config']}`, "
            f"`{study}/plan.json`). Every number below comes from the committed runs alone: a run not yet "
            "committed shows as missing, intervals over seeds use the seeds committed so far, and nothing "
            "here is final until all runs are in.")


def runs_table(study: Path, runs: list[str]) -> str:
    """One row per committed run: wall and CPU time and the load around it (study_run.json)."""
    lines = ["| Run | Wall (min) | CPU (min) | Load average at start → end (1 min) |", "|---|---:|---:|---|"]
    wall = cpu = 0.0
    for name in runs:
        record = read_json(study / RESULTS / name / store.RECORD)
        wall, cpu = wall + record["wall_s"], cpu + record["cpu_s"]
        if record.get("reused_from"):
            lines.append(f"| `{name}` | – | – | the files of `{record['reused_from']}` (identical settings: "
                         "no job) |")
            continue
        lines.append(f"| `{name}`{_calls(study, name, record)} | {record['wall_s'] / 60:.1f} | "
                     f"{record['cpu_s'] / 60:.1f} | {record['load_average_start'][0]:.2f} → "
                     f"{record['load_average_end'][0]:.2f} |")
    lines += ["", f"Summed over these runs: {wall / 3600:.2f} h of wall time (runs overlap when the study "
              f"runs several at once), {cpu / 3600:.2f} CPU-hours. A run's wall and CPU time are summed over the "
              "runner's calls that ran it (a runner stopped by a signal keeps the time of the run it stopped "
              "for the call that finishes it; one killed outright keeps it up to the last of its minutely "
              "records); the load is the finishing call's. "
              "A run marked \"last call only\" was resumed before records kept stopped calls (its training "
              "went on from a checkpoint, as its train_metrics.json says). The cost table below has each "
              "job's own time in the finishing call, and the stopped calls' time apart."]
    return "\n".join(lines) + "\n"


def _calls(study: Path, name: str, record: dict) -> str:
    """' (N calls)' for a run stopped and resumed, ' (last call only: ...)' for one resumed before
    records kept stopped calls, '' for a run done in one call."""
    if record.get("stopped_calls"):
        return f" ({len(record['stopped_calls']) + 1} calls)"
    resumed = (read_json(study / RESULTS / name / "train_metrics.json") or {}).get("resumed_from_step")
    return f" (last call only: training resumed at step {resumed})" if resumed else ""


STOPPED = "stopped calls"


def cost_table(study: Path, runs: list[str]) -> str:
    """Per method (a sweep's runs apart), the mean CPU minutes of each job over its committed runs,
    from the Snakemake benchmark records each run's study_run.json lists: what a run costs."""
    groups: dict[str, list[dict]] = {}
    for name in runs:
        record = read_json(study / RESULTS / name / store.RECORD)
        if record.get("reused_from"):
            continue  # no job of its own
        parts = name.split("/")
        key = parts[2] + (" (sweep)" if len(parts) > 3 else "")
        jobs = {job_label(job["benchmark"], name): job["cpu_s"] for job in record["jobs"]}
        if record.get("stopped_calls"):
            # Benchmarks exist for finished jobs only: a stopped call's time (mostly the training it
            # stopped, which resumed from its checkpoint) is in no job's record.
            jobs[STOPPED] = sum(call["cpu_s"] for call in record["stopped_calls"])
        groups.setdefault(key, []).append(jobs)
    first = {"train": 0, "accuracy": 1}
    labels = sorted(dict.fromkeys(label for records in groups.values() for r in records for label in r),
                    key=lambda label: (label == STOPPED, label.startswith("validation"), first.get(label, 2)))
    lines = ["| Method | Runs | " + " | ".join(labels) + " | all jobs |", "|---|---:|" + "---:|" * (len(labels) + 1)]
    for key, records in groups.items():
        cells = []
        for label in labels:
            values = [r.get(label, 0.0) for r in records] if label == STOPPED else [r[label] for r in records if label in r]
            cells.append(f"{sum(values) / len(values) / 60:.1f}" if values else "–")
        total = sum(sum(r.values()) for r in records) / len(records) / 60
        lines.append(f"| {key} | {len(records)} | " + " | ".join(cells) + f" | {total:.1f} |")
    return ("CPU minutes per job (Snakemake's benchmark records; jobs `nice`d on a shared 2-core machine, one or "
            "two threads each: a training's `train_metrics.json` records its count), the mean over each method's "
            "committed runs" + (f"; \"{STOPPED}\" is the CPU time of a run's calls stopped before the one that "
            "finished it (no job of those calls has a benchmark record; most of it is the training the stop "
            "interrupted, which went on from its checkpoint, so that a resumed run's \"train\" has its last "
            "call only), 0 for a run done in one call" if any(STOPPED in r for records in groups.values()
                                                              for r in records) else "")
            + ":\n\n" + "\n".join(lines) + "\n")


def _where(study: Path, plan: dict) -> tuple:
    return study / RESULTS, plan["datasets"], plan["methods"], plan["attacks"]


def sweeps_root(study: Path) -> Path:
    """Where the study keeps its sweeps' sweep.json and selection.json (the workflow's layout)."""
    return study / SWEEPS_ROOT


def _sweeps(study: Path, plan: dict) -> list[dict]:
    """The study's sweeps with their committed runs' test numbers (run paths read below `study`)."""
    return collect_results.sweep_summaries(sweeps_root(study), plan["datasets"], plan["methods"],
                                           plan["attacks"][0], base=study)


def _tables(study: Path, plan: dict, seeds: list[int]) -> tuple[str, list[dict]]:
    """table.md's text (the tables over `seeds`, then the sweeps) and the sweeps' summaries."""
    sweeps = _sweeps(study, plan)
    return collect_results.tables(*_where(study, plan), seeds=seeds) + collect_results.sweeps_markdown(sweeps), sweeps


def readme_section(study: Path, tables: tuple[str, list[dict]] | None = None) -> str:
    """The README's results section: status, the sentences, per-run times and costs, then the
    tables (all from `study`; `tables`: `_tables`' result when the caller has it already)."""
    plan = load_plan(study)
    runs = committed(study, plan)
    parts = [f"<!-- Generated by `attrrob study report --study {study}` from {study}/plan.json and the "
             f"files under {study}/results/ (each run's study_run.json and result files); do not edit. -->",
             "", status(study, plan, runs), ""]
    seeds = committed_seeds(study, plan, runs)
    table, sweeps = (tables or _tables(study, plan, seeds)) if seeds else ("", [])
    if seeds:
        parts += [findings.Findings(*_where(study, plan), seeds=seeds, sweeps=sweeps).markdown()]
    if runs:
        parts += [runs_table(study, runs), cost_table(study, runs)]
    if seeds:
        parts += [table]
    return "\n".join(parts)


def filled(path: Path, start: str, end: str, body: str) -> str:
    """The text of `path` with `body` between its markers."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise AttrrobError(f"{path}: no '{start}' ... '{end}' section to fill")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", text)


def rendered_budgets(sources: list[Path]) -> str:
    """docs/budgets.md from the budget-search files of `sources` (benchmarks/budget_search.py render)."""
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "budgets.md"
        result = subprocess.run([sys.executable, BUDGET_SCRIPT, "render", "--results", *map(str, sources),
                                 "--out", str(rendered)], capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise AttrrobError(f"{BUDGET_SCRIPT} render failed: {last}")
        return rendered.read_text(encoding="utf-8")


def regenerated(study: Path, readme: Path | None = None, budgets: Path | None = None,
                budget_sources: list[Path] | None = None) -> dict[Path, str]:
    """Every text file rebuilt from the committed study folder, by path: <study>/table.md and
    metrics.json (once a run is committed), the study README's status section, `readme`'s
    results section, and the `budgets` page."""
    from attrrob.cli.collect_results import README_END, README_START

    plan = load_plan(study)
    runs = committed(study, plan)
    seeds = committed_seeds(study, plan, runs)
    texts: dict[Path, str] = {}
    tables = _tables(study, plan, seeds) if seeds else None
    if tables:
        texts[study / "table.md"], sweeps = tables
        metrics = collect_results.with_sweeps(collect_results.metrics(*_where(study, plan), seeds=seeds), sweeps)
        texts[study / "metrics.json"] = json.dumps(metrics, indent=2, sort_keys=True, allow_nan=True) + "\n"
    if (study / "README.md").is_file():
        body = status(study, plan, runs) + "\n\n" + (runs_table(study, runs) if runs else "")
        texts[study / "README.md"] = filled(study / "README.md", STATUS_START, STATUS_END, body)
    if readme is not None:
        texts[readme] = filled(readme, README_START, README_END, readme_section(study, tables))
    if budgets is not None:
        texts[budgets] = rendered_budgets(budget_sources or [study / "budget"])
    return texts


def differences(texts: dict[Path, str]) -> list[Path]:
    """The files whose bytes differ from what `regenerated` gives."""
    return [path for path, text in texts.items()
            if not path.is_file() or path.read_bytes() != text.encode("utf-8")]


def write_changed(texts: dict[Path, str]) -> list[Path]:
    """Write (atomically) the files whose bytes differ from `texts`; return them."""
    changed = differences(texts)
    for path in changed:
        outputs.write_text(path, texts[path])
    return changed


def html_reports(study: Path) -> list[Path]:
    """The workflow's HTML reports of the first committed seed, into <study>/reports/ (images
    embedded; no link leaves the page)."""
    plan = load_plan(study)
    seeds = committed_seeds(study, plan, committed(study, plan))
    if not seeds:
        return []
    common = ["-p", "results_dir", str(study / RESULTS / f"seed~{seeds[0]}"),
              "-p", "methods", json.dumps(plan["methods"]), "-p", "attacks", json.dumps(plan["attacks"]),
              "-p", "config_name", Path(plan["config"]).stem, "-p", "seeds", json.dumps([str(s) for s in seeds])]
    pages = {"summary": (NOTEBOOKS["summary"], ["-p", "datasets", json.dumps(plan["datasets"])])}
    # A sweep's table and sensitivity plots, its run paths read below the study folder.
    sweeps = (["-p", "sweeps_dir", str(sweeps_root(study)), "-p", "sweeps_base", str(study)]
              if sweeps_root(study).is_dir() else [])
    for dataset in plan["datasets"]:
        pages[dataset] = (NOTEBOOKS["dataset"], ["-p", "dataset", dataset, *sweeps])
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (notebook, own) in pages.items():
            executed = Path(tmp) / f"{name}.ipynb"
            _checked(["papermill", notebook, str(executed), "--kernel", "python3", "--cwd", ".",
                      "--no-progress-bar", *common, *own], name)
            _fixed_injected_id(executed)
            _checked(["jupyter", "nbconvert", "--to", "html", "--no-input", "--template-file", HTML_TEMPLATE,
                      str(executed), "--output-dir", tmp, "--output", name], name)
            target = study / "reports" / f"{name}.html"
            outputs.write_bytes(target, (Path(tmp) / f"{name}.html").read_bytes())
            written.append(target)
    return written


def _fixed_injected_id(notebook: Path) -> None:
    """papermill gives the cell it injects a random id, which the HTML keeps: a fixed one, so that a
    report regenerated from the same files is the same page (and its commit shows no change)."""
    content = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in content["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["id"] = "injected-parameters"
    notebook.write_text(json.dumps(content), encoding="utf-8")


def _checked(command: list[str], name: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise AttrrobError(f"report {name}: {command[0]}: not found on PATH; activate the environment attrrob "
                           "is installed in (README: install)") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AttrrobError(f"report {name}: {command[0]} failed: {last}")


def size_mb(study: Path) -> float:
    return store.folder_size(study) / 2**20
