# Helpers shared by the rules: config-derived values and path lists. Rules stay thin: they
# name files and call `attrrob <verb>`; every decision derived from the config lives here.

import json
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

DATASETS = config["datasets"]
METHODS = config["methods"]
ATTACKS = config["attacks"]
SEEDS = config["seeds"]
RESOURCES = config["resources"]
REPORTS = config["reports"]

# Which GPU a job gets is decided at run time by `attrrob ... --device auto` (one lock file
# per GPU); Snakemake's `gpu` resource only bounds how many such jobs run at once.
GPU_PER_JOB = 1 if RESOURCES["gpu"] else 0


def _hyperparameters_file():
    """The config file whose `hyperparameters:` `attrrob prepare` reads.

    A file given with --configfile overrides config/config.yaml key by key, so the last such
    file is the one in use. Training and evaluation read their settings.json files, which hold
    the merged config (files and --config alike); `prepare` still reads one file, so its
    settings must come from it: a `prepare:` override elsewhere is refused rather than ignored.
    """
    files = [Path(f) for f in workflow.overwrite_configfiles] or [
        Path("config/config.yaml")
    ]
    path = files[-1]
    with open(path, encoding="utf-8") as handle:
        in_file = (yaml.safe_load(handle) or {}).get("hyperparameters") or {}
    for dataset, body in config["hyperparameters"].items():
        given = (body or {}).get("prepare") if isinstance(body, dict) else None
        if given != ((in_file.get(dataset) or {}).get("prepare")):
            raise WorkflowError(
                f"config key 'hyperparameters.{dataset}.prepare' must come from one config "
                f"file ({path}); move the overrides given elsewhere (another --configfile or "
                "--config) into it"
            )
    absolute = path.absolute()
    # A relative path keeps shell commands and logs the same in every clone of the repo.
    if absolute.is_relative_to(Path.cwd()):
        return str(absolute.relative_to(Path.cwd()))
    return str(absolute)


HYPERPARAMETERS_FILE = _hyperparameters_file()
if attrrob_config is None:
    sys.exit(
        "attrrob: error: the workflow resolves every run's settings with the attrrob package; "
        "install it where Snakemake runs (pip install -e .)"
    )
# --config gives nested values as text; they mean what the same YAML means in a config file.
HYPERPARAMETERS = attrrob_config.typed_from_text(config["hyperparameters"])
# Every setting the jobs will read, checked now: a bad value stops `snakemake -n` before any job.
try:
    # The config file first, so that its mistakes are named with the file; then the merged config.
    attrrob_config.check_all_settings(HYPERPARAMETERS_FILE, DATASETS, METHODS, ATTACKS)
    attrrob_config.check_all_settings(
        attrrob_config.WorkflowHyperparameters(HYPERPARAMETERS),
        DATASETS,
        METHODS,
        ATTACKS,
    )
except ConfigError as exc:
    sys.exit("attrrob: error: " + " ".join(str(exc).split()))
# Shown in the reports' titles: which configuration produced them.
CONFIG_NAME = Path(HYPERPARAMETERS_FILE).stem


def seed_dir(seed):
    """The results of one training seed: one tree per seed, laid out as a one-seed run's."""
    return f"results/seed~{seed}"


def _experiment():
    """Every run of the config (attrrob.experiments): main runs and sweep points."""
    from attrrob import experiments

    return experiments.Experiment(config, HYPERPARAMETERS)


try:
    EXPERIMENT = _experiment()
except ConfigError as exc:
    sys.exit("attrrob: error: " + " ".join(str(exc).split()))
RUNS = EXPERIMENT.by_name()
# Where the reports read sweeps from ("" without sweeps: the reports read as before).
SWEEPS_DIR = "results/sweeps" if EXPERIMENT.sweeps else ""
# Attacks a selection measures on validation (an attack variant need not be in `attacks:`).
SELECTION_ATTACKS = sorted(
    {
        sweep["select"]["attack"]
        for body in EXPERIMENT.sweeps.values()
        for sweep in body.values()
        if sweep["select"] and sweep["select"]["attack"]
    }
)


