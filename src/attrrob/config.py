"""Settings: package defaults (defaults.yaml) merged with a user's overrides, validated.

A user config is any YAML file; only its `hyperparameters:` key is read here, shaped like
`defaults.yaml`'s `datasets:` mapping (so the workflow's config file can be passed as is).
Every key and type is checked against the defaults, and errors name the file and key path.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

METHODS = ("natural", "madry", "ig_norm", "ig_sum_norm", "sarkar", "sarkar_cacr", "sarkar_wacr")
ATTACKS = ("topk", "random", "mass_center", "targeted")
ZERO_DIRECTION_MODES = ("random_sign", "stay")


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    text = resources.files("attrrob").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["datasets"]


def datasets() -> tuple[str, ...]:
    return tuple(_defaults())


def dataset_input(dataset: str) -> dict:
    """Shape, classes and value range of a data set: channels, height, width, classes, max_value, integral."""
    return copy.deepcopy(_section(dataset, "input"))


def _section(dataset: str, section: str) -> dict:
    table = _defaults()
    if dataset not in table:
        raise ConfigError(f"unknown dataset '{dataset}' (known: {', '.join(table)})")
    return table[dataset].get(section, {})


def read_user_config(path: str | Path | None) -> dict:
    """The `hyperparameters` mapping of a user config file ({} when path is None or the key is absent)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    hyper = doc.get("hyperparameters") or {}
    if not isinstance(hyper, Mapping):
        raise ConfigError(f"config file {path}: 'hyperparameters' must be a mapping")
    for dataset, body in hyper.items():
        if dataset not in _defaults():
            raise ConfigError(f"config file {path}: hyperparameters.{dataset}: unknown dataset "
                              f"(known: {', '.join(_defaults())})")
        _check_against(body, _user_shape(_defaults()[dataset]), f"hyperparameters.{dataset}", path)
    return dict(hyper)


def _user_shape(defaults: Mapping) -> dict:
    """What a user may set for one data set: as defaults, but train.<method> takes any training key."""
    shape = dict(defaults)
    if "train" in shape:
        train = shape["train"]
        shape["train"] = {name: (body if name == "common" else {**train["common"], **body})
                          for name, body in train.items()}
    return shape


def _check_against(value: Any, default: Any, where: str, path: Any) -> None:
    """Validate `value` against the shape and types of `default`."""
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config file {path}: {where} must be a mapping")
        for key, sub in value.items():
            if key not in default:
                raise ConfigError(f"config file {path}: {where}.{key}: unknown key "
                                  f"(known: {', '.join(map(str, default))})")
            _check_against(sub, default[key], f"{where}.{key}", path)
        return
    _check_scalar(value, default, where, path)


def _check_scalar(value: Any, default: Any, where: str, path: Any) -> None:
    def bad(kind: str):
        return ConfigError(f"config file {path}: {where}: expected {kind}, got {value!r}")

    if default is None:  # optional number (null = derived, e.g. inner_ig_weight)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad("a number or null")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise bad("a list")


def _merged(dataset: str, section: str, config_path: str | Path | None, overrides: Mapping | None) -> dict:
    base = copy.deepcopy(_section(dataset, section))
    user = read_user_config(config_path).get(dataset, {}).get(section, {})
    base.update(copy.deepcopy(user))
    for key, value in (overrides or {}).items():
        if key not in base:
            raise ConfigError(f"override {key}={value!r}: unknown {section} setting "
                              f"(known: {', '.join(base)})")
        _check_scalar(value, base[key], key, "--set")
        base[key] = value
    _coerce_floats(base, _section(dataset, section))
    return base


def _coerce_floats(values: dict, defaults: Mapping) -> None:
    for key, default in defaults.items():
        if key in values and values[key] is not None and (isinstance(default, float) or default is None):
            values[key] = float(values[key])


# Each method's own weight key; the other one is a mistake at method level (it used to be `lam`
# for all three concepts, see defaults.yaml).
_WEIGHT_KEYS = {"ig_norm": "lam", "ig_sum_norm": "beta", "sarkar": "lam", "sarkar_cacr": "lam",
                "sarkar_wacr": "lam"}
