"""A run's settings file: resolution, the modification-time rule Snakemake reads, and checks on load."""

from __future__ import annotations

import json
import os

import pytest

from attrrob import config, run_settings
from attrrob.errors import ConfigError

HYPER = {"digits": {"train": {"common": {"steps": 20}, "sarkar": {"lam": 0.3}}, "attack": {"iterations": 7}}}


def test_resolution_follows_defaults_config_and_seed():
    settings = run_settings.train("digits", "sarkar", HYPER, seed=3)
    expected = config.train_settings("digits", "sarkar", overrides={"steps": 20, "lam": 0.3, "seed": 3})
    assert settings == expected
    attack = run_settings.attack("digits", "topk", HYPER, num_examples=10)
    assert attack["attack"] == "topk" and attack["iterations"] == 7 and attack["num_examples"] == 10
    # The noise control runs (and records) one step of size ε whatever the search budget says.
    noise = run_settings.attack("digits", "noise", HYPER)
    assert noise["iterations"] == 1 and noise["step_size"] == noise["eps"] and noise["random_restarts"] == 1
    # Text scalars (as Snakemake's --config gives nested values) mean what YAML means.
    typed = config.typed_from_text({"digits": {"train": {"common": {"lr_schedule": [["0", "1e-3"]], "steps": "5"}}}})
    assert typed == {"digits": {"train": {"common": {"lr_schedule": [[0, 1e-3]], "steps": 5}}}}


def times(*paths):
    return [os.stat(p).st_mtime_ns for p in paths]


def test_the_file_is_newer_than_the_outputs_exactly_when_they_were_made_with_other_settings(tmp_path):
    settings = run_settings.train("digits", "natural", HYPER)
    path, output = tmp_path / "settings.json", tmp_path / "model.pt"
    assert run_settings.sync(path, settings, [output], None)  # no outputs yet: written
    output.write_bytes(b"model")
    os.utime(path, ns=(output.stat().st_mtime_ns + 10**9,) * 2)  # as a DVC checkout may leave it
    assert not run_settings.sync(path, settings, [output], dict(settings))  # same content: not rewritten
    assert times(path)[0] <= times(output)[0]  # ... and no longer looks newer than the model

    other = {**settings, "lr_schedule": [[0, 0.002]]}
    assert run_settings.sync(path, other, [output], dict(settings))  # the model has other settings
    assert times(path)[0] > times(output)[0]
    assert json.loads(path.read_text())["lr_schedule"] == [[0, 0.002]]
    # Content already right but the outputs are stale (an edit seen by an earlier dry run): still newer.
    os.utime(path, ns=(output.stat().st_mtime_ns - 10**9,) * 2)
    assert not run_settings.sync(path, other, [output], dict(settings))
    assert times(path)[0] > times(output)[0]


def test_an_evaluation_that_records_the_current_model_is_not_older_than_it(tmp_path):
    train = run_settings.train("digits", "natural", HYPER)
    evaluation = run_settings.of_model(run_settings.accuracy("digits", HYPER), train)
    model, summary, path = tmp_path / "model.pt", tmp_path / "summary.json", tmp_path / "settings.json"
    summary.write_text("{}")
    model.write_bytes(b"model")
    os.utime(model, ns=(summary.stat().st_mtime_ns + 10**9,) * 2)
    recorded = {k: v for k, v in evaluation.items() if k != "dataset"} | {"seed": 0}
    run_settings.sync(path, evaluation, [summary], recorded, upstream=model)
    assert times(summary)[0] >= times(model)[0] and times(path)[0] <= times(summary)[0]
    # Another model (retrained with other settings): the evaluation's settings change with it.
    retrained = run_settings.of_model(run_settings.accuracy("digits", HYPER), {**train, "seed": 1})
    assert retrained[run_settings.MODEL] != evaluation[run_settings.MODEL]
    assert not run_settings.matches(retrained, recorded)


def test_load_checks_the_file_by_resolving_it_again(tmp_path):
    path = tmp_path / "settings.json"
    settings = run_settings.train("digits", "ig_sum_norm", HYPER, seed=5)
    run_settings.sync(path, settings, [], None)
    assert run_settings.load(path, "train") == settings
    path.write_text(json.dumps({**settings, "eps": -1.0}))
    with pytest.raises(ConfigError, match=r"settings file .*settings.json: .*eps"):
        run_settings.load(path, "train")
    path.write_text(json.dumps({**settings, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown training setting"):
        run_settings.load(path, "train")
    attack = tmp_path / "attack.json"
    run_settings.sync(attack, run_settings.of_model(run_settings.attack("digits", "topk", HYPER), settings), [], None)
    assert run_settings.load(attack, "attack")["iterations"] == 7
    noise = tmp_path / "noise.json"
    run_settings.sync(noise, run_settings.attack("digits", "noise", HYPER), [], None)
    assert run_settings.load(noise, "attack")["iterations"] == 1


def test_workflow_seeds_derive_training_seeds_that_keep_seed_0_and_differ_otherwise(tmp_path):
    base = run_settings.train("digits", "sarkar", HYPER)
    # Seed 0 is the configured train.seed itself: one-seed configs keep today's models and checkpoints.
    first = run_settings.train("digits", "sarkar", HYPER, replicate=0)
    assert first == base and config.settings_digest(first) == config.settings_digest(base)
    import numpy as np

    derived = {s: run_settings.training_seed(base["seed"], s) for s in (1, 2, 3, 2**32 - 1)}
    # Independent oracle: numpy's SeedSequence of (train.seed, s), first 32-bit word.
    for s, value in derived.items():
        assert value == int(np.random.SeedSequence([base["seed"], s]).generate_state(1)[0])
        assert 0 <= value < 2**32
    # Training uses seed and seed + 1 (data order, PGD noise): no run shares either with another.
    used = [base["seed"], base["seed"] + 1] + [v + d for v in derived.values() for d in (0, 1)]
    assert len(set(used)) == len(used)
    other = run_settings.train("digits", "sarkar", HYPER, replicate=1)
    assert {k for k in base if base[k] != other[k]} == {"seed"}
    path = tmp_path / "settings.json"
    run_settings.sync(path, other, [], None)
    assert run_settings.load(path, run_settings.TRAIN) == other  # resolves to itself
    with pytest.raises(ConfigError, match="seeds: must be ≤ 4294967295"):
        run_settings.training_seed(1, 2**32)


@pytest.mark.parametrize("seeds, message", [([0, 0], "seeds: .*non-unique"), ([], "seeds: .*"),
                                            ([-1], r"seeds\.0: .*minimum"), (["1"], r"seeds\.0: .*integer")])
def test_the_schema_refuses_bad_seed_lists_naming_the_key(seeds, message):
    from pathlib import Path

    schema = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    assert config.schema_problem({"seeds": [0, 7]}, schema) is None
    assert config.schema_problem({"seeds": seeds}, schema) is not None
    import re

    assert re.match(message, config.schema_problem({"seeds": seeds}, schema))
