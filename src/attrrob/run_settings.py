"""A run's settings file: the fully resolved settings of one job, the job's input and its key.

The workflow resolves every run's settings once (defaults → config files and `--config` →
seed) and writes them to `settings.json` files that the jobs read (`attrrob train --settings`,
`attrrob evaluate[-accuracy] --settings`); the commands never re-merge the YAML.

Snakemake reruns a job when an input is newer than its outputs, so the file's modification time
carries the decision: after `sync`, a settings file is newer than the job's outputs exactly when
those outputs were made with other settings (as the outputs themselves record). Content that is
unchanged is never rewritten, and a file whose outputs match it is never left newer than them
(a DVC checkout gives files arbitrary times; that alone must not rerun a job).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import config, registry
from .errors import ConfigError
from .outputs import write_text

TRAIN, ACCURACY, ATTACK = "train", "accuracy", "attack"
# Identity keys stored beside an evaluation's settings (training settings already hold theirs):
# the data set, the attack a variant runs, and the digest of the evaluated model's settings.
MODEL = "model_settings"
_IDENTITY = ("dataset", "attack", MODEL)


def text(settings: Mapping[str, Any]) -> str:
    return json.dumps(dict(settings), sort_keys=True, indent=1) + "\n"


def training_seed(base: int, replicate: int) -> int:
    """The training seed of the workflow's seed `replicate` (its `seeds:` list) for `train.seed` = base.

    Seed 0 is `base` itself, so a one-seed config trains today's models. Another seed draws a
    32-bit seed from numpy's SeedSequence((base, replicate)): unlike base + replicate, it does not
    hand one run's data-order seed to another run's PGD noise (training seeds those from seed and
    seed + 1, attrrob.training).
    """
    config.check_limits(config.SEED, replicate, "seeds")
    if replicate == 0:
        return int(base)
    import numpy as np

    return int(np.random.SeedSequence([int(base), int(replicate)]).generate_state(1, np.uint32)[0])


def train(dataset: str, method: str, hyperparameters: Mapping | None, *, steps: int | None = None,
          seed: int | None = None, replicate: int = 0) -> dict:
    """Training settings of one run: defaults, the workflow's hyper-parameters, then steps and seed;
    `replicate` (an entry of the workflow's `seeds:`) derives the training seed from that seed."""
    overrides = {key: value for key, value in (("steps", steps), ("seed", seed)) if value is not None}
    settings = config.train_settings(dataset, method, _source(hyperparameters), overrides)
    settings["seed"] = training_seed(settings["seed"], replicate)
    return settings


def accuracy(dataset: str, hyperparameters: Mapping | None, num_examples: Any = None) -> dict:
    overrides = {"num_examples": num_examples} if num_examples is not None else None
    return {"dataset": dataset, **config.accuracy_settings(dataset, _source(hyperparameters), overrides)}


def attack(dataset: str, name: str, hyperparameters: Mapping | None, num_examples: Any = None) -> dict:
    """An attack's (or an attack variant's) settings, with the attack it runs under `attack`."""
    source = _source(hyperparameters)
    base, _ = config.resolve_attack(dataset, name, source)
    overrides = {"num_examples": num_examples} if num_examples is not None else None
    settings = config.attack_settings(dataset, source, overrides, variant=name)
    # The settings it runs (and records): a search budget the noise control ignores reruns nothing.
    settings = registry.attack(base).settings_run(settings)
    return {"dataset": dataset, "attack": base, **settings}


def of_model(evaluation: Mapping[str, Any], train_settings: Mapping[str, Any]) -> dict:
    """An evaluation's settings bound to the model it evaluates (by its training settings' digest):
    a retrained model changes them, which reruns the evaluation (the model file is `ancient`)."""
    return {**evaluation, MODEL: config.settings_digest(train_settings)}


def _source(hyperparameters: Mapping | None) -> config.WorkflowHyperparameters | None:
    return None if hyperparameters is None else config.WorkflowHyperparameters(hyperparameters)


def load(path: str | Path, kind: str) -> dict:
    """A settings file, checked by resolving it again (a hand-edited or foreign file is refused)."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"settings file {path} does not exist; the workflow writes it (run snakemake)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"settings file {path}: not a readable JSON file ({' '.join(str(exc).split())})") from None
    if not isinstance(saved, dict) or "dataset" not in saved or (kind == TRAIN and "method" not in saved):
        raise ConfigError(f"settings file {path}: not a {kind} settings file (no 'dataset'"
                          f"{' or method' if kind == TRAIN else ''})")
    # `runs` is derived from the attack and its settings (config.runs_of), never an input.
    rest = {key: value for key, value in saved.items() if key not in ("dataset", "method", "attack", "runs", MODEL)}
    try:
        if kind == TRAIN:
            # Only what differs from the defaults: each method's settings hold both weights (λ and β),
            # and naming the other method's weight is refused as an override.
            base = config.train_settings(saved["dataset"], saved["method"])
            changed = {key: value for key, value in rest.items() if base.get(key) != value}
            again = config.train_settings(saved["dataset"], saved["method"], None, changed)
        elif kind == ACCURACY:
            again = {"dataset": saved["dataset"], **config.accuracy_settings(saved["dataset"], None, rest)}
        else:
            if saved.get("attack") not in registry.attack_names():
                raise ConfigError(f"attack: expected one of {', '.join(registry.attack_names())}, got {saved.get('attack')!r}")
            again = {"dataset": saved["dataset"], "attack": saved["attack"],
                     **config.attack_settings(saved["dataset"], None, rest)}
            if "runs" in saved:
                again["runs"] = config.runs_of(saved["attack"], again)
    except ConfigError as exc:
        raise ConfigError(f"settings file {path}: {exc}") from None
    if MODEL in saved and kind != TRAIN:
        again[MODEL] = saved[MODEL]
    if again != saved:
        raise ConfigError(f"settings file {path}: does not resolve to itself (edited by hand?); "
                          "delete it and let the workflow write it")
    return saved


def made_with(record: str | Path) -> dict | None:
    """The settings an output file records (its top-level `settings`), or None if unreadable."""
    try:
        recorded = json.loads(Path(record).read_text(encoding="utf-8")).get("settings")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, dict) else None


def matches(settings: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> bool:
    """Whether an output recorded these settings. Recorded outputs may hold more (seed, batch sizes
    used), and `num_examples: all` is recorded as the count it meant."""
    if recorded is None:
        return False
    for key, value in settings.items():
        if key in _IDENTITY[:2] and key not in recorded:
            continue
        if key == "num_examples" and value == config.ALL:
            continue
        if recorded.get(key) != value:
            return False
    return True


def sync(path: str | Path, settings: Mapping[str, Any], outputs: Iterable[str | Path],
         recorded: Mapping[str, Any] | None, upstream: str | Path | None = None) -> bool:
    """Write `settings` to `path` if its content differs, then set its time so that it is newer than
    the existing `outputs` exactly when `recorded` (the outputs' own record) differs. True if written.

    `upstream`: an input file made by another job (the model an evaluation reads) that is known to
    be current; outputs that record these settings, its digest included, are not older than it.
    """
    path = Path(path)
    wanted = text(settings)
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    written = current != wanted
    if written:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, wanted)
    existing = [Path(output) for output in outputs if os.path.exists(output)]
    if not existing:
        return written
    fresh = matches(settings, recorded)
    if fresh and upstream is not None and os.path.exists(upstream):
        made = os.stat(upstream).st_mtime_ns
        for output in existing:
            if output.stat().st_mtime_ns < made:
                os.utime(output, ns=(made, made))
    oldest, own = min(output.stat().st_mtime_ns for output in existing), path.stat().st_mtime_ns
    if fresh:
        if own > oldest:
            os.utime(path, ns=(oldest, oldest))
    elif own <= oldest:
        now = max(time.time_ns(), oldest + 1_000_000_000)
        os.utime(path, ns=(now, now))
    return written
