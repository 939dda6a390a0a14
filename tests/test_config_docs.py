"""config/README.md documents every config file and key, and the Snakemake Workflow Catalog's usage
file (.snakemake-workflow-catalog.yml) has the sections the catalog reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "config" / "README.md").read_text(encoding="utf-8")


def schema_keys() -> set[str]:
    """The workflow config's keys, two levels down, and the per-stage resource keys."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
    keys = set()
    for name, spec in schema["properties"].items():
        keys.add(name)
        for sub, sub_spec in spec.get("properties", {}).items():
            keys.add(sub)
            keys |= set(sub_spec.get("properties", {}))
    return keys | set(schema["$defs"]["stage_resources"]["properties"])


def hyperparameter_keys() -> set[str]:
    """Every setting a config file may override under `hyperparameters.<dataset>`."""
    defaults = yaml.safe_load((REPO / "src" / "attrrob" / "defaults.yaml").read_text(encoding="utf-8"))
    keys = {"attack_variants"}
    for body in defaults["datasets"].values():
        keys |= set(body["train"]["common"]) | {"common"}
        for section in ("accuracy", "attack", "prepare"):
            keys |= {section} | set(body.get(section, {}))
    return keys


@pytest.mark.parametrize("path", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_every_config_file_is_described(path):
    assert f"| `{path}` |" in README, f"config/README.md has no row for config/{path}"


def test_every_key_is_described():
    missing = sorted(k for k in schema_keys() | hyperparameter_keys() if not re.search(rf"[`.]{re.escape(k)}\b", README))
    assert not missing, f"config/README.md does not mention {missing}"


@pytest.mark.parametrize("doc", ["config/README.md", "docs/gpu/README.md", *sorted(
    f"config/{p.name}" for p in (REPO / "config").glob("*.yaml"))])
def test_snakemake_commands_put_the_target_first(doc):
    # `--resources` and `--configfile` take several values: a target after them is read as one.
    commands = re.findall(r"snakemake\s+(\S+)", (REPO / doc).read_text(encoding="utf-8"))
    assert commands and not [c for c in commands if c.startswith("-")], (doc, commands)


def test_catalog_usage_file():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text(encoding="utf-8"))["usage"]
    flags = usage["mandatory-flags"]
    assert flags["desc"].strip() and isinstance(flags["flags"], (str, list))
    stack = usage["software-stack-deployment"]
    assert set(stack) == {"conda", "apptainer", "apptainer+conda"} and any(stack.values())
    assert all(isinstance(v, bool) for v in stack.values()) and usage["report"] is True
    rules = "".join(p.read_text(encoding="utf-8") for p in (REPO / "workflow" / "rules").glob("*.smk"))
    if stack["conda"]:  # every job then runs in the conda environment
        assert rules.count("conda:") == rules.count("\nrule ") + rules.count("\ncheckpoint ") > 0
