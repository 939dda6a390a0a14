"""Settings: package defaults (defaults.yaml) merged with a user's overrides, validated.

A user config is a workflow config file (any YAML mapping with the workflow's top-level keys,
`registry.WORKFLOW_KEYS`); only its `hyperparameters:` key is read here, shaped like
`defaults.yaml`'s `datasets:` mapping (so the workflow's config file can be passed as is).
Every key, type and value is checked here, in one place, whichever way it arrives (config file,
`--set`, a CLI shortcut option, the workflow's parse-time check): errors are one line naming
the file or option and the key. Types and value limits are settings.schema.yaml's
(`attrrob.settings_schema`), to which workflow/schemas/config.schema.yaml refers.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from . import registry
from .errors import ConfigError, short
# The settings schema's names, also found here (callers import them from attrrob.config).
from .settings_schema import (ALL, LIMITS, OPTION_LIMITS, SEED, SETTINGS_SCHEMA, TIES_MODES,  # noqa: F401
                              ZERO_DIRECTION_MODES, _kinds, _number_from_text, check_limits, check_type,
                              check_value)
from .strict_yaml import Refused, strict_yaml_load

ATTACKS = registry.ATTACKS  # the built-in attacks; registry.attack_names() has every registered one
# hyperparameters.<dataset>.attack_variants.<name>: {attack: <registry attack>, <attack settings>}: one
# attack at other settings, evaluated under its own name (results/.../attack_<name>/), so one config can
# hold, e.g., the paper's top-k attack and one with a smaller k side by side.
VARIANTS = "attack_variants"
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def settings_digest(settings: Mapping) -> str:
    """A short, stable fingerprint of a settings mapping (logged at the start of every run)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def _defaults_file() -> dict:
    text = resources.files("attrrob").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["datasets"]


def _defaults() -> dict:
    """Each data set's defaults (input shape and settings): its defaults.yaml block, else those its
    registered `Dataset` carries (a data set added without touching defaults.yaml)."""
    table = _defaults_file()
    extra = {name: registry.dataset(name).defaults for name in registry.dataset_names()
             if name not in table and registry.dataset(name).defaults}
    return {**table, **extra} if extra else table


def datasets() -> tuple[str, ...]:
    """The registered data sets."""
    return registry.dataset_names()


def dataset_input(dataset: str) -> dict:
    """Shape, classes and value range of a data set: channels, height, width, classes, max_value, integral."""
    return copy.deepcopy(_section(dataset, "input"))


def _section(dataset: str, section: str) -> dict:
    table = _defaults()
    if dataset not in table:
        raise ConfigError(f"unknown dataset '{dataset}' (known: {', '.join(table)})")
    return table[dataset].get(section, {})


def load_yaml_mapping(path: str | Path, *, what: str = "config file") -> dict | None:
    """A YAML file's top-level mapping (None when the file is empty); one-line errors name file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = strict_yaml_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not a text (UTF-8) file") from None
    except Refused as exc:
        raise ConfigError(f"{what} {path} line {exc.mark.line + 1}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if doc is not None and not isinstance(doc, Mapping):
        raise ConfigError(f"{what} {path}: top level must be a mapping of keys ({', '.join(registry.WORKFLOW_KEYS)})")
    return doc


def _refuse_empty(doc: Mapping | None, path: str | Path) -> None:
    """An empty config file is a mistake (a wrong file, a failed write): the commands and the workflow refuse it."""
    if not doc:
        raise ConfigError(f"config file {path} is empty; give it at least one key "
                          f"({', '.join(registry.WORKFLOW_KEYS)}) or do not pass it")


def check_top_level_keys(doc: Mapping, path: str | Path) -> None:
    """A workflow config file may hold only the workflow's keys (a typo would be silently ignored)."""
    for key in doc:
        if key not in registry.WORKFLOW_KEYS:
            raise ConfigError(f"config file {path}: unknown top-level key '{key}' "
                              f"(known: {', '.join(registry.WORKFLOW_KEYS)})")


class WorkflowHyperparameters(dict):
    """The `hyperparameters:` mapping of a workflow config as Snakemake merged it (config files and
    `--config key=value`), passed where a config file's path is accepted."""

    def __str__(self) -> str:
        return "the workflow config (its config files and --config)"


def _where(source: Any) -> str:
    """How messages name a settings source: a config file by its path, or the workflow config."""
    return str(source) if isinstance(source, WorkflowHyperparameters) else f"config file {source}"