def run_of(wildcards):
    return RUNS[wildcards.run]


def run_dir(dataset, method, seed):
    return f"{seed_dir(seed)}/{dataset}/{method}"


def sync_settings_files():
    """Each job's settings.json, resolved now and kept in step with its outputs (attrrob.run_settings):
    a file is newer than the job's outputs exactly when they were made with other settings, so
    Snakemake reruns exactly those jobs, in this invocation. An evaluation's settings name its
    model (by the digest of its training settings), so a retrained model reruns them too. The main
    runs of a method whose sweep selects a value are written once the selection exists
    (selected_settings); each sweep's sweep.json, which `attrrob select` and the reports read, here.
    """
    from attrrob import experiments, run_settings

    for run in RUNS.values():
        if not run.selected:
            EXPERIMENT.sync(run)
    for dataset, body in EXPERIMENT.sweeps.items():
        for method, sweep in body.items():
            folder = experiments.sweep_folder(dataset, method)
            selection = f"{folder}/selection.json"
            run_settings.sync(
                f"{folder}/sweep.json",
                EXPERIMENT.sweep_spec(dataset, method),
                [selection] if sweep["select"] else [],
                run_settings.made_with(selection),
            )


def warn_about_runs_before_seeds():
    """Results of the layout before seeds (results/<dataset>/<method>/) are not read: say where
    they would go rather than retrain beside them without a word."""
    old = [f"results/{d}/{m}" for d in DATASETS for m in METHODS]
    old = [run for run in old if Path(f"{run}/train_metrics.json").exists()]
    if old:
        print(
            f"attrrob: note: {len(old)} run(s) in the layout before seeds ({old[0]}, ...) are "
            f"not read; to reuse them, move results/<dataset> to {seed_dir(0)}/<dataset>",
            file=sys.stderr,
        )


warn_about_runs_before_seeds()
try:
    sync_settings_files()
except ConfigError as exc:
    sys.exit("attrrob: error: " + " ".join(str(exc).split()))


def selected_settings(run):
    """A main run of a method whose sweep selects: its settings files, from the selection file
    (once that exists: until then the checkpoint holds the job back). Content that did not change
    is not rewritten, so an unchanged choice retrains nothing."""
    from attrrob import selection

    path = checkpoints.select.get(dataset=run.dataset, method=run.method).output[0]
    try:
        EXPERIMENT.sync(run, chosen=selection.chosen_point(path))
    except AttrrobError as exc:
        sys.exit("attrrob: error: " + " ".join(str(exc).split()))


def settings_file(evaluation=None, split="test"):
    """Input function: the settings file of a run's training (or of `evaluation` on `split`)."""

    def settings(wildcards):
        run = run_of(wildcards)
        if run.selected:
            selected_settings(run)
        if evaluation is None:
            return f"{run.dir}/settings.json"
        name = (
            getattr(wildcards, "attack", None) if evaluation == "attack" else "accuracy"
        )
        return f"{EXPERIMENT.evaluation_jobs(run, split)[name][0]}/settings.json"

    return settings


def run_param(field):
    """The run's data set or method, as a params function."""
    return lambda wildcards: getattr(run_of(wildcards), field)


def checkpoint_dir(wildcards):
    run = run_of(wildcards)
    return f"checkpoints/{run.dataset}/{run.method}"


def mirror_option(wildcards):
    """`--mirror DIR` when the config names a local copy of this data set's raw files."""
    mirror = config["data"]["mirror"]
    if isinstance(mirror, dict):
        mirror = mirror.get(wildcards.dataset)
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


def folder_of(name):
    """A rule's output folder, as a params function (the folder of its output `name`)."""
    return lambda wildcards, output: str(Path(output[name]).parent)


