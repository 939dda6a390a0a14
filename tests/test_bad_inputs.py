"""Bad inputs, as a new user makes them: every one is a clear one-line error, never a traceback,
and nothing already computed is touched.

Each case runs a CLI in-process (the same `main(argv)` the `attrrob` command calls) in a
workspace that holds earlier results: a prepared data file, a trained model with its outputs
and checkpoint, an evaluation. For every case: a non-zero exit, no "Traceback", exactly one
error line, that line names the key or file at fault, and every earlier file keeps its bytes.
A few cases run as real processes and through `snakemake -n` (which must fail before any job).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attrrob.cli import collect_results, evaluate, evaluate_accuracy, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Earlier results: digits data, a 2-step natural model (outputs + checkpoint), its accuracy."""
    import torch

    from attrrob import config, data, training
    from attrrob.evaluation import evaluate_accuracy as run_accuracy, write_accuracy_outputs

    root = tmp_path_factory.mktemp("bad_inputs")
    data.download("digits", root / "raw")
    data.prepare("digits", root / "raw", root / "data/digits.npz")
    x, y = data.load_prepared(root / "data/digits.npz", "train")
    settings = config.train_settings("digits", "natural", overrides={"steps": 2, "checkpoint_every": 1})
    training.train(settings, x, y, root / "results/natural", checkpoint_dir=root / "checkpoints/natural",
                   progress=False)
    from attrrob.checkpoint import load_model

    model, _ = load_model(root / "results/natural/model.pt")
    xt, yt = data.load_prepared(root / "data/digits.npz", "test")
    acc = config.accuracy_settings("digits", overrides={"num_examples": 8, "steps": 1, "autoattack": False}
                                   if "autoattack" in config.accuracy_settings("digits") else
                                   {"num_examples": 8, "steps": 1})
    write_accuracy_outputs(root / "results/natural/accuracy",
                           run_accuracy(model, xt, yt, acc, dataset="digits", method="natural", progress=False))
    (root / "a_file").write_text("not a directory\n")
    (root / "data/mnist_like.npz").write_bytes((root / "data/digits.npz").read_bytes())
    (root / "data/no_manifest.npz").write_bytes((root / "data/digits.npz").read_bytes())
    (root / "data/mnist_like.json").write_text(
        (root / "data/digits.json").read_text().replace('"dataset": "digits"', '"dataset": "mnist"'))
    (root / "corrupt.pt").write_bytes(b"\x80\x04 not a torch file")
    torch.save({"weights": 1}, root / "foreign.pt")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write(root: Path, name: str, text: str) -> str:
    path = root / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


MODULES = {"train": train, "evaluate": evaluate, "evaluate-accuracy": evaluate_accuracy,
           "collect-results": collect_results}


def base_argv(verb: str, ws: Path, out: str | None = None) -> list[str]:
    data, model = str(ws / "data/digits.npz"), str(ws / "results/natural/model.pt")
    common = ["--device", "cpu", "--no-progress"]
    if verb == "train":
        return ["--dataset", "digits", "--method", "natural", "--data", data,
                "--out", out or str(ws / "new/train"), "--checkpoint-dir", str(ws / "new/ck"), *common]
    if verb == "evaluate":
        return ["--model", model, "--data", data, "--dataset", "digits", "--attack", "topk",
                "--out", out or str(ws / "new/attack"), *common]
    if verb == "evaluate-accuracy":
        return ["--model", model, "--data", data, "--dataset", "digits",
                "--out", out or str(ws / "new/accuracy"), *common]
    return ["--results-dir", str(ws / "results_missing"), "--datasets", "digits", "--metrics", str(ws / "new/m.json")]


# (verb, extra argv, fragment the one error line must contain). {ws} is the workspace; a
# "config:NAME=TEXT" item writes TEXT to configs/NAME and passes its path.
def sets(verb, pairs):
    return [(verb, ["--set", item], fragment) for item, fragment in pairs]


