"""A method is one registered object: a toy method registered here, and nowhere else, trains
through `attrrob train`, logs its own term, takes its own defaults and weight key, and shows in
the reports under its own name."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from attrrob import config, objectives, registry
from attrrob.errors import ConfigError

TOY = "toy_logit_penalty"


def toy_outer(model, x, x_adv, y, settings):
    """CE(x) + λ Σ logits²: a penalty no built-in method has."""
    logits = model(x)
    ce = F.cross_entropy(logits, y, reduction="sum")
    square = logits.pow(2).sum()
    return ce + settings["lam"] * square, {"ce": ce, "logit_sq": square}


@pytest.fixture
def toy():
    method = registry.register(registry.Method(TOY, toy_outer, None, ("ce", "logit_sq"), "Toy logit penalty",
                                               weight="lam", defaults={"lam": 0.05}))
    yield method
    registry.unregister(TOY)


def test_a_registered_toy_method_trains_through_the_cli(toy, tmp_path, digits_npz):
    from attrrob.cli import train as cli

    out = tmp_path / "results/digits" / TOY
    metrics = cli.main(["--dataset", "digits", "--method", TOY, "--data", str(digits_npz), "--out", str(out),
                        "--checkpoint-dir", str(tmp_path / "ck"), "--device", "cpu", "--steps", "2", "--no-progress"])
    assert metrics["steps"] == 2 and metrics["settings"]["method"] == TOY
    assert metrics["settings"]["lam"] == 0.05  # its own default (digits' defaults.yaml has no train.<toy>)
    assert (out / "model.pt").is_file()
    with open(out / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 1 and float(rows[-1]["logit_sq"]) > 0.0  # its own term, logged


def test_the_toy_loss_is_the_closed_form(toy):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).double()
    x, y = torch.rand(5, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    settings = {"lam": 0.3, "weight_decay": 0.0}
    loss, terms = objectives.compute_loss(TOY, model, x, y, settings)
    logits = model(x).detach()
    expected_sq = float((logits ** 2).sum())
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    expected_ce = float(-log_p[torch.arange(5), y].sum())
    assert terms["logit_sq"] == pytest.approx(expected_sq, rel=1e-12)
    assert float(loss.detach()) == pytest.approx(expected_ce + 0.3 * expected_sq, rel=1e-12)
    assert objectives.term_names(TOY) == ("ce", "logit_sq", "weight_decay", "total")


def test_the_toy_method_is_known_everywhere_names_are_read(toy):
    from attrrob import report
    from attrrob.report import figures

    assert TOY in registry.method_names() and TOY not in registry.METHODS  # built-ins stay as they are
    assert report.method_name(TOY) == "Toy logit penalty"
    assert figures.method_palette([TOY, "natural"])[TOY] != figures.method_palette(["natural"])["natural"]
    with pytest.raises(ConfigError, match=r"--set\.beta: toy_logit_penalty has no β; its weight is 'lam'"):
        config.train_settings("digits", TOY, None, {"beta": 0.1})
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(toy)


def test_an_unknown_method_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match="unknown method 'trades' \\(known: natural, madry"):
        registry.method("trades")


def test_the_built_in_objectives_resolve_to_the_losses_of_the_objectives_module():
    for name in registry.METHODS:
        method = registry.method(name)
        assert callable(method.outer_loss) and method.outer_loss.__module__ == "attrrob.objectives"
        assert (method.inner_loss is None) == (name == "natural")
        assert name == "natural" or method.weight is not None or name == "madry"


# ---- a data set is one registered object too

BARS = "toy_bars"


def bars_prepare(dataset, raw_dir, settings, verify_sources):
    """Two classes of 6×6 images: a horizontal or a vertical bar on noise (no raw files)."""
    import numpy as np

    rng = np.random.default_rng(int(settings["split_seed"]))

    def images(n):
        labels = np.arange(n) % 2
        x = rng.integers(0, 40, size=(n, 1, 6, 6)).astype(np.uint8)
        for i, label in enumerate(labels):
            if label:
                x[i, 0, :, 2] = 250
            else:
                x[i, 0, 2, :] = 250
        return x, labels.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = images(64), images(16)
    return ({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, [], 1.0 / 255.0,
            ["synthetic bars"], ["not a data set of the paper"])


def bars_network(spec, *, dataset, generator=None):
    from attrrob.models import MnistCNN

    return MnistCNN(height=spec["height"], width=spec["width"], channels=(4, 8), kernel_size=3, hidden=16,
                    in_channels=spec["channels"], classes=spec["classes"], dataset=dataset, generator=generator)


@pytest.fixture
def bars():
    defaults = config._defaults_file()["digits"]
    own = {**defaults, "input": {"channels": 1, "height": 6, "width": 6, "classes": 2, "max_value": 1.0,
                                 "integral": False},
           "prepare": {"split_seed": 3}}
    dataset = registry.register_dataset(registry.Dataset(BARS, "Toy bars", bars_prepare, bars_network,
                                                         defaults=own))
    yield dataset
    registry.unregister_dataset(BARS)


def test_a_registered_toy_data_set_prepares_and_trains_through_the_clis(bars, tmp_path):
    import json

    from attrrob.cli import prepare as prepare_cli
    from attrrob.cli import train as train_cli
    from attrrob.report import dataset_name

    (tmp_path / "raw").mkdir()
    prepare_cli.main(["--dataset", BARS, "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "bars.npz")])
    manifest = json.loads((tmp_path / "bars.json").read_text())
    assert manifest["dataset"] == BARS and manifest["counts"] == {"train": 64, "test": 16}
    metrics = train_cli.main(["--dataset", BARS, "--method", "madry", "--data", str(tmp_path / "bars.npz"),
                              "--out", str(tmp_path / "run"), "--device", "cpu", "--steps", "2", "--no-progress",
                              "--set", "batch_size=8"])
    assert metrics["steps"] == 2 and (tmp_path / "run/model.pt").is_file()
    assert config.dataset_input(BARS)["height"] == 6 and dataset_name(BARS) == "Toy bars"
    assert BARS in config.datasets() and BARS not in registry.DATASETS


# ---- an attack is one registered object too

PEAK = "toy_peak"


def peak_constant(model, x, y, map_original, settings, *, indices, seed, target, max_rows):
    """Each original map's brightest pixel, as a one-hot mask."""
    return torch.nn.functional.one_hot(map_original.argmax(1), map_original.shape[1]).to(map_original.dtype)