def prepare_settings(wildcards):
    # A parameter the command ignores: Snakemake's params trigger reruns `prepare` when it changes.
    body = config["hyperparameters"].get(wildcards.dataset) or {}
    return json.dumps(body.get("prepare", {}), sort_keys=True)


def prepared(dataset):
    return f"data/prepared/{dataset}.npz"


def prepared_data(wildcards):
    # ancient(): a DVC checkout gives files arbitrary modification times; a prepared file that
    # merely looks newer must not retrain every model (content changes rerun through the
    # params/code triggers and through upstream jobs that do run).
    dataset = getattr(wildcards, "dataset", None) or run_of(wildcards).dataset
    return ancient(prepared(dataset))


def trained_model(wildcards):
    # Not ancient(): Snakemake does not rerun a job whose only link to a rerun job is ancient
    # (so a retrained model would keep its old evaluations until the next invocation). A model
    # that merely looks newer (a DVC checkout) is handled in sync_settings_files instead. A sweep
    # point of attack settings evaluates its main run's model (EXPERIMENT.model_run).
    return f"{EXPERIMENT.model_run(run_of(wildcards)).dir}/model.pt"


def raw_data(wildcards):
    return ancient(f"data/raw/{wildcards.dataset}")


def validation_results(wildcards):
    """The validation summaries a sweep's selection reads (every point × sweep seed)."""
    files = []
    for run in EXPERIMENT.sweep_runs(wildcards.dataset, wildcards.method):
        for folder, _, _ in EXPERIMENT.evaluation_jobs(run, "validation").values():
            files.append(f"{folder}/summary.json")
    return files


def result_files(datasets):
    """Every training and evaluation output the reports of `datasets` read: of every run (main
    runs and sweep points), and each sweep's sweep.json and selection file."""
    files = []
    for run in RUNS.values():
        if run.dataset not in datasets:
            continue
        model_run = EXPERIMENT.model_run(run)
        files += [
            f"{model_run.dir}/train_log.csv",
            f"{model_run.dir}/train_metrics.json",
        ]
        files.append(f"{run.dir}/accuracy/summary.json")
        for attack in ATTACKS:
            files += [
                f"{run.dir}/attack_{attack}/{name}"
                for name in ("summary.json", "per_example.csv", "examples.npz")
            ]
    for dataset, body in EXPERIMENT.sweeps.items():
        if dataset in datasets:
            for method, sweep in body.items():
                folder = f"results/sweeps/{dataset}/{method}"
                files.append(f"{folder}/sweep.json")
                if sweep["select"]:
                    files.append(f"{folder}/selection.json")
    return files


def summary_report_inputs(wildcards):
    return result_files(DATASETS)


def dataset_report_inputs(wildcards):
    return result_files([wildcards.dataset])


def seeds_option():
    """The seeds collect-results aggregates over (results/seed~<s>/ each)."""
    return " ".join(str(seed) for seed in SEEDS)


def json_list(values):
    """A list as JSON text: the notebooks take list parameters as JSON strings."""
    return json.dumps(list(values))


def report_targets():
    reports = ["reports/summary.html"]
    reports += [f"reports/{dataset}.html" for dataset in DATASETS]
    return reports + ["results/metrics.json"]


def slurm_partition(gpus):
    """The Slurm partition of a job that asks for `gpus` GPUs (its `gpu` resource).

    Only the Slurm executor reads the `slurm_partition` resource: GPU jobs go to
    resources.slurm_partitions.gpu, every other job (data, reports, and training and
    evaluation under `gpu: false`) to .cpu, since many clusters refuse CPU-only jobs on GPU
    partitions. A null name becomes "", which the executor leaves out of sbatch, so the
    job goes to the cluster's default partition.
    """
    partitions = RESOURCES["slurm_partitions"]
    return (partitions["gpu"] if gpus else partitions["cpu"]) or ""
