"""The runs of a study, read from the workflow's own plan (`snakemake <target> --summary`).

Nothing here knows the workflow's wildcards: a *run* is a folder under `results/` that holds a
training's `train_metrics.json` among the target's outputs, and it owns every output below it
except those in a sub-folder holding other runs (a sweep's `sweep/lam~0.3/` runs are runs of their
own). Any other output under `results/` that no run owns, such as a sweep's selection file
(`results/sweeps/<dataset>/<method>/selection.json`), is a *study file*, committed once it is built;
what `attrrob study report` rebuilds from the committed runs (AGGREGATES) is not. So runs of any
layout (seeds, sweeps) are listed without change here.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from attrrob.errors import AttrrobError
from attrrob.result_files import MODEL, TRAIN_METRICS

RESULTS = "results"
# The one file every training writes: the folder holding it is a run.
RUN_MARKER = TRAIN_METRICS
# Shared inputs of every run (raw and prepared data): built once, before any run.
UPSTREAM = "data"
# Seed trees: results/seed~<s>/, one per training seed.
SEED_TREE_PREFIX = "seed~"
# What collect-results writes under results/ (rebuilt from the committed runs, never committed as
# is) and the per-job benchmark files (committed with their run): not study files.
AGGREGATES = frozenset({"metrics.json", "table.md", "plots", "benchmarks"})
# The folder a sweep's runs lie in (results/seed~0/mnist/sarkar/sweep/lam~0.5).
SWEEP = "sweep"
# Large files that stay in DVC, never in the study folder: the trained weights.
NOT_COMMITTED = (MODEL,)


@dataclass(frozen=True)
class Run:
    name: str  # the run's folder under results/, e.g. "seed~0/mnist/sarkar"
    outputs: tuple[str, ...]  # the workflow's output files of this run (paths from the workflow root)

    @property
    def folder(self) -> str:
        return f"{RESULTS}/{self.name}"

    @property
    def kept(self) -> tuple[str, ...]:
        """The outputs the study folder keeps (everything but the weights)."""
        return tuple(f for f in self.outputs if PurePosixPath(f).name not in NOT_COMMITTED)


@dataclass(frozen=True)
class Plan:
    upstream: tuple[str, ...]
    runs: tuple[Run, ...]
    study_files: tuple[str, ...]  # results files outside every run (built after the runs)

    def to_json(self, config: str) -> dict:
        """What the study folder records of the plan (plan.json): its runs and the lists the
        tables are collected over, derived from the runs' folders (seed~<s>/<dataset>/<method>)."""
        parts = [PurePosixPath(run.name).parts for run in self.runs]
        # In the config's order (Snakemake lists outputs so): the README's tables follow it. Test
        # attacks only: a sweep's selection attack runs on validation images (<run>/validation/...)
        # and has no test result for the tables to show.
        attacks = dict.fromkeys(PurePosixPath(f).parent.name[len("attack_"):] for run in self.runs
                                for f in run.outputs if PurePosixPath(f).parent.name.startswith("attack_")
                                and "validation" not in PurePosixPath(f).parts)
        return {"config": config, "runs": [run.name for run in self.runs],
                "study_files": list(self.study_files),
                "seeds": sorted({int(p[0][len(SEED_TREE_PREFIX):]) for p in parts
                                 if p[0].startswith(SEED_TREE_PREFIX) and len(p) >= 3}),
                "datasets": list(dict.fromkeys(p[1] for p in parts if len(p) >= 3)),
                "methods": list(dict.fromkeys(p[2] for p in parts if len(p) == 3)),
                "attacks": list(attacks)}


def parse_summary(text: str) -> list[str]:
    """The output files of a `snakemake --summary` table (the first column after its header)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("output_file\t"))
    except StopIteration:
        raise AttrrobError("snakemake --summary printed no 'output_file' table; is the target right?") from None
    return [line.split("\t", 1)[0] for line in lines[start + 1:] if "\t" in line]


def group(files: list[str]) -> Plan:
    """Split a target's output files into upstream data, runs and study files (module docstring)."""
    run_dirs = {str(PurePosixPath(f).parent) for f in files
                if PurePosixPath(f).name == RUN_MARKER and f.startswith(RESULTS + "/")}
    upstream, study_files, owned = [], [], {d: [] for d in run_dirs}
    for path in files:
        owner = owning_run(path, run_dirs)
        if owner is not None:
            owned[owner].append(path)
        elif PurePosixPath(path).parts[0] == UPSTREAM:
            upstream.append(path)
        elif _is_study_file(path):
            study_files.append(path)
    runs = [Run(d[len(RESULTS) + 1:], tuple(owned[d])) for d in sorted(run_dirs, key=_listing_order(files, run_dirs))]
    return Plan(tuple(upstream), tuple(runs), tuple(study_files))


