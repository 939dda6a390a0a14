"""The run enumeration (attrrob.experiments) and the selection rule (attrrob.selection), without
training: runs and paths of a config with sweeps, unswept runs unchanged, bad sweeps refused with a
one-line error naming the key, and the rule against hand-computed choices."""

from __future__ import annotations

import json
import math

import pytest

from attrrob import experiments, run_settings
from attrrob.errors import AttrrobError, ConfigError
from attrrob.selection import choose, selection

BASE = {"datasets": ["digits"], "methods": ["natural", "sarkar"], "attacks": ["topk"], "seeds": [0, 1],
        "train_steps": None, "evaluation": {"num_examples": None}}


def experiment(sweeps=None, **changes):
    config = {**json.loads(json.dumps(BASE)), **changes, "sweeps": sweeps or {}}
    return experiments.Experiment(config, {"digits": {"train": {"common": {"steps": 7}}}})


def test_without_sweeps_the_runs_and_their_settings_are_todays():
    runs = experiment().runs()
    assert [r.dir for r in runs] == [f"results/seed~{s}/digits/{m}" for m in ("natural", "sarkar") for s in (0, 1)]
    hyper = {"digits": {"train": {"common": {"steps": 7}}}}
    for run in runs:  # the settings the workflow wrote before sweeps existed
        assert experiment().train_settings(run) == run_settings.train(run.dataset, run.method, hyper,
                                                                      replicate=run.seed)


def test_a_sweep_adds_one_run_per_value_and_seed_with_readable_paths():
    exp = experiment({"digits": {"sarkar": {"train": {"lam": [0.1, 1.0]}, "attack": {"eps": [0.05, 0.1]},
                                            "seeds": [0, 3]}}})
    sweep = exp.sweep_runs()
    assert len(sweep) == 2 * 2 * 2
    assert "results/seed~3/digits/sarkar/sweep/lam~0.1/attack.eps~0.05" in {r.dir for r in sweep}
    run = next(r for r in sweep if r.dir.endswith("lam~1.0/attack.eps~0.1") and r.seed == 0)
    assert exp.train_settings(run)["lam"] == 1.0
    assert exp.evaluation_settings(run)["topk"]["eps"] == 0.1
    main = experiments.Run("digits", "sarkar", 0)
    assert exp.evaluation_settings(main)["topk"]["eps"] == run_settings.attack("digits", "topk", None)["eps"]
    assert exp.train_settings(main)["lam"] == run_settings.train("digits", "sarkar", None)["lam"]
    # Sweep seeds default to the first of seeds:.
    default = experiment({"digits": {"sarkar": {"train": {"lam": [0.1]}}}})
    assert [r.seed for r in default.sweep_runs()] == [0]


def test_an_attack_only_sweep_evaluates_the_main_runs_model():
    exp = experiment({"digits": {"natural": {"attack": {"eps": [0.05, 0.2]}}}})
    for run in exp.sweep_runs():
        assert exp.model_run(run) == experiments.Run("digits", "natural", run.seed)


@pytest.mark.parametrize("sweeps, message", [
    ({"digits": {"sarkar": {"train": {"lam": [-1.0]}}}}, "sweeps.digits.sarkar.train.lam: must be ≥ 0, got -1.0"),
    ({"digits": {"sarkar": {"train": {"lamda": [1.0]}}}}, "unknown train setting 'lamda'"),
    ({"digits": {"sarkar": {"train": {"beta": [1.0]}}}}, "sarkar has no β"),
    ({"digits": {"sarkar": {"train": {"steps": ["many"]}}}}, "sweeps.digits.sarkar.train.steps: expected an integer"),
    ({"digits": {"sarkar": {"train": {"lam": []}}}}, "expected a non-empty list"),
    ({"digits": {"sarkar": {"attack": {"eps": [0.1]}, "select": {"metric": "AA", "rule": "max",
                                                                  "num_examples": 10}}}}, "a selection chooses training settings"),
    ({"digits": {"sarkar": {"train": {"lam": [1.0]}, "select": {"metric": "IN", "rule": "max",
                                                                 "num_examples": 10}}}}, "is measured under an attack"),
    ({"digits": {"sarkar": {"train": {"lam": [1.0]}, "select": {"metric": "IN", "rule": "best", "attack": "topk",
                                                                 "num_examples": 10}}}}, "select.rule: expected max or min"),
])
def test_bad_sweeps_are_one_line_errors_naming_the_key(sweeps, message):
    with pytest.raises(ConfigError) as caught:
        experiment(sweeps)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_rule_picks_by_hand():
    cands = [{"value": 0.70, "na": 0.90}, {"value": 0.80, "na": 0.80}, {"value": 0.75, "na": 0.88},
             {"value": math.nan, "na": 0.95}]
    assert choose(cands, "max", None) == 1
    assert choose(cands, "min", None) == 0
    # Guard: NA ≥ 0.95 − 0.08 = 0.87 keeps 0 and 2 (3 has no value): the larger IN is 2's.
    assert choose(cands, "max", 8) == 2
    assert choose([{"value": 0.5, "na": 1}, {"value": 0.5, "na": 1}], "max", None) == 0  # a tie: the first
    with pytest.raises(AttrrobError):
        choose([{"value": math.nan, "na": 1}], "max", None)


def _summary(path, split, body):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"split": split, **body}))


def test_selection_file_from_validation_summaries(tmp_path):
    def acc(na):
        return {"natural_accuracy": {"mean": na, "ci_low": na - 0.1, "ci_high": na + 0.1, "n": 20},
                "adversarial_accuracy": {"mean": 0.1, "ci_low": 0, "ci_high": 0.2, "n": 20}}

    points = []
    for label, ins in (("lam~0.1", (0.6, 0.7)), ("lam~1.0", (0.8, 0.9))):
        runs = {}
        for seed, value in zip(("0", "1"), ins):
            run = tmp_path / seed / label
            _summary(run / "validation/accuracy", "validation", acc(0.9))
            _summary(run / "validation/attack_topk", "validation",
                     {"metrics": {"topk_intersection": {"mean": value, "ci_low": 0, "ci_high": 1, "n": 5}}})
            runs[seed] = str(run)
        points.append({"label": label, "point": [["train", "lam", float(label[4:])]], "runs": runs})
    spec = {"dataset": "digits", "method": "sarkar", "seeds": [0, 1], "points": points,
            "select": {"metric": "IN", "rule": "max", "attack": "topk", "num_examples": 20, "na_guard": None}}
    result = selection(spec)
    assert result["chosen"]["label"] == "lam~1.0" and result["split"] == "validation"
    best = result["candidates"][1]
    assert best["value"] == pytest.approx(0.85) and best["interval"] == "t interval over 2 seeds"
    # t interval over the two seeds by hand: mean ± t(0.975, 1) · s / √2, s = 0.0707…
    assert best["ci_high"] - best["value"] == pytest.approx(12.7062 * 0.070711 / math.sqrt(2), rel=1e-3)
    # A test-split summary in a validation folder is refused, never used.
    _summary(tmp_path / "x/validation/accuracy", "test", acc(0.9))
    spec["points"][0]["runs"]["0"] = str(tmp_path / "x")
    with pytest.raises(AttrrobError, match="evaluated on the test split"):
        selection(spec)