def read_user_config(path: str | Path | Mapping | None) -> dict:
    """The `hyperparameters` mapping of a user config file ({} when path is None or the key is absent).

    A `WorkflowHyperparameters` mapping is checked the same way as a file's `hyperparameters:`."""
    if path is None:
        return {}
    if isinstance(path, WorkflowHyperparameters):
        hyper = path
    else:
        doc = load_yaml_mapping(path)
        _refuse_empty(doc, path)
        check_top_level_keys(doc, path)
        hyper = doc.get("hyperparameters") or {}
    where = _where(path)
    if not isinstance(hyper, Mapping):
        raise ConfigError(f"{where}: 'hyperparameters' must be a mapping")
    for dataset, body in hyper.items():
        if dataset not in _defaults():
            raise ConfigError(f"{where}: hyperparameters.{dataset}: unknown dataset "
                              f"(known: {', '.join(_defaults())})")
        if isinstance(body, Mapping) and "input" in body:
            raise ConfigError(f"{where}: hyperparameters.{dataset}.input: the input shape is "
                              "fixed by the data set, not a setting; remove it")
        body = dict(body) if isinstance(body, Mapping) else body
        variants = body.pop(VARIANTS, None) if isinstance(body, Mapping) else None
        _check_shape(body, dataset, f"hyperparameters.{dataset}", path)
        _check_file_values(body, f"{where}: hyperparameters.{dataset}")
        if variants is not None:
            _check_variants(variants, dataset, f"{where}: hyperparameters.{dataset}.{VARIANTS}")
    return dict(hyper)


def _check_variants(variants: Any, dataset: str, where: str) -> None:
    """Each variant: a lower-case name that is no attack's, `attack:` a known attack, and attack settings."""
    if not isinstance(variants, Mapping):
        raise ConfigError(f"{where} must be a mapping of variant names to {{attack: NAME, <attack settings>}}")
    shape = LIMITS["attack"]
    for name, body in variants.items():
        here = f"{where}.{name}"
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            raise ConfigError(f"{here}: a variant name is lower-case letters, digits and _ (≤ 40, a letter "
                              "first); it names the results folder attack_<name>")
        attacks = registry.attack_names()
        if name in attacks:
            raise ConfigError(f"{here}: '{name}' is an attack's own name; give the variant another name")
        if not isinstance(body, Mapping) or "attack" not in body:
            raise ConfigError(f"{here}: expected a mapping with 'attack: <{'|'.join(attacks)}>' and attack settings")
        if body["attack"] not in attacks:
            raise ConfigError(f"{here}.attack: unknown attack {short(body['attack'])} (known: {', '.join(attacks)})")
        for key, value in body.items():
            if key == "attack":
                continue
            if key not in shape:
                raise ConfigError(f"{here}.{key}: unknown attack setting (known: {', '.join(shape)})")
            check_type(value, "attack", key, f"{here}.{key}")
            check_value("attack", key, value, f"{here}.{key}")
        _check_k_within_image(body, dataset, here)


def _check_k_within_image(settings: Mapping, dataset: str, where: str) -> None:
    shape = _section(dataset, "input")
    pixels = shape["height"] * shape["width"]
    for key in ("k_attack", "k_metric"):
        if key in settings and settings[key] > pixels:
            raise ConfigError(f"{where}.{key}: must be ≤ {pixels} (H·W = {shape['height']}·{shape['width']} "
                              f"pixels of {dataset}), got {settings[key]}")


def attack_variants(dataset: str, config_path: str | Path | None = None) -> dict[str, dict]:
    """The attack variants a config file defines for `dataset` ({} without a file)."""
    body = read_user_config(config_path).get(dataset) or {}
    return copy.deepcopy(dict(body.get(VARIANTS) or {}))


def resolve_attack(dataset: str, name: str, config_path: str | Path | None = None) -> tuple[str, dict]:
    """(the attack to run, the variant's own settings) for an attack name or a variant name."""
    if name in registry.attack_names():
        return name, {}
    variants = attack_variants(dataset, config_path)
    if name not in variants:
        where = f" or a variant of {dataset} in {config_path}" if config_path is not None else ""
        known = ", ".join([*registry.attack_names(), *variants])
        raise ConfigError(f"unknown attack '{name}': expected an attack{where} "
                          f"(hyperparameters.{dataset}.{VARIANTS}); known: {known}")
    settings = dict(variants[name])
    return settings.pop("attack"), settings