TRAIN_SETS = sets("train", [
    ("eps=-0.1", "--set eps: must be ≥ 0, got -0.1"),
    ("pgd_step_size=0", "--set pgd_step_size: must be > 0"),
    ("pgd_step_size=-0.01", "--set pgd_step_size: must be > 0"),
    ("pgd_steps=-1", "--set pgd_steps: must be ≥ 0"),
    ("steps=0", "--set steps: must be ≥ 1"),
    ("batch_size=0", "--set batch_size: must be ≥ 1"),
    ("m=0", "--set m: must be ≥ 1"),
    ("approx_factor=0", "--set approx_factor: must be ≥ 1"),
    ("approx_factor=3", "approx_factor: must divide m=10"),
    ("lam=-1", "--set lam: must be ≥ 0"),
    ("beta=-0.5", "--set beta: must be ≥ 0"),
    ("inner_ig_weight=-1", "--set inner_ig_weight: must be ≥ 0"),
    ("inner_ig_weight=big", "--set inner_ig_weight: expected a number or null"),
    ("log_every=0", "--set log_every: must be ≥ 1"),
    ("checkpoint_every=0", "--set checkpoint_every: must be ≥ 1"),
    ("ig_max_batch=-1", "--set ig_max_batch: must be ≥ 0"),
    ("seed=-1", "--set seed: must be ≥ 0"),
    ("momentum=-0.1", "--set momentum: must be ≥ 0"),
    ("weight_decay=-1e-4", "--set weight_decay: must be ≥ 0, got -0.0001"),  # YAML 1.1 reads -1e-4 as text
    ("eps=nan", "--set eps: expected a number, got 'nan'"),
    ("eps=.nan", "--set eps: must be ≥ 0, got nan"),
    ("optimizer=sgd", "--set optimizer: expected one of adam, momentum"),
    ("loss_reduction=avg", "--set loss_reduction: expected one of sum, mean"),
    ("lr_schedule=[[0, -0.1]]", "lr_schedule: every learning rate must be > 0"),
    ("lr_schedule=[[0, 0]]", "lr_schedule: every learning rate must be > 0"),
    ("lr_schedule=[[5, 0.1]]", "lr_schedule: expected [[0, lr]"),
    ("lr_schedule=[[0, 0.1], [0, 0.2]]", "lr_schedule: expected [[0, lr]"),
    ("lr_schedule=[[0, fast]]", "lr_schedule: expected [[0, lr]"),
    ("lr_schedule=0.1", "--set lr_schedule: expected a list"),
    ("steps=many", "--set steps: expected an integer"),
    ("steps=1.5", "--set steps: expected an integer"),
    ("batch_size=true", "--set batch_size: expected an integer"),
    ("eps=[1]", "--set eps: expected a number"),
    ("stepz=3", "override stepz=3: unknown training setting"),
    ("steps", "--set 'steps': expected key=value"),
    ("=3", "--set '=3': expected key=value"),
])
ATTACK_SETS = sets("evaluate", [
    ("eps=-0.1", "--set eps: must be ≥ 0, got -0.1"),
    ("step_size=0", "--set step_size: must be > 0"),
    ("iterations=0", "--set iterations: must be ≥ 1"),
    ("k_attack=0", "--set k_attack: must be ≥ 1"),
    ("k_attack=65", "digits.attack.k_attack: must be ≤ 64"),
    ("k_metric=100", "digits.attack.k_metric: must be ≤ 64"),
    ("ig_steps=0", "--set ig_steps: must be ≥ 1"),
    ("restarts=0", "--set restarts: must be ≥ 1"),
    ("random_restarts=0", "--set random_restarts: must be ≥ 1"),
    ("ties=random", "--set ties: expected one of expected, index"),
    ("zero_direction=jump", "--set zero_direction: expected one of random_sign, stay"),
    ("batch_images=0", "--set batch_images: must be ≥ 1"),
    ("ig_max_batch=-2", "--set ig_max_batch: must be ≥ 0"),
    ("num_examples=-3", "--set num_examples: must be ≥ 1"),
    ("num_examples=some", "--set num_examples: expected an integer or all"),
    ("iterations=2.5", "--set iterations: expected an integer"),
    ("lam=1", "override lam=1: unknown attack setting"),
])
ACCURACY_SETS = sets("evaluate-accuracy", [
    ("eps=-0.1", "--set eps: must be ≥ 0"),
    ("steps=0", "--set steps: must be ≥ 1"),
    ("step_size=0", "--set step_size: must be > 0"),
    ("step_size=-1", "--set step_size: must be > 0"),
    ("batch_size=0", "--set batch_size: must be ≥ 1"),
    ("iterations=3", "override iterations=3: unknown accuracy setting"),
])
OPTIONS = [
    ("train", ["--steps", "0"], "--set steps: must be ≥ 1"),
    ("train", ["--steps", "-5"], "--set steps: must be ≥ 1"),
    ("train", ["--steps", "ten"], "argument --steps: invalid int value"),
    ("train", ["--threads", "0"], "--threads must be ≥ 1"),
    ("train", ["--method", "trades"], "argument --method: invalid choice"),
    ("train", ["--dataset", "cifar"], "argument --dataset: invalid choice"),
    ("train", ["--set", "lam=0.3", "--method", "ig_sum_norm"], "ig_sum_norm has no λ"),
    ("train", ["--set", "beta=0.3", "--method", "sarkar"], "sarkar has no β"),
    ("evaluate", ["--num-examples", "0"], "--set num_examples: must be ≥ 1, got 0"),
    ("evaluate", ["--num-examples", "-3"], "--set num_examples: must be ≥ 1, got -3"),
    ("evaluate", ["--num-examples", "many"], "argument --num-examples: expected a positive integer or 'all'"),
    ("evaluate", ["--num-examples", "100000"], "num_examples=100000 exceeds the 360 test images"),
    ("evaluate", ["--batch-images", "0"], "--batch-images must be ≥ 1"),
    ("evaluate", ["--memory-budget-gb", "0"], "--memory-budget-gb must be positive"),
    ("evaluate", ["--save-examples", "-1"], "--save-examples must be ≥ 0"),
    ("evaluate", ["--target", "{ws}/a_file"], "--target is only used by the targeted attack"),
    ("evaluate", ["--attack", "saliency"], "unknown attack 'saliency': expected an attack"),
    ("evaluate", ["--threads", "-1"], "--threads must be ≥ 1"),
    ("evaluate-accuracy", ["--num-examples", "0"], "--set num_examples: must be ≥ 1, got 0"),
    ("evaluate-accuracy", ["--num-examples", "361"], "num_examples=361 exceeds the 360 test images"),
    ("evaluate-accuracy", ["--num-examples", "2.5"], "argument --num-examples: expected a positive integer"),
    ("evaluate-accuracy", ["--threads", "0"], "--threads must be ≥ 1"),
]
CONFIG_FILES = [
    ("train", "typo.yaml=hyperparamters:\n  digits: {train: {common: {steps: 3}}}\n",
     "typo.yaml: unknown top-level key 'hyperparamters'"),
    ("evaluate", "typo2.yaml=datasets: [digits]\nattack: [topk]\n", "typo2.yaml: unknown top-level key 'attack'"),
    ("train", "nested.yaml=hyperparameters:\n  digits: {train: {common: {lamda: 1}}}\n",
     "hyperparameters.digits.train.common.lamda: unknown key"),
    ("train", "method.yaml=hyperparameters:\n  digits: {train: {trades: {lam: 1}}}\n",
     "hyperparameters.digits.train.trades: unknown key"),
    ("train", "dataset.yaml=hyperparameters:\n  cifar: {}\n", "hyperparameters.cifar: unknown dataset"),
    ("train", "type.yaml=hyperparameters:\n  digits: {train: {common: {steps: many}}}\n",
     "hyperparameters.digits.train.common.steps: expected an integer"),
    ("train", "neg.yaml=hyperparameters:\n  digits: {train: {natural: {eps: -0.1}}}\n",
     "neg.yaml: hyperparameters.digits.train.natural.eps: must be ≥ 0, got -0.1"),
    ("evaluate", "neg2.yaml=hyperparameters:\n  digits: {attack: {eps: -0.1}}\n",
     "neg2.yaml: hyperparameters.digits.attack.eps: must be ≥ 0"),
    ("train", "exp.yaml=hyperparameters:\n  digits: {train: {common: {weight_decay: 2e-4}}}\n",
     "weight_decay: expected a number, got the text '2e-4' (YAML reads a number without a dot as text"),
    ("evaluate", "ties.yaml=hyperparameters:\n  digits: {attack: {ties: first}}\n",
     "hyperparameters.digits.attack.ties: expected one of expected, index"),
    ("evaluate", "k.yaml=hyperparameters:\n  digits: {attack: {k_attack: 100}}\n", "k_attack: must be ≤ 64"),
    ("evaluate", "variant.yaml=hyperparameters:\n  digits: {attack_variants: {topk: {attack: topk}}}\n",
     "attack_variants.topk: 'topk' is an attack's own name"),
    ("evaluate", "variant2.yaml=hyperparameters:\n  digits: {attack_variants: {small: {attack: topk, k_attack: 65}}}\n",
     "digits.attack_variants.small.k_attack: must be ≤ 64"),
    ("evaluate-accuracy", "zero.yaml=hyperparameters:\n  digits: {accuracy: {num_examples: 0}}\n",
     "hyperparameters.digits.accuracy.num_examples: must be ≥ 1"),
    ("evaluate-accuracy", "big.yaml=hyperparameters:\n  digits: {accuracy: {num_examples: 5000}}\n",
     "num_examples=5000 exceeds the 360 test images"),
    ("train", "input.yaml=hyperparameters:\n  digits: {input: {height: 9}}\n",
     "hyperparameters.digits.input: the input shape is fixed by the data set"),
    ("train", "syntax.yaml=hyperparameters:\n  digits: {train: [\n", "syntax.yaml line 3: invalid YAML"),
    ("train", "tabs.yaml=hyperparameters:\n\tdigits: {}\n", "tabs.yaml line 2: invalid YAML"),
    ("train", "list.yaml=- digits\n- natural\n", "list.yaml: top level must be a mapping"),
    ("train", "scalar.yaml=just text\n", "scalar.yaml: top level must be a mapping"),
    ("train", "hyper.yaml=hyperparameters: [digits]\n", "hyper.yaml: 'hyperparameters' must be a mapping"),
    ("train", "section.yaml=hyperparameters:\n  digits: {train: 3}\n", "hyperparameters.digits.train must be a mapping"),
]
PATHS = [
    ("train", ["--out", "{ws}/a_file"], "--out {ws}/a_file is an existing file"),
    ("evaluate", ["--out", "{ws}/a_file"], "--out {ws}/a_file is an existing file"),
    ("evaluate-accuracy", ["--out", "{ws}/a_file"], "--out {ws}/a_file is an existing file"),
    ("train", ["--checkpoint-dir", "{ws}/a_file"], "--checkpoint-dir {ws}/a_file is an existing file"),
    ("train", ["--config", "{ws}/absent.yaml"], "config file {ws}/absent.yaml does not exist"),
    ("train", ["--config", "{ws}/data"], "config file {ws}/data is a directory"),
    ("train", ["--config", "{ws}/corrupt.pt"], "corrupt.pt: not a text (UTF-8) file"),
    ("train", ["--data", "{ws}/absent.npz"], "prepared file {ws}/absent.npz does not exist; run `attrrob prepare --dataset digits"),
    ("train", ["--data", "{ws}/data/no_manifest.npz"], "no_manifest.json (beside {ws}/data/no_manifest.npz) does not exist; run `attrrob prepare --dataset digits"),
    ("train", ["--data", "{ws}/data"], "--data {ws}/data is a directory"),
    ("train", ["--data", "{ws}/data/mnist_like.npz"], "holds 'mnist', not 'digits'"),
    ("evaluate", ["--data", "{ws}/absent.npz"], "run `attrrob prepare --dataset digits"),
    ("evaluate", ["--model", "{ws}/absent.pt"], "{ws}/absent.pt: no such model"),
    ("evaluate", ["--model", "{ws}/corrupt.pt"], "corrupt.pt: not a readable attrrob model"),
    ("evaluate-accuracy", ["--model", "{ws}/foreign.pt"], "foreign.pt: not an attrrob model"),
    ("evaluate-accuracy", ["--model", "{ws}/results/natural/model.pt", "--dataset", "mnist"],
     "trained on 'digits', not 'mnist'"),
    ("train", ["--out", "{ws}/results/natural", "--checkpoint-dir", "{ws}/new/other_ck", "--set", "eps=0.2"],
     "{ws}/results/natural/model.pt holds a finished model of other settings (eps: 0.1 -> 0.2)"),
    ("train", ["--settings", "{ws}/absent.json"], "settings file {ws}/absent.json does not exist"),
    ("train", ["--settings", "{ws}/corrupt.pt"], "settings file {ws}/corrupt.pt: not a readable JSON file"),
    ("evaluate", ["--settings", "{ws}/data/digits.json"], "settings file {ws}/data/digits.json: "),
    ("train", ["--out", "{ws}/new/o3", "--checkpoint-dir", "{ws}/checkpoints/natural", "--steps", "1"],
     "is at step 2, beyond steps=1"),
    ("collect-results", [], "results directory {ws}/results_missing does not exist"),
    ("collect-results", ["--attacks", "Top-K"], "'Top-K' is neither an attack"),
]
CASES = TRAIN_SETS + ATTACK_SETS + ACCURACY_SETS + OPTIONS + CONFIG_FILES + PATHS