def owning_run(path: str, run_dirs: set[str]) -> str | None:
    """The deepest run folder above `path`, unless `path` lies in a sub-folder holding other runs."""
    parents = [str(p) for p in PurePosixPath(path).parents]
    owner = next((p for p in parents if p in run_dirs), None)
    if owner is None:
        return None
    below = PurePosixPath(path).relative_to(owner).parts
    if len(below) > 1:
        branch = f"{owner}/{below[0]}"
        if any(d.startswith(branch + "/") for d in run_dirs):
            return None
    return owner


def _is_study_file(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return len(parts) > 2 and parts[0] == RESULTS and parts[1] not in AGGREGATES


def _listing_order(files: list[str], run_dirs: set[str]):
    """Runs in the order Snakemake lists them (config order), not alphabetically; a run nested in
    another (a sweep's point) right after the run it lies in. Snakemake lists a main run's files
    before or after its sweep's as the files on disk decide, so a plan whose nested runs sort by
    their own first file would change order from one machine to the next (and the README's tables
    with it)."""
    index = {}
    for i, f in enumerate(files):
        index.setdefault(str(PurePosixPath(f).parent), i)

    def first(run_dir: str) -> int:  # its own files and those of runs nested in it
        return min((i for d, i in index.items() if d == run_dir or d.startswith(run_dir + "/")), default=len(files))

    def key(run_dir: str) -> tuple[int, int, int]:
        outer = next((p for p in reversed(PurePosixPath(run_dir).parents) if str(p) in run_dirs), None)
        if outer is None:
            return first(run_dir), 0, 0
        return first(str(outer)), 1, first(run_dir)

    return key


def is_sweep(run: Run) -> bool:
    """A run of a sweep (its folder lies below a `sweep/` folder): other runs may use its selection."""
    return SWEEP in PurePosixPath(run.name).parts


def ordered(runs: tuple[Run, ...], order: list[str]) -> list[Run]:
    """Runs whose folder names one of `order` first, in that order (e.g. cheap methods first);
    the others after; within a method its sweep runs first (a selection the main runs train with
    is made from them); ties keep the plan's order."""
    rank = {name: i for i, name in enumerate(order)}

    def key(run: Run) -> tuple[int, int]:
        parts = PurePosixPath(run.name).parts
        return (min((rank[p] for p in parts if p in rank), default=len(order)), 0 if is_sweep(run) else 1)

    return sorted(runs, key=key)


def benchmark_files(root: Path, run: Run, run_names: set[str]) -> list[str]:
    """The Snakemake benchmark files of a run's jobs: results/benchmarks/<rule>/<run>.tsv and
    results/benchmarks/<rule>/<run>/<job>.tsv (the workflow names them by the run's wildcards), and
    the same below <rule>/validation/ for its jobs on the validation split (a sweep point's), not
    those of a run nested below it."""
    found = []
    for rule in sorted((root / RESULTS / "benchmarks").glob("*")):
        for base in (rule, rule / "validation"):
            candidates = [base / f"{run.name}.tsv", *sorted((base / run.name).glob("*.tsv"))]
            for tsv in candidates:
                relative = tsv.relative_to(base).with_suffix("").as_posix()
                if tsv.is_file() and (relative == run.name or relative not in run_names):
                    found.append(str(tsv.relative_to(root)))
    return found


def job_label(benchmark: str, run: str) -> str:
    """The job a benchmark file of `run` (a path `benchmark_files` returns) records: train, accuracy,
    an attack's name; those on the validation split marked "validation ..."; "" for another path."""
    parts = benchmark.split("/", 3)
    if len(parts) < 4 or parts[:2] != [RESULTS, "benchmarks"]:
        return ""
    rule, rest = parts[2], parts[3]
    validation = rest.startswith("validation/")
    tail = rest[len("validation/"):] if validation else rest
    name = tail[len(run) + 1:-len(".tsv")] if tail.startswith(run + "/") else ""
    label = {"train": "train", "evaluate_accuracy": "accuracy"}.get(rule, name or rule)
    return f"validation {label}" if validation else label


def summary(root: Path, snakemake_args: list[str], target: str = "all") -> Plan:
    """The plan of `target` under the workflow at `root` with `snakemake_args` (e.g. --configfile).

    Reading the workflow also writes each job's settings.json (common.smk), which the study
    compares with the committed ones."""
    command = ["snakemake", target, *snakemake_args, "--summary"]
    try:
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise AttrrobError("snakemake: not found on PATH; activate the environment attrrob is installed in "
                           "(README: install)") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AttrrobError(f"{' '.join(command)} failed in {root}: {last}")
    return group(parse_summary(result.stdout))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise AttrrobError(f"{path}: unreadable ({exc}); restore it from git") from None
