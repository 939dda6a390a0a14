"""Settings: defaults per data set × method, user overrides, and one-line errors naming the key."""

import pytest
import yaml

from attrrob import config
from attrrob.errors import ConfigError


def test_paper_defaults_follow_the_spec():
    mnist_nat = config.train_settings("mnist", "natural")
    assert (mnist_nat["steps"], mnist_nat["batch_size"], mnist_nat["optimizer"]) == (25000, 50, "adam")
    assert config.train_settings("mnist", "ig_norm")["lam"] == 1.0
    assert config.train_settings("mnist", "ig_sum_norm")["beta"] == 0.1
    assert config.train_settings("gtsrb", "ig_sum_norm")["beta"] == 1.0
    assert config.train_settings("flower", "natural")["loss_reduction"] == "mean"
    flower = config.train_settings("flower", "sarkar")
    assert flower["lr_schedule"] == [[0, 1e-4], [500, 3e-4], [60000, 1e-4]]  # the authors' train_our.py
    assert (flower["m"], flower["approx_factor"], flower["lam"], flower["batch_size"]) == (20, 4, 0.1, 1)
    assert config.train_settings("flower", "natural")["lr_schedule"][1] == [500, 1e-2]
    assert config.train_settings("gtsrb", "madry")["loss_reduction"] == "mean"
    assert config.attack_settings("gtsrb")["iterations"] == 50
    assert config.attack_settings("flower")["k_attack"] == 1000
    assert config.accuracy_settings("fashion_mnist")["steps"] == 20
    assert config.dataset_input("gtsrb") == {"channels": 3, "height": 32, "width": 32, "classes": 43,
                                             "max_value": 255.0, "integral": True}


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "gtsrb", "flower", "digits"])
def test_every_attack_keeps_the_best_of_three_runs_by_default(dataset):
    """RAR's eval_attribution_attack.py: attribution_attack_times = 3 for every attack; with
    zero_direction stay the gradient attacks are deterministic and one run is the same."""
    for attack in ("topk", "random", "mass_center", "targeted"):
        assert config.attack_settings(dataset, attack=attack)["runs"] == 3
    stay = {"zero_direction": "stay"}
    assert config.attack_settings(dataset, overrides=stay, attack="topk")["runs"] == 1
    assert config.attack_settings(dataset, overrides=stay, attack="random")["runs"] == 3
    assert config.attack_settings(dataset, attack="noise")["runs"] == 1  # one draw, no search
    assert "runs" not in config.attack_settings(dataset)  # no attack named: which one's runs is unknown


def test_accuracy_pgd_loss_settings_are_checked():
    assert config.accuracy_settings("flower")["pgd_loss"] == "ce"  # RAR's protocol stays the default
    authors = config.accuracy_settings("flower", overrides={"pgd_loss": "ce_ig_approx"})
    assert (authors["pgd_ig_weight"], authors["pgd_ig_m"], authors["pgd_ig_approx_factor"]) == (0.1, 50, 10)
    with pytest.raises(ConfigError, match="pgd_loss: expected one of ce, ce_ig_approx"):
        config.accuracy_settings("flower", overrides={"pgd_loss": "xent"})
    with pytest.raises(ConfigError, match="pgd_ig_approx_factor: must divide pgd_ig_m=50, got 3"):
        config.accuracy_settings("flower", overrides={"pgd_ig_approx_factor": 3})


def test_user_config_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"datasets": ["mnist"], "hyperparameters": {
        "mnist": {"train": {"common": {"steps": 10}, "sarkar": {"lam": 0.5}}, "attack": {"iterations": 3}}}}))
    s = config.train_settings("mnist", "sarkar", path, {"batch_size": 7})
    assert (s["steps"], s["lam"], s["batch_size"]) == (10, 0.5, 7)
    assert config.train_settings("mnist", "natural", path)["steps"] == 10
    assert config.attack_settings("mnist", path)["iterations"] == 3
    assert isinstance(config.train_settings("mnist", "sarkar", path, {"lam": 1})["lam"], float)