def case_id(case) -> str:
    verb, extra, _ = case
    return f"{verb}:{' '.join(extra)}"[:70] if isinstance(extra, list) else f"{verb}:config:{extra.split('=')[0]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_is_one_clear_line_and_touches_nothing(ws, capsys, case):
    verb, extra, fragment = case
    if isinstance(extra, str):  # a config file
        name, _, text = extra.partition("=")
        extra = ["--config", write(ws, name, text)]
    extra = [item.replace("{ws}", str(ws)) for item in extra]
    fragment = fragment.replace("{ws}", str(ws))
    argv = base_argv(verb, ws)
    # Later options win in argparse: a case's --out, --data, ... replace the base ones.
    before = snapshot(ws)
    with pytest.raises(SystemExit) as exit_info:
        MODULES[verb].main(argv + extra)
    out = capsys.readouterr()
    text = out.out + out.err
    assert exit_info.value.code not in (0, None)
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1, text
    assert fragment in errors[0], errors[0]
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if not k.startswith("configs/")} == \
        {k: v for k, v in before.items() if not k.startswith("configs/")}


def test_the_suite_is_as_broad_as_the_issue_asks():
    assert len(CASES) + len(SNAKEMAKE_CASES) + len(PROCESS_CASES) + 3 >= 90


# ------------------------------------------------------------------ real processes


