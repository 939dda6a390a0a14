"""The runs of a workflow config: each data set × method × seed, and each sweep point × sweep seed.

One place lists them, with each run's folder, its settings and the evaluations it is due, so the
workflow (workflow/rules/common.smk) and other tools (`python -m attrrob.experiments CONFIG`) see
the same runs.

Layout. A main run lives in `results/seed~<s>/<dataset>/<method>/` (unchanged by sweeps). A sweep
point of `sweeps.<dataset>.<method>` lives below its method's folder, one path part per swept
setting in the order the config lists them: `results/seed~<s>/<dataset>/<method>/sweep/lam~0.3/`,
with a setting of another section than `train` named with its section (`attack.eps~0.05`).
A run whose training settings equal the main run's of its seed (a sweep of attack settings only)
evaluates that main run's model rather than training it again.

Selection (`select:` of a sweep): every sweep run is also evaluated on the validation split
(`<run>/validation/...`), `attrrob select` picks a point from those numbers only and writes
`results/sweeps/<dataset>/<method>/selection.json`; the method's main runs then train with the
chosen point's settings (their settings files are written once the selection exists).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import config, registry, run_settings
from .errors import ConfigError, short
from .result_files import ACCURACY_OUTPUTS, ATTACK_OUTPUTS, MODEL, PER_EXAMPLE, SUMMARY, TRAIN_METRICS, TRAIN_OUTPUTS

SECTIONS = ("train", "attack", "accuracy")
SWEEP_DIR = "sweep"
SWEEPS_ROOT = "results/sweeps"
# Selection metrics: (evaluation, summary key, the better direction a rule is usually given).
SELECTION_METRICS = {"IN": ("attack", "topk_intersection"), "tau": ("attack", "kendall_tau"),
                     "AA": ("accuracy", "adversarial_accuracy"), "NA": ("accuracy", "natural_accuracy")}
SELECTION_RULES = ("max", "min")
VALIDATION_ATTACK_OUTPUTS = (SUMMARY, PER_EXAMPLE)  # validation attacks keep no examples or traces


def value_text(value: Any) -> str:
    """A swept value as its path part writes it (YAML's spelling: true, 0.3, 1e-05)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def point_label(point: Sequence[tuple[str, str, Any]]) -> str:
    """`lam~0.3/attack.eps~0.05`: the path of a sweep point below `<method>/sweep/`."""
    return "/".join((f"{key}~{value_text(value)}" if section == "train" else
                     f"{section}.{key}~{value_text(value)}") for section, key, value in point)


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    seed: int
    point: tuple = ()  # ((section, key, value), ...); () for a main run
    selected: bool = False  # a main run that trains with the value its method's selection chose

    @property
    def name(self) -> str:
        main = f"seed~{self.seed}/{self.dataset}/{self.method}"
        return f"{main}/{SWEEP_DIR}/{point_label(self.point)}" if self.point else main

    @property
    def dir(self) -> str:
        return f"results/{self.name}"


def sweep_folder(dataset: str, method: str) -> str:
    return f"{SWEEPS_ROOT}/{dataset}/{method}"


class Experiment:
    """The runs of one workflow config (its merged mapping, `hyperparameters` typed as in a file)."""

    def __init__(self, workflow_config: Mapping, hyperparameters: Mapping):
        self.datasets = list(workflow_config["datasets"])
        self.methods = list(workflow_config["methods"])
        self.attacks = list(workflow_config["attacks"])
        self.seeds = list(workflow_config.get("seeds") or [0])
        self.steps = workflow_config.get("train_steps")
        self.num_examples = (workflow_config.get("evaluation") or {}).get("num_examples")
        self.hyperparameters = hyperparameters
        self.sweeps = check_sweeps(workflow_config.get("sweeps") or {}, self)

    # --- enumeration -------------------------------------------------------------------------
    def sweep(self, dataset: str, method: str) -> dict | None:
        return self.sweeps.get(dataset, {}).get(method)

    def main_runs(self) -> list[Run]:
        return [Run(d, m, s, selected=bool((self.sweep(d, m) or {}).get("select")))
                for d in self.datasets for m in self.methods for s in self.seeds]

    def sweep_runs(self, dataset: str | None = None, method: str | None = None) -> list[Run]:
        runs = []
        for (d, m), sweep in self._sweeps_in_order():
            if (dataset, method) in ((None, None), (d, m)):
                runs += [Run(d, m, s, point) for point in sweep["points"] for s in sweep["seeds"]]
        return runs

    def runs(self) -> list[Run]:
        return self.main_runs() + self.sweep_runs()

    def _sweeps_in_order(self):
        return [((d, m), self.sweeps[d][m]) for d in self.datasets for m in self.methods
                if m in self.sweeps.get(d, {})]

    def by_name(self) -> dict[str, Run]:
        return {run.name: run for run in self.runs()}

    # --- settings ----------------------------------------------------------------------------
    def hyperparameters_of(self, run: Run, chosen: Sequence | None = None) -> dict:
        """The workflow's hyper-parameters with the run's swept (or chosen) values set in."""
        point = run.point if run.point else (chosen or ())
        if not point:
            return self.hyperparameters
        hyper = copy.deepcopy(dict(self.hyperparameters))
        body = hyper.setdefault(run.dataset, {}) or {}
        hyper[run.dataset] = body
        for section, key, value in point:
            target = body.setdefault(section, {}) or {}
            body[section] = target
            if section == "train":
                target = target.setdefault(run.method, {}) or {}
                body["train"][run.method] = target
            target[key] = value
        return hyper

    def train_settings(self, run: Run, chosen: Sequence | None = None) -> dict:
        return run_settings.train(run.dataset, run.method, self.hyperparameters_of(run, chosen),
                                  steps=self.steps, replicate=run.seed)

    def model_run(self, run: Run) -> Run:
        """The run whose model `run` evaluates: the main run of its seed when their training settings
        agree (a sweep of attack settings), else the run itself."""
        if not run.point or run.seed not in self.seeds or (self.sweep(run.dataset, run.method) or {}).get("select"):
            return run
        main = Run(run.dataset, run.method, run.seed)
        return main if self.train_settings(run) == self.train_settings(main) else run

    def evaluation_settings(self, run: Run, chosen: Sequence | None = None) -> dict[str, dict]:
        """Each test evaluation's settings (accuracy and every attack), bound to the run's model."""
        hyper, train = self.hyperparameters_of(run, chosen), self.train_settings(run, chosen)
        out = {"accuracy": run_settings.accuracy(run.dataset, hyper, self.num_examples)}
        for attack in self.attacks:
            out[attack] = run_settings.attack(run.dataset, attack, hyper, self.num_examples)
        return {name: run_settings.of_model(settings, train) for name, settings in out.items()}

    def validation_settings(self, run: Run) -> dict[str, dict]:
        """The validation evaluations a selection reads: accuracy, and its attack for IN/τ."""
        select = (self.sweep(run.dataset, run.method) or {}).get("select")
        if not select or not run.point:
            return {}
        hyper, train = self.hyperparameters_of(run), self.train_settings(run)
        count = select["num_examples"]
        out = {"accuracy": run_settings.accuracy(run.dataset, hyper, count)}
        if SELECTION_METRICS[select["metric"]][0] == "attack":
            out[select["attack"]] = run_settings.attack(run.dataset, select["attack"], hyper, count)
        return {name: run_settings.of_model(settings, train) for name, settings in out.items()}

    # --- files -------------------------------------------------------------------------------
    def evaluation_jobs(self, run: Run, split: str = "test") -> dict[str, tuple[str, str, tuple]]:
        """(results folder, benchmark file, output names) of each evaluation of one run."""
        root = f"{run.dir}/validation" if split == "validation" else run.dir
        bench = f"results/benchmarks/{{}}/{'validation/' if split == 'validation' else ''}{run.name}"
        names = self.validation_settings(run) if split == "validation" else ["accuracy", *self.attacks]
        jobs = {}
        for name in names:
            if name == "accuracy":
                jobs[name] = (f"{root}/accuracy", f"{bench.format('evaluate_accuracy')}.tsv", ACCURACY_OUTPUTS)
            else:
                outputs = VALIDATION_ATTACK_OUTPUTS if split == "validation" else ATTACK_OUTPUTS
                jobs[name] = (f"{root}/attack_{name}", f"{bench.format('evaluate_attack')}/{name}.tsv", outputs)
        return jobs

    def sweep_spec(self, dataset: str, method: str) -> dict:
        """What `attrrob select` and the reports read of one sweep (results/sweeps/<d>/<m>/sweep.json)."""
        sweep = self.sweep(dataset, method)
        points = []
        for point in sweep["points"]:
            runs = {str(s): Run(dataset, method, s, point).dir for s in sweep["seeds"]}
            points.append({"label": point_label(point), "point": [list(entry) for entry in point], "runs": runs})
        return {"dataset": dataset, "method": method, "seeds": sweep["seeds"], "swept": sweep["swept"],
                "points": points, "select": sweep.get("select"),
                "main_runs": {str(s): Run(dataset, method, s).dir for s in self.seeds}}

    def sync(self, run: Run, chosen: Sequence | None = None) -> None:
        """Write the run's settings files, each newer than its job's outputs exactly when those were
        made with other settings (run_settings.sync)."""
        model_run = self.model_run(run)
        train = self.train_settings(run, chosen)
        model = None
        if model_run == run:
            outputs = [f"{run.dir}/{name}" for name in TRAIN_OUTPUTS]
            outputs.append(f"results/benchmarks/train/{run.name}.tsv")
            recorded = run_settings.made_with(f"{run.dir}/{TRAIN_METRICS}")
            run_settings.sync(f"{run.dir}/settings.json", train, outputs, recorded)
        else:
            recorded = run_settings.made_with(f"{model_run.dir}/{TRAIN_METRICS}")
        if run_settings.matches(train, recorded):
            model = f"{model_run.dir}/{MODEL}"
        wanted = {"test": self.evaluation_settings(run, chosen), "validation": self.validation_settings(run)}
        for split, settings in wanted.items():
            for name, (folder, bench, names) in self.evaluation_jobs(run, split).items():
                outputs = [f"{folder}/{leaf}" for leaf in names] + [bench]
                recorded = run_settings.made_with(f"{folder}/summary.json")
                run_settings.sync(f"{folder}/settings.json", settings[name], outputs, recorded, model)


def check_sweeps(sweeps: Any, experiment: Experiment) -> dict:
    """`sweeps:` checked (every swept value as `hyperparameters:` values are) and expanded:
    {dataset: {method: {seeds, swept: [[section, key, values]], points, select}}}."""
    if not isinstance(sweeps, Mapping):
        raise ConfigError(f"sweeps: expected a mapping of data sets, got {short(sweeps)}")
    out: dict = {}
    for dataset, methods in sweeps.items():
        # A sweep of a data set or method the config does not run is skipped (a --config datasets=...
        # narrowing must not fail on it), but a name nobody knows is a typo.
        if dataset not in config.datasets():
            raise ConfigError(f"sweeps.{dataset}: unknown data set (known: {', '.join(config.datasets())})")
        if not isinstance(methods, Mapping):
            raise ConfigError(f"sweeps.{dataset}: expected a mapping of methods")
        for method, body in methods.items():
            if method not in registry.method_names():
                raise ConfigError(f"sweeps.{dataset}.{method}: unknown method "
                                  f"(known: {', '.join(registry.method_names())})")
            if dataset in experiment.datasets and method in experiment.methods:
                out.setdefault(dataset, {})[method] = _check_sweep(body, dataset, method, experiment)
    return out


def _check_sweep(body: Any, dataset: str, method: str, experiment: Experiment) -> dict:
    where = f"sweeps.{dataset}.{method}"
    if not isinstance(body, Mapping) or not body:
        raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(SECTIONS)}) to swept settings")
    for key in body:
        if key not in (*SECTIONS, "seeds", "select"):
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join((*SECTIONS, 'seeds', 'select'))})")
    swept = []
    for section in SECTIONS:
        for key, values in (body.get(section) or {}).items():
            here = f"{where}.{section}.{key}"
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{here}: expected a non-empty list of values, got {short(values)}")
            if any(isinstance(v, (list, dict)) for v in values):
                raise ConfigError(f"{here}: a sweep lists single values (numbers, words, true/false)")
            values = [config.typed_from_text(v) for v in values]
            for value in values:
                config.check_setting(dataset, method, section, key, value, here)
            if len({value_text(v) for v in values}) != len(values):
                raise ConfigError(f"{here}: each value once, got {short(values)}")
            swept.append([section, key, values])
    if not swept:
        raise ConfigError(f"{where}: names no setting to sweep")
    seeds = body.get("seeds", experiment.seeds[:1])
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        raise ConfigError(f"{where}.seeds: expected a list of distinct seeds, got {short(seeds)}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{where}.seeds: expected integers, got {short(seed)}")
        config.check_limits(config.SEED, seed, f"{where}.seeds")
    points = [()]
    for section, key, values in swept:
        points = [(*point, (section, key, value)) for point in points for value in values]
    sweep = {"seeds": list(seeds), "swept": swept, "points": points, "select": None}
    if body.get("select") is not None:
        sweep["select"] = _check_select(body["select"], dataset, swept, where, experiment)
    for point in points:  # every combination resolves (e.g. approx_factor must divide m)
        run = Run(dataset, method, seeds[0], point)
        try:
            experiment.train_settings(run)
            experiment.evaluation_settings(run)
        except ConfigError as exc:
            raise ConfigError(f"{where} point {point_label(point)}: {exc}") from None
    return sweep