@pytest.mark.parametrize("body, fragment", [
    ({"mnist": {"train": {"common": {"lamda": 1}}}}, "hyperparameters.mnist.train.common.lamda: unknown key"),
    ({"mnist": {"train": {"common": {"steps": "many"}}}}, "hyperparameters.mnist.train.common.steps: expected an integer"),
    ({"cifar": {}}, "hyperparameters.cifar: unknown dataset"),
    ({"mnist": {"attack": {"eps": [1]}}}, "hyperparameters.mnist.attack.eps: expected a number"),
])
def test_bad_user_config_names_file_and_key(tmp_path, body, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"hyperparameters": body}))
    with pytest.raises(ConfigError) as err:
        config.read_user_config(path)
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_yaml_reports_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("hyperparameters:\n  mnist: {train: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+: invalid YAML"):
        config.read_user_config(path)


def test_unknown_names_and_overrides_are_rejected():
    with pytest.raises(ConfigError, match="unknown method 'sarkr'"):
        config.train_settings("mnist", "sarkr")
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        config.attack_settings("svhn")
    with pytest.raises(ConfigError, match="override stepz=3: unknown training setting"):
        config.train_settings("mnist", "natural", overrides={"stepz": 3})
    with pytest.raises(ConfigError, match="approx_factor: must divide m=50"):
        config.train_settings("mnist", "ig_norm", overrides={"approx_factor": 7})
    with pytest.raises(ConfigError, match="zero_direction"):
        config.attack_settings("mnist", overrides={"zero_direction": "jump"})


def test_parse_overrides_reads_yaml_scalars_without_evaluating():
    assert config.parse_overrides(["steps=5", "lam=0.5", "optimizer=adam", "lr_schedule=[[0, 0.1]]"]) == {
        "steps": 5, "lam": 0.5, "optimizer": "adam", "lr_schedule": [[0, 0.1]]}
    assert config.parse_overrides(["optimizer=__import__('os')"]) == {"optimizer": "__import__('os')"}
    with pytest.raises(ConfigError, match="expected key=value"):
        config.parse_overrides(["steps"])


@pytest.mark.parametrize("method, given, fragment", [
    ("ig_sum_norm", {"lam": 0.3}, "ig_sum_norm has no λ; its weight is 'beta' (β); set beta instead"),
    ("sarkar", {"beta": 0.3}, "sarkar has no β; its weight is 'lam' (λ); set lam instead"),
    ("ig_norm", {"beta": 0.3}, "ig_norm has no β"),
])
def test_a_weight_key_of_another_method_names_the_right_one(tmp_path, method, given, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"hyperparameters": {"mnist": {"train": {method: given}}}}))
    with pytest.raises(ConfigError, match=f"train.{method}.{next(iter(given))}: " + fragment.replace("(", r"\(").replace(")", r"\)")):
        config.train_settings("mnist", method, path)
    with pytest.raises(ConfigError, match=r"--set\." + next(iter(given))):
        config.train_settings("mnist", method, None, given)


def test_inner_weight_is_tied_to_the_methods_own_weight_unless_set():
    from attrrob.objectives import inner_ig_weight

    s = config.train_settings("mnist", "ig_sum_norm", None, {"beta": 0.25})
    assert s["inner_ig_weight"] is None and inner_ig_weight(s) == 0.25
    s = config.train_settings("mnist", "sarkar", None, {"lam": 0.5})
    assert inner_ig_weight(s) == 0.5
    s = config.train_settings("mnist", "sarkar", None, {"inner_ig_weight": 2})
    assert s["inner_ig_weight"] == 2.0 and inner_ig_weight(s) == 2.0
    with pytest.raises(ConfigError, match="inner_ig_weight: expected a number or null"):
        config.train_settings("mnist", "sarkar", None, {"inner_ig_weight": "big"})


# ---------------------------------------------------------------- one registry, one set of limits

from pathlib import Path  # noqa: E402

from attrrob import registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _schema():
    return yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def test_every_list_of_names_agrees_with_the_registry():

    schema = _schema()
    defs = schema["$defs"]
    lists = {
        "defaults.yaml datasets": tuple(config._defaults()),
    }
    for where, names in lists.items():
        assert names == registry.DATASETS, f"{where} disagrees with registry.DATASETS"
    methods = {
        "workflow default methods": tuple(schema["properties"]["methods"]["default"]),
    }
    for where, names in methods.items():
        assert names == registry.METHODS, f"{where} disagrees with registry.METHODS"
    for name in registry.DATASETS:  # a method needs no block there (its Method.defaults suffice)
        groups = set(config._defaults()[name]["train"]) - {"common"}
        assert groups <= set(registry.METHODS), f"defaults.yaml {name}.train: {groups - set(registry.METHODS)}"
    assert registry.ATTACKS == config.ATTACKS
    assert tuple(schema["properties"]) == registry.WORKFLOW_KEYS