def peak_loss(maps, mask, height, width):
    """Mass on the original peak: the walk moves attribution away from it."""
    return (maps * mask).sum(1)


@pytest.fixture
def peak():
    attack = registry.register_attack(registry.Attack(PEAK, peak_constant, peak_loss))
    yield attack
    registry.unregister_attack(PEAK)


def test_a_registered_toy_attack_runs_through_attrrob_evaluate(peak, tmp_path, digits_npz):
    import json

    from attrrob.cli import evaluate as evaluate_cli
    from attrrob.cli import train as train_cli

    train_cli.main(["--dataset", "digits", "--method", "natural", "--data", str(digits_npz), "--out",
                    str(tmp_path / "run"), "--device", "cpu", "--steps", "20", "--no-progress"])
    out = tmp_path / "run" / f"attack_{PEAK}"
    evaluate_cli.main(["--model", str(tmp_path / "run/model.pt"), "--data", str(digits_npz), "--dataset", "digits",
                       "--attack", PEAK, "--out", str(out), "--device", "cpu", "--num-examples", "8",
                       "--set", "iterations=3", "--set", "ig_steps=4", "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attack"] == PEAK and summary["settings"]["runs"] == summary["settings"]["restarts"]
    assert summary["counts"]["n_attacked"] >= 1
    assert 0.0 <= summary["metrics"]["topk_intersection"]["mean"] <= 1.0
    assert config.runs_of(PEAK, {"restarts": 3, "zero_direction": "stay"}) == 1