def _check_select(select: Any, dataset: str, swept: list, where: str, experiment: Experiment) -> dict:
    where = f"{where}.select"
    known = ("metric", "rule", "attack", "num_examples", "na_guard")
    if not isinstance(select, Mapping):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(known)}")
    for key in select:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")
    if select.get("metric") not in SELECTION_METRICS:
        raise ConfigError(f"{where}.metric: expected one of {', '.join(SELECTION_METRICS)}, got {short(select.get('metric'))}")
    if select.get("rule") not in SELECTION_RULES:
        raise ConfigError(f"{where}.rule: expected max or min, got {short(select.get('rule'))}")
    others = [f"{section}.{key}" for section, key, _ in swept if section != "train"]
    if others:
        raise ConfigError(f"{where}: a selection chooses training settings; {', '.join(others)} is not one "
                          "(sweep it in a sweep without select:)")
    count = select.get("num_examples")
    if isinstance(count, bool) or not isinstance(count, int):
        raise ConfigError(f"{where}.num_examples: expected the number of validation images, got {short(count)}")
    config.check_value("attack", "num_examples", count, f"{where}.num_examples")
    attack = select.get("attack")
    if SELECTION_METRICS[select["metric"]][0] == "attack":
        if not isinstance(attack, str):
            raise ConfigError(f"{where}.attack: {select['metric']} is measured under an attack; name one")
        try:
            config.resolve_attack(dataset, attack, config.WorkflowHyperparameters(experiment.hyperparameters))
        except ConfigError as exc:
            raise ConfigError(f"{where}.attack: {exc}") from None
    elif attack is not None:
        raise ConfigError(f"{where}.attack: {select['metric']} is an accuracy; drop attack")
    guard = select.get("na_guard")
    if guard is not None and (isinstance(guard, bool) or not isinstance(guard, (int, float))
                              or not 0 <= guard <= 100):
        raise ConfigError(f"{where}.na_guard: expected accuracy points in [0, 100], got {short(guard)}")
    return {"metric": select["metric"], "rule": select["rule"], "attack": attack, "num_examples": count,
            "na_guard": None if guard is None else float(guard)}


def main(argv: list[str] | None = None) -> None:
    """List a config's runs: `python -m attrrob.experiments config/config.yaml [more.yaml ...]`
    (later files override earlier ones key by key, as --configfile does); one run folder a line."""
    import yaml

    args = list(sys.argv[1:] if argv is None else argv)
    merged: dict = {}
    for path in ["config/config.yaml", *args] if Path("config/config.yaml").is_file() else args:
        merged.update(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    defaults = {"attacks": ["topk"], "seeds": [0], "evaluation": {}}
    merged = {**defaults, **merged}
    try:
        experiment = Experiment(merged, config.typed_from_text(merged.get("hyperparameters") or {}))
    except ConfigError as exc:
        raise SystemExit(f"attrrob: error: {exc}") from None
    for run in experiment.runs():
        print(run.dir + ("  (settings from the selection)" if run.selected else ""))


if __name__ == "__main__":
    main()
