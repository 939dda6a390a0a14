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
RESOURCES = config["resources"]
REPORTS = config["reports"]

# Which GPU a job gets is decided at run time by `attrrob ... --device auto` (one lock file
# per GPU); Snakemake's `gpu` resource only bounds how many such jobs run at once.
GPU_PER_JOB = 1 if RESOURCES["gpu"] else 0


def _hyperparameters_file():
    """The config file whose `hyperparameters:` the CLIs read (they read no other key).

    A file given with --configfile overrides config/config.yaml key by key, so the last such
    file is the one in use. The CLIs read exactly one file, so every hyper-parameter must come
    from it: a mix (from several files or from --config) is refused rather than half applied.
    """
    files = [Path(f) for f in workflow.overwrite_configfiles] or [
        Path("config/config.yaml")
    ]
    path = files[-1]
    with open(path, encoding="utf-8") as handle:
        in_file = (yaml.safe_load(handle) or {}).get("hyperparameters") or {}
    if in_file != config["hyperparameters"]:
        raise WorkflowError(
            f"config key 'hyperparameters' must come from one config file ({path}); "
            "move the overrides given elsewhere (another --configfile or --config) into it"
        )
    absolute = path.absolute()
    # A relative path keeps shell commands and logs the same in every clone of the repo.
    if absolute.is_relative_to(Path.cwd()):
        return str(absolute.relative_to(Path.cwd()))
    return str(absolute)


HYPERPARAMETERS_FILE = _hyperparameters_file()
# Every setting the jobs will read, checked now: a bad value stops `snakemake -n` before any job.
if attrrob_config is not None:
    try:
        attrrob_config.check_all_settings(
            HYPERPARAMETERS_FILE, DATASETS, METHODS, ATTACKS
        )
    except ConfigError as exc:
        sys.exit("attrrob: error: " + " ".join(str(exc).split()))
# Shown in the reports' titles: which configuration produced them.
CONFIG_NAME = Path(HYPERPARAMETERS_FILE).stem


def mirror_option(wildcards):
    """`--mirror DIR` when the config names a local copy of this data set's raw files."""
    mirror = config["data"]["mirror"]
    if isinstance(mirror, dict):
        mirror = mirror.get(wildcards.dataset)
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


def _overrides(wildcards):
    return config["hyperparameters"].get(wildcards.dataset, {})


# The settings functions below are parameters of rules that the commands ignore; they make
# Snakemake's params rerun trigger rerun exactly the jobs whose own settings changed (a new
# attack setting reruns attacks, not training).
def prepare_settings(wildcards):
    return json.dumps(_overrides(wildcards).get("prepare", {}), sort_keys=True)


def train_settings(wildcards):
    train = _overrides(wildcards).get("train", {})
    own = {key: train.get(key, {}) for key in ("common", wildcards.method)}
    return json.dumps(own, sort_keys=True)


def accuracy_settings(wildcards):
    return json.dumps(_overrides(wildcards).get("accuracy", {}), sort_keys=True)


def attack_settings(wildcards):
    # A variant's own settings (and its base attack, under "attack") on top of the config's.
    overrides = _overrides(wildcards)
    own = dict(overrides.get("attack", {}))
    own.update(overrides.get("attack_variants", {}).get(wildcards.attack, {}))
    return json.dumps(own, sort_keys=True)


def steps_option(wildcards):
    steps = config["train_steps"]
    return f"--steps {steps}" if steps is not None else ""


def evaluation_options(wildcards):
    """Options shared by both evaluation commands."""
    num_examples = config["evaluation"]["num_examples"]
    return f"--num-examples {num_examples}" if num_examples is not None else ""


def prepared(dataset):
    return f"data/prepared/{dataset}.npz"


def prepared_data(wildcards):
    # ancient(): a DVC checkout gives files arbitrary modification times; a prepared file that
    # merely looks newer must not retrain every model (content changes rerun through the
    # params/code triggers and through upstream jobs that do run).
    return ancient(prepared(wildcards.dataset))


def trained_model(wildcards):
    return ancient(f"results/{wildcards.dataset}/{wildcards.method}/model.pt")


def raw_data(wildcards):
    return ancient(f"data/raw/{wildcards.dataset}")


def result_files(datasets):
    """Every training and evaluation output the reports of `datasets` read."""
    files = []
    for dataset in datasets:
        for method in METHODS:
            run = f"results/{dataset}/{method}"
            files += [
                f"{run}/train_log.csv",
                f"{run}/train_metrics.json",
                f"{run}/accuracy/summary.json",
            ]
            for attack in ATTACKS:
                files += [
                    f"{run}/attack_{attack}/summary.json",
                    f"{run}/attack_{attack}/per_example.csv",
                    f"{run}/attack_{attack}/examples.npz",
                ]
    return files


def summary_report_inputs(wildcards):
    return result_files(DATASETS)


def dataset_report_inputs(wildcards):
    return result_files([wildcards.dataset])


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