def check_setting(dataset: str, method: str | None, section: str, key: str, value: Any, where: str) -> None:
    """One `hyperparameters:` value checked as the config file's would be: a known key of `section`
    (train: of `method`), its type and its limits (used for the values a sweep lists)."""
    shape = _user_shape(dataset) if dataset in _defaults() else {}
    if section not in shape:
        raise ConfigError(f"{where}: unknown settings section '{section}' (known: {', '.join(shape)})")
    known = LIMITS[section]
    if key not in known:
        raise ConfigError(f"{where}: unknown {section} setting '{key}' (known: {', '.join(known)})")
    if section == "train":
        _check_weight_keys(method, {key: value}, where.rsplit(".", 1)[0])
    check_type(value, section, key, f"{where}")
    check_value(section, key, value, where)


def _check_file_values(body: Mapping, where: str) -> None:
    for section, values in body.items():
        groups = values.items() if section == "train" else [(None, values)]
        for group, entries in groups:
            prefix = f"{where}.{section}" + (f".{group}" if group else "")
            for key, value in entries.items():
                check_value(section, key, value, f"{prefix}.{key}")


def _user_shape(dataset: str) -> dict[str, Any]:
    """What a user may set for one data set: the sections its defaults have (but `input`), each
    with the keys of settings.schema.yaml; train: `common` and one group per registered method."""
    sections = [name for name in _defaults()[dataset] if name != "input"]
    shape: dict[str, Any] = {name: LIMITS[name] for name in sections}
    if "train" in shape:
        shape["train"] = {group: LIMITS["train"] for group in ("common", *registry.method_names())}
    return shape