_WEIGHT_NAMES = {"lam": "λ", "beta": "β"}


def _check_weight_keys(method: str, given: Mapping, where: str) -> None:
    own = _WEIGHT_KEYS.get(method)
    if own is None:
        return
    other = "beta" if own == "lam" else "lam"
    if other in given:
        raise ConfigError(f"{where}.{other}: {method} has no {_WEIGHT_NAMES[other]}; its weight is "
                          f"'{own}' ({_WEIGHT_NAMES[own]}); set {own} instead")


def train_settings(dataset: str, method: str, config_path: str | Path | None = None,
                   overrides: Mapping | None = None) -> dict:
    """Training settings for dataset × method: train.common, then train.<method>, then the user's, then overrides."""
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    train = _section(dataset, "train")
    settings = copy.deepcopy(train["common"])
    settings.update(copy.deepcopy(train.get(method, {})))
    user = read_user_config(config_path).get(dataset, {}).get("train", {})
    _check_weight_keys(method, user.get(method, {}), f"config file {config_path}: hyperparameters.{dataset}.train.{method}")
    _check_weight_keys(method, overrides or {}, "--set")
    settings.update(copy.deepcopy(user.get("common", {})))
    settings.update(copy.deepcopy(user.get(method, {})))
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ConfigError(f"override {key}={value!r}: unknown training setting (known: {', '.join(settings)})")
        _check_scalar(value, settings[key], key, "--set")
        settings[key] = value
    _coerce_floats(settings, train["common"])
    _validate_train(settings, dataset, method)
    settings.update(dataset=dataset, method=method)
    return settings


def _validate_train(s: dict, dataset: str, method: str) -> None:
    where = f"{dataset}.train.{method}"
    if s["optimizer"] not in ("adam", "momentum"):
        raise ConfigError(f"{where}.optimizer: expected 'adam' or 'momentum', got {s['optimizer']!r}")
    if s["loss_reduction"] not in ("sum", "mean"):
        raise ConfigError(f"{where}.loss_reduction: expected 'sum' or 'mean', got {s['loss_reduction']!r}")
    sched = s["lr_schedule"]
    ok = (isinstance(sched, list) and sched and all(isinstance(p, list) and len(p) == 2 for p in sched)
          and sched[0][0] == 0 and all(a[0] < b[0] for a, b in zip(sched, sched[1:])))
    if not ok:
        raise ConfigError(f"{where}.lr_schedule: expected [[0, lr], [step, lr], ...] with increasing steps, got {sched!r}")
    for key in ("batch_size", "steps", "m", "approx_factor", "pgd_steps", "log_every", "checkpoint_every"):
        if s[key] < (0 if key == "pgd_steps" else 1):
            raise ConfigError(f"{where}.{key}: must be positive, got {s[key]!r}")
    if s["m"] % s["approx_factor"]:
        raise ConfigError(f"{where}.approx_factor: must divide m={s['m']}, got {s['approx_factor']}")


def accuracy_settings(dataset: str, config_path: str | Path | None = None, overrides: Mapping | None = None) -> dict:
    return _merged(dataset, "accuracy", config_path, overrides)


def attack_settings(dataset: str, config_path: str | Path | None = None, overrides: Mapping | None = None) -> dict:
    settings = _merged(dataset, "attack", config_path, overrides)
    if settings["zero_direction"] not in ZERO_DIRECTION_MODES:
        raise ConfigError(f"{dataset}.attack.zero_direction: expected one of {', '.join(ZERO_DIRECTION_MODES)}, "
                          f"got {settings['zero_direction']!r}")
    return settings


def prepare_settings(dataset: str, config_path: str | Path | None = None, overrides: Mapping | None = None) -> dict:
    return _merged(dataset, "prepare", config_path, overrides)


def parse_overrides(items: list[str] | None) -> dict:
    """Parse `--set key=value` items; values are read as YAML scalars (never evaluated as code)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
    return out