def test_the_workflow_schema_refers_to_the_package_settings_schema_not_a_copy():
    defs = _schema()["$defs"]
    settings_schema = REPO / "src/attrrob" / config.SETTINGS_SCHEMA
    for section, limits in config.LIMITS.items():
        ref = defs[f"{section}_settings"]["$ref"]
        assert ref == f"../../src/attrrob/{config.SETTINGS_SCHEMA}#/$defs/{section}_settings"
        assert len(defs[f"{section}_settings"]) == 1, "a reference, nothing copied beside it"
        # The reference resolves, relative to the workflow schema, to the limits the package checks.
        target = (REPO / "workflow/schemas" / ref.split("#")[0]).resolve()
        assert target == settings_schema.resolve()
        assert yaml.safe_load(target.read_text())["$defs"][f"{section}_settings"]["properties"] == limits


def test_the_workflow_schema_enforces_the_package_limits():
    """Through the reference: a value past a package limit is a schema error naming the key."""
    base = yaml.safe_load((REPO / "config/quickstart.yaml").read_text())
    schema = REPO / "workflow/schemas/config.schema.yaml"
    assert config.schema_problem(base, schema) is None
    base.setdefault("hyperparameters", {}).setdefault("digits", {}).setdefault("attack", {})["window"] = 4
    assert config.schema_problem(base, schema).startswith("hyperparameters.digits.attack.window:")


def test_every_default_has_a_typed_schema_entry_and_satisfies_it():
    """defaults.yaml holds values only; settings.schema.yaml gives each its type and limits. Oracle:
    jsonschema's own validator on every section and training group of every data set."""
    import jsonschema

    defs = yaml.safe_load((REPO / "src/attrrob" / config.SETTINGS_SCHEMA).read_text())["$defs"]
    for name, body in config._defaults().items():
        sections = {"train": body["train"], **{s: body[s] for s in ("accuracy", "attack", "prepare") if s in body}}
        for section, values in sections.items():
            groups = values.items() if section == "train" else [(None, values)]
            schema = {**defs[f"{section}_settings"], "additionalProperties": False}
            for group, entries in groups:
                where = f"{name}.{section}" + (f".{group}" if group else "")
                assert all("type" in schema["properties"][key] for key in entries if key in schema["properties"]), where
                jsonschema.Draft202012Validator(schema).validate(entries)  # unknown keys fail too


@pytest.mark.parametrize("section, key, good, bad", [
    ("attack", "eps", 0.0, -0.1), ("attack", "step_size", 1e-3, 0.0), ("attack", "iterations", 1, 0),
    ("attack", "restarts", 1, 0), ("attack", "random_restarts", 1, 0), ("attack", "ties", "index", "random"),
    ("accuracy", "steps", 1, 0), ("train", "pgd_step_size", 1e-3, 0.0), ("train", "pgd_steps", 0, -1),
    ("prepare", "test_fraction", 0.5, 1.0), ("attack", "window", 1, 0), ("attack", "window", 5, 4),
])
def test_limits_accept_the_boundary_and_refuse_beyond_it(section, key, good, bad):
    config.check_value(section, key, good, "x")
    with pytest.raises(ConfigError, match=f"x: (must be|expected one of).*got {bad!r}"):
        config.check_value(section, key, bad, "x")


def test_k_is_at_most_the_pixel_count_and_all_is_a_count():
    assert config.attack_settings("digits", overrides={"k_attack": 64})["k_attack"] == 64
    with pytest.raises(ConfigError, match=r"digits.attack.k_attack: must be ≤ 64"):
        config.attack_settings("digits", overrides={"k_attack": 65})
    assert config.attack_settings("digits", overrides={"num_examples": "all"})["num_examples"] == "all"
    with pytest.raises(ConfigError, match="--set num_examples: must be ≥ 1, got 0"):
        config.accuracy_settings("digits", overrides={"num_examples": 0})