PROCESS_CASES = [
    (["train", "--set", "eps=-0.1"], "--set eps: must be ≥ 0"),
    (["evaluate", "--num-examples", "0"], "--set num_examples: must be ≥ 1"),
]


@pytest.mark.parametrize("argv, fragment", PROCESS_CASES, ids=[" ".join(a) for a, _ in PROCESS_CASES])
def test_as_a_process_the_error_is_one_line_on_stderr(ws, argv, fragment):
    verb, extra = argv[0], argv[1:]
    result = subprocess.run([sys.executable, "-m", "attrrob", verb, *base_argv(verb, ws), *extra],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().count("\n") == 0 and fragment in result.stderr


# ------------------------------------------------------------------ the workflow


SNAKEMAKE_CASES = {
    "unknown top-level key": ("hyperparamters: {}\n", "unknown top-level key 'hyperparamters'"),
    "negative eps": ("datasets: [digits]\nhyperparameters:\n  digits: {attack: {eps: -0.1}}\n",
                     "hyperparameters.digits.attack.eps: -0.1 is less than the minimum of 0"),
    "zero step size": ("datasets: [digits]\nhyperparameters:\n  digits: {train: {common: {pgd_step_size: 0}}}\n",
                       "hyperparameters.digits.train.common.pgd_step_size: 0 is less than or equal to the minimum"),
    "k above H·W": ("datasets: [digits]\nhyperparameters:\n  digits: {attack: {k_attack: 65}}\n",
                    "digits.attack.k_attack: must be ≤ 64"),
    "num_examples 0": ("datasets: [digits]\nevaluation: {num_examples: 0}\n", "evaluation.num_examples"),
    "misspelt setting": ("datasets: [digits]\nhyperparameters:\n  digits: {attack: {iteration: 3}}\n",
                         "hyperparameters.digits.attack.iteration: unknown key"),
    "weight of another method": ("datasets: [digits]\nhyperparameters:\n  digits: {train: {ig_sum_norm: {lam: 2}}}\n",
                                 "ig_sum_norm has no λ"),
}


@pytest.mark.parametrize("case", SNAKEMAKE_CASES, ids=list(SNAKEMAKE_CASES))
def test_snakemake_dry_run_stops_on_one_line_naming_file_and_key(workflow_copy, tmp_path, case):
    from test_workflow import snakemake

    body, fragment = SNAKEMAKE_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    result = snakemake(workflow_copy, "-n", "--configfile", str(path))
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in text and "Failed validating" not in text  # no schema dump
    errors = [line for line in text.splitlines() if line.startswith("attrrob: error:")]
    assert len(errors) == 1, text
    assert fragment in errors[0], errors[0]
    if "unknown top-level" in fragment or "hyperparameters.digits.attack.iteration" in fragment:
        assert str(path) in errors[0]
    assert not (workflow_copy / "data").exists() and not (workflow_copy / "results").exists()


@pytest.mark.parametrize("text, fragment", [
    ("datasets: [digits\n", "config file config/config.yaml line 2: invalid YAML"),
    ("", "config file config/config.yaml is empty"),
    ("- digits\n", "config file config/config.yaml: top level must be a mapping"),
], ids=["syntax error", "empty", "a list"])
def test_a_broken_default_config_file_is_named(workflow_copy, text, fragment):
    from test_workflow import snakemake

    path = workflow_copy / "config/config.yaml"
    original = path.read_text()
    path.write_text(text)
    try:
        result = snakemake(workflow_copy, "-n")
    finally:
        path.write_text(original)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("attrrob: error:")]
    assert len(errors) == 1 and fragment in errors[0], out