def _check_keys(value: Any, known: Iterable, where: str, path: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{_where(path)}: {where} must be a mapping")
    for key in value:
        if key not in known:
            raise ConfigError(f"{_where(path)}: {where}.{key}: unknown key (known: {', '.join(map(str, known))})")


def _check_shape(body: Any, dataset: str, where: str, path: Any) -> None:
    """A config file's `hyperparameters.<dataset>` body: known sections, groups and keys, and each
    value of the type settings.schema.yaml gives it."""
    shape = _user_shape(dataset)
    _check_keys(body, shape, where, path)
    for section, values in body.items():
        groups = [(None, values)]
        if section == "train":
            _check_keys(values, shape["train"], f"{where}.train", path)
            groups = list(values.items())
        for group, entries in groups:
            here = f"{where}.{section}" + (f".{group}" if group else "")
            _check_keys(entries, LIMITS[section], here, path)
            for key, value in entries.items():
                check_type(value, section, key, f"{_where(path)}: {here}.{key}")


def _apply_overrides(settings: dict, overrides: Mapping | None, section: str, what: str) -> None:
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ConfigError(f"override {key}={short(value)}: unknown {what} setting (known: {', '.join(settings)})")
        check_type(value, section, key, f"--set {key}")
        check_value(section, key, value, f"--set {key}")
        settings[key] = value


def _merged(dataset: str, section: str, config_path: str | Path | None, overrides: Mapping | None) -> dict:
    base = copy.deepcopy(_section(dataset, section))
    user = read_user_config(config_path).get(dataset, {}).get(section, {})
    base.update(copy.deepcopy(user))
    _apply_overrides(base, overrides, section, section)
    _coerce_floats(base, section)
    _check_section(base, section, f"{dataset}.{section}")
    return base


def _check_section(settings: Mapping, section: str, where: str) -> None:
    """The merged settings' values (defaults included): the last line of defence before a run."""
    for key, value in settings.items():
        check_value(section, key, value, f"{where}.{key}")


def _coerce_floats(values: dict, section: str) -> None:
    """Numbers (not integers) as floats, as the schema types them: 1 and 1.0 are one setting."""
    for key, value in values.items():
        kinds = _kinds(section, key) if key in LIMITS[section] else []
        if "number" in kinds and "integer" not in kinds and value is not None and not isinstance(value, bool):
            values[key] = float(value)


def _check_weight_keys(method: str, given: Mapping, where: str) -> None:
    """Another method's weight key set at a method with a weight of its own is a mistake (`lam`
    used to stand for all three concepts, see defaults.yaml)."""
    own = registry.method(method)
    if own.weight is None:
        return
    for other in {m.weight for m in map(registry.method, registry.method_names())} - {None, own.weight}:
        if other in given:
            symbol = registry.WEIGHT_SYMBOLS.get(other, other)
            raise ConfigError(f"{where}.{other}: {method} has no {symbol}; its weight is "
                              f"'{own.weight}' ({own.weight_symbol}); set {own.weight} instead")


def train_settings(dataset: str, method: str, config_path: str | Path | None = None,
                   overrides: Mapping | None = None) -> dict:
    """Training settings for dataset × method: train.common, then train.<method>, then the user's, then overrides."""
    registered = registry.method(method)  # an unknown method is named here
    train = _section(dataset, "train")
    settings = copy.deepcopy(train["common"])
    settings.update(copy.deepcopy(dict(registered.defaults)))
    settings.update(copy.deepcopy(train.get(method, {})))
    user = read_user_config(config_path).get(dataset, {}).get("train", {})
    _check_weight_keys(method, user.get(method, {}), f"{_where(config_path)}: hyperparameters.{dataset}.train.{method}")
    _check_weight_keys(method, overrides or {}, "--set")
    settings.update(copy.deepcopy(user.get("common", {})))
    settings.update(copy.deepcopy(user.get(method, {})))
    _apply_overrides(settings, overrides, "train", "training")
    _coerce_floats(settings, "train")
    _validate_train(settings, dataset, method)
    settings.update(dataset=dataset, method=method)
    return settings


def _validate_train(s: dict, dataset: str, method: str) -> None:
    where = f"{dataset}.train.{method}"
    _check_section(s, "train", where)
    sched = s["lr_schedule"]
    ok = (isinstance(sched, list) and sched and all(isinstance(p, list) and len(p) == 2 for p in sched)
          and all(isinstance(p[0], int) and not isinstance(p[0], bool) for p in sched)
          and all(isinstance(p[1], (int, float)) and not isinstance(p[1], bool) for p in sched)
          and sched[0][0] == 0 and all(a[0] < b[0] for a, b in zip(sched, sched[1:])))
    if not ok:
        raise ConfigError(f"{where}.lr_schedule: expected [[0, lr], [step, lr], ...] with increasing steps, got {short(sched)}")
    if any(not lr > 0 for _, lr in sched):
        raise ConfigError(f"{where}.lr_schedule: every learning rate must be > 0, got {short(sched)}")
    if s["m"] % s["approx_factor"]:
        raise ConfigError(f"{where}.approx_factor: must divide m={s['m']}, got {s['approx_factor']}")


def accuracy_settings(dataset: str, config_path: str | Path | None = None, overrides: Mapping | None = None) -> dict:
    settings = _merged(dataset, "accuracy", config_path, overrides)
    classes = _section(dataset, "input")["classes"]
    targets = settings.get("autoattack_target_classes")
    if targets is not None and targets > classes - 1:
        raise ConfigError(f"{dataset}.accuracy.autoattack_target_classes: must be ≤ {classes - 1} (the other "
                          f"classes of {dataset}), got {targets}")
    if settings["pgd_ig_m"] % settings["pgd_ig_approx_factor"]:
        raise ConfigError(f"{dataset}.accuracy.pgd_ig_approx_factor: must divide pgd_ig_m={settings['pgd_ig_m']}, "
                          f"got {settings['pgd_ig_approx_factor']}")
    return settings


def attack_settings(dataset: str, config_path: str | Path | None = None, overrides: Mapping | None = None,
                    variant: str | None = None, *, attack: str | None = None) -> dict:
    """Attack settings: defaults, the config's `attack:`, the variant's own settings (when `attack`, or
    its older name `variant`, names one of the config file's attack variants), then `overrides`.
    Given an attack or variant name, the settings also hold `runs`: how many runs of that attack
    are made, the lowest-τ one kept (`runs_of`)."""
    name = attack if attack is not None else variant
    base, own = resolve_attack(dataset, name, config_path) if name is not None else (None, {})
    settings = _merged(dataset, "attack", config_path, {**own, **(overrides or {})})
    _check_k_within_image(settings, dataset, f"{dataset}.{VARIANTS}.{name}" if own else f"{dataset}.attack")
    if base is not None:
        settings["runs"] = runs_of(base, settings)
    return settings


def runs_of(attack: str, settings: Mapping) -> int:
    """Runs of an attack per image, the lowest-τ one kept (RAR's `attribution_attack_times`):
    `random_restarts` for the random attack, `restarts` for the others, whose runs differ where a
    zero direction takes seeded random-sign steps. With `zero_direction: stay` those are
    deterministic, every run would repeat the first, so they run once. The noise control is one
    draw, no search: one run."""
    spec = registry.attack(attack)
    if spec.runs is None:
        return 1
    key = spec.runs
    if key not in settings:
        raise ConfigError(f"attack settings lack '{key}' (the {attack} attack's number of runs)")
    if not spec.stochastic and settings.get("zero_direction") == "stay":
        return 1
    return max(1, int(settings[key]))


def prepare_settings(dataset: str, config_path: str | Path | None = None, overrides: Mapping | None = None) -> dict:
    return _merged(dataset, "prepare", config_path, overrides)


def check_all_settings(config_path: str | Path | None, datasets: Iterable[str], methods: Iterable[str],
                       attacks: Iterable[str] = ()) -> None:
    """Every setting the workflow's jobs will read, checked at once (the Snakefile calls this at parse
    time, so `snakemake -n` fails on a bad value before any job starts). `attacks` may name variants."""
    methods, attacks = list(methods), list(attacks)
    try:
        for dataset in datasets:
            prepare_settings(dataset, config_path)
            accuracy_settings(dataset, config_path)
            attack_settings(dataset, config_path)
            for attack in attacks:
                attack_settings(dataset, config_path, variant=attack)
            for method in methods:
                train_settings(dataset, method, config_path)
    except ConfigError as exc:
        if config_path is not None and str(config_path) not in str(exc):
            raise ConfigError(f"{_where(config_path)}: {exc}") from None
        raise


def check_workflow_files(paths: Iterable[str | Path]) -> None:
    """The workflow's config files, one by one: readable YAML, not empty, only known top-level keys."""
    for path in paths:
        doc = load_yaml_mapping(path)
        _refuse_empty(doc, path)
        check_top_level_keys(doc, path)


def _file_registry(schema_path: Path):
    """A `referencing` registry that reads a `$ref` to another YAML file relative to the schema
    (the workflow schema refers to the package's settings schema), as Snakemake's validate does."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def retrieve(uri: str):
        target = (schema_path.parent / uri).resolve() if "://" not in uri else None
        if target is None or not target.is_file():
            raise ConfigError(f"{schema_path}: $ref {uri!r} is not a file beside the schema")
        # The settings schema is the package's own file: its YAML anchors are meant (not a user's config).
        return Resource.from_contents(yaml.safe_load(target.read_text(encoding="utf-8")),
                                      default_specification=DRAFT202012)

    return Registry(retrieve=retrieve)


def schema_problem(config: Mapping, schema_path: str | Path) -> str | None:
    """The first schema violation of a workflow config as one line (key path: message), or None.

    Snakemake's own message prints the whole schema; this names only the key. None also when
    jsonschema is not installed (Snakemake's validation still runs after this).
    """
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - Snakemake depends on it
        return None
    schema = load_yaml_mapping(schema_path, what="schema")
    validator = jsonschema.Draft202012Validator(schema, registry=_file_registry(Path(schema_path)))
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(config)))
    if error is None:
        # Data set and method names are the registry's (a schema cannot list what a package registers).
        for key, what, known in (("datasets", "data set", registry.dataset_names()),
                                 ("methods", "method", registry.method_names())):
            for index, name in enumerate(config.get(key) or []):
                if name not in known:
                    return f"{key}.{index}: unknown {what} {name!r} (known: {', '.join(known)})"
        return None
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    message = " ".join(str(error.message).split())
    if len(message) > 200:
        message = message[:200] + "…"
    return f"{key}: {message}"


def parse_overrides(items: list[str] | None) -> dict:
    """Parse `--set key=value` items; values are read as YAML scalars (never evaluated as code)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {short(item)}: expected key=value")
        try:
            value = strict_yaml_load(raw)
        except Refused as exc:
            raise ConfigError(f"--set {short(item)}: {exc.message}") from None
        except yaml.YAMLError:
            raise ConfigError(f"--set {short(item)}: value is not valid YAML") from None
        out[key.strip()] = _number_from_text(value)
    return out


def typed_from_text(value: Any) -> Any:
    """A mapping whose scalars may be text, as Snakemake's `--config key=value` gives nested values
    ("0.002", "true"), with every text scalar read as YAML would read it in a config file."""
    if isinstance(value, Mapping):
        return {key: typed_from_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed_from_text(item) for item in value]
    if isinstance(value, str):
        try:
            return _number_from_text(yaml.safe_load(value))
        except yaml.YAMLError:
            return value
    return value