def test_unknown_top_level_key_of_a_cli_config_is_an_error(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("hyperparamters:\n  digits: {attack: {iterations: 3}}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown top-level key 'hyperparamters'"):
        config.attack_settings("digits", path)


def test_workflow_files_and_schema_problems_are_one_line(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        config.check_workflow_files([empty])
    problem = config.schema_problem({"hyperparameters": {"digits": {"attack": {"eps": -1}}}},
                                    REPO / "workflow/schemas/config.schema.yaml")
    assert problem.startswith("hyperparameters.digits.attack.eps:") and "\n" not in problem
    assert config.schema_problem({}, REPO / "workflow/schemas/config.schema.yaml") is None


def _variant_config(tmp_path, variants, name="v.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"hyperparameters": {"mnist": {"attack": {"iterations": 7},
                                                                  "attack_variants": variants}}}))
    return path


def test_attack_variant_layers_its_settings_on_the_config(tmp_path):
    path = _variant_config(tmp_path, {"topk_k75": {"attack": "topk", "k_attack": 75, "k_metric": 75}})
    assert config.resolve_attack("mnist", "topk_k75", path) == ("topk", {"k_attack": 75, "k_metric": 75})
    assert config.resolve_attack("mnist", "random", path) == ("random", {})
    variant = config.attack_settings("mnist", path, variant="topk_k75")
    base = config.attack_settings("mnist", path)
    assert (variant["k_attack"], variant["k_metric"], variant["iterations"]) == (75, 75, 7)
    assert (base["k_attack"], base["k_metric"]) == (200, 100)
    # --set still wins over the variant, and an attack's own name is the plain attack
    assert config.attack_settings("mnist", path, {"k_attack": 50}, variant="topk_k75")["k_attack"] == 50
    assert config.attack_settings("mnist", path, variant="topk") == {**base, "runs": 3}
    assert variant["runs"] == 3
    config.check_all_settings(path, ["mnist"], ["natural"], ["topk", "topk_k75"])


@pytest.mark.parametrize("variants, fragment", [
    ({"Topk": {"attack": "topk"}}, "attack_variants.Topk: a variant name is lower-case"),
    ({"topk": {"attack": "topk", "k_attack": 5}}, "attack_variants.topk: 'topk' is an attack's own name"),
    ({"v": {"k_attack": 5}}, "attack_variants.v: expected a mapping with 'attack:"),
    ({"v": {"attack": "fgsm"}}, "attack_variants.v.attack: unknown attack 'fgsm'"),
    ({"v": {"attack": "topk", "kk": 5}}, "attack_variants.v.kk: unknown attack setting"),
    ({"v": {"attack": "topk", "k_attack": 0}}, "attack_variants.v.k_attack: must be ≥ 1"),
    ({"v": {"attack": "topk", "k_attack": "many"}}, "attack_variants.v.k_attack: expected an integer"),
    ([1], "attack_variants must be a mapping"),
])
def test_bad_attack_variant_is_one_line_naming_it(tmp_path, variants, fragment):
    path = _variant_config(tmp_path, variants)
    with pytest.raises(ConfigError) as err:
        config.attack_settings("mnist", path, variant="topk")
    assert fragment in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_attack_name_lists_the_variants(tmp_path):
    path = _variant_config(tmp_path, {"topk_k75": {"attack": "topk", "k_attack": 75}})
    with pytest.raises(ConfigError, match=r"unknown attack 'topk_k50'.*known: topk, random, mass_center, "
                                          r"targeted, noise, topk_k75"):
        config.check_all_settings(path, ["mnist"], ["natural"], ["topk", "topk_k50"])
    with pytest.raises(ConfigError, match=r"mnist.attack_variants.topk_k75.k_attack: must be ≤ 784"):
        config.attack_settings("mnist", _variant_config(tmp_path, {"topk_k75": {"attack": "topk", "k_attack": 785}},
                                                        "big.yaml"), variant="topk_k75")
    # a variant defined for one data set only cannot run on another one of the same config
    with pytest.raises(ConfigError, match="unknown attack 'topk_k75'"):
        config.check_all_settings(path, ["mnist", "digits"], ["natural"], ["topk_k75"])


def test_schema_option_bounds_mirror_the_option_limits():
    """The workflow options passed on to the commands have the commands' bounds."""
    schema = _schema()["properties"]
    limits = config.OPTION_LIMITS
    assert schema["train_steps"]["maximum"] == limits["steps"]["maximum"]
    assert schema["evaluation"]["properties"]["num_examples"]["oneOf"][0]["maximum"] == limits["num_examples"]["maximum"]
    assert schema["evaluation"]["properties"]["save_examples"]["maximum"] == limits["save_examples"]["maximum"]
