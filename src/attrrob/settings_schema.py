"""The settings schema: every hyper-parameter's type and value limits (settings.schema.yaml, package
data, to which the workflow schema refers), and the checks of one value against them, as one-line
errors naming where the value came from. `attrrob.config` merges and checks whole settings."""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Mapping

import yaml

from .errors import ConfigError, short

ALL = "all"  # num_examples: every test image (a number above the test-set size is an error)


def _settings_schema() -> dict:
    text = resources.files("attrrob").joinpath(SETTINGS_SCHEMA).read_text(encoding="utf-8")
    return yaml.safe_load(text)["$defs"]


# Value limits per settings section, as JSON-schema keywords: settings.schema.yaml (package data,
# the one place they are written; the workflow schema refers to it).
SETTINGS_SCHEMA = "settings.schema.yaml"
_SCHEMA_DEFS = _settings_schema()
LIMITS: dict[str, dict[str, dict]] = {section: _SCHEMA_DEFS[f"{section}_settings"]["properties"]
                                      for section in ("train", "accuracy", "attack", "prepare")}
SEED = _SCHEMA_DEFS["seed"]  # numpy's and torch's seed range
_COUNT_1 = _SCHEMA_DEFS["count_1"]
ZERO_DIRECTION_MODES = tuple(LIMITS["attack"]["zero_direction"]["enum"])
TIES_MODES = tuple(LIMITS["attack"]["ties"]["enum"])

# Limits of the command-line options that are not settings (the workflow schema mirrors the ones
# it passes on: evaluation.save_examples; train_steps and evaluation.num_examples are _MANY).
OPTION_LIMITS: dict[str, dict] = {
    "seed": SEED, "save_examples": {"minimum": 0, "maximum": 10_000}, "threads": {"minimum": 1, "maximum": 4096},
    "batch_images": _COUNT_1, "memory_budget_gb": {"exclusiveMinimum": 0, "maximum": 1 << 20},
    "steps": _COUNT_1, "num_examples": _COUNT_1,
}
# Keys that also take the string "all".
_ALL_ALLOWED = frozenset({"num_examples"})


def _limit_problem(limits: Mapping, value: Any) -> str | None:
    """What is wrong with `value` under `limits` (JSON-schema keywords), or None."""
    if value is None or (value == ALL and "enum" not in limits):
        return None
    if "enum" in limits:
        return None if value in limits["enum"] else f"expected one of {', '.join(limits['enum'])}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # types are checked elsewhere
    if isinstance(value, float) and math.isinf(value):
        return "must be finite"
    if "minimum" in limits and not value >= limits["minimum"]:
        return f"must be ≥ {limits['minimum']}"
    if "maximum" in limits and not value <= limits["maximum"]:
        return f"must be ≤ {limits['maximum']}"
    if "exclusiveMinimum" in limits and not value > limits["exclusiveMinimum"]:
        return f"must be > {limits['exclusiveMinimum']}"
    if "exclusiveMaximum" in limits and not value < limits["exclusiveMaximum"]:
        return f"must be < {limits['exclusiveMaximum']}"
    step = limits.get("not", {}).get("multipleOf")
    if step and value % step == 0:
        return "must be odd" if step == 2 else f"must be no multiple of {step}"
    return None


def check_value(section: str, key: str, value: Any, where: str) -> None:
    """Raise ConfigError when `value` of `section.key` is outside its limits (`where` names it)."""
    check_limits(LIMITS.get(section, {}).get(key, {}), value, where)


def check_limits(limits: Mapping, value: Any, where: str) -> None:
    """Raise ConfigError when `value` is outside `limits` (e.g. `SEED` for a --seed option)."""
    problem = _limit_problem(limits, value)
    if problem:
        raise ConfigError(f"{where}: {problem}, got {short(value)}")


def _kinds(section: str, key: str) -> list[str]:
    kind = LIMITS[section][key].get("type", [])
    return kind if isinstance(kind, list) else [kind]


def check_type(value: Any, section: str, key: str, where: str) -> None:
    """`value` of the type settings.schema.yaml gives `section.key`, as a one-line error."""
    def bad(kind: str):
        return ConfigError(f"{where}: expected {kind}, got {short(value)}")

    kinds = _kinds(section, key)
    if key in _ALL_ALLOWED and value == ALL:
        return
    if "null" in kinds and value is None:  # optional (null = derived, e.g. inner_ig_weight)
        return
    if "boolean" in kinds:
        if not isinstance(value, bool):
            raise bad("true or false")
    elif "integer" in kinds:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"an integer{' or all' if key in _ALL_ALLOWED else ''}")
    elif "number" in kinds:
        if isinstance(value, str) and _number_from_text(value) is not value:
            raise ConfigError(f"{where}: expected a number, got the text {short(value)} (YAML reads a number "
                              "without a dot as text: write it as 1.0e-4)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number or null" if "null" in kinds else "a number")
    elif "string" in kinds:
        if not isinstance(value, str):
            raise bad("a string")
    elif "array" in kinds:
        if not isinstance(value, list):
            raise bad("a list")


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as text; on the command line it means the number."""
    if isinstance(value, str) and value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity"):
        try:
            return float(value)
        except ValueError:
            pass
    return value
