"""AutoAttack (APGD-CE + APGD-T, ART) beside PGD in `evaluate_accuracy`, on a tiny digits model.

Oracles: at ε = 0 every attack must leave each image's prediction as it is (so both AAs equal
NA exactly); at ε > 0 the adaptive pair must break at least every image that fixed-step PGD
breaks, up to a tolerance of 2% of the images (the two use different random starts, so one image
in fifty may fall to PGD's start alone); perturbations stay in the ε-ball and the valid range;
and the CSV column agrees with the summary.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attrrob.attacks.autoattack import autoattack
from attrrob.errors import AttrrobError
from attrrob.evaluation import evaluate_accuracy, write_accuracy_outputs

TOLERANCE = 0.02  # share of images by which AutoAttack AA may exceed PGD AA (see the module docstring)
SETTINGS = {"eps": 0.1, "steps": 10, "step_size": 0.02, "batch_size": 64, "num_examples": 150,
            "autoattack": True, "autoattack_iterations": 20, "autoattack_target_classes": 3}


@pytest.fixture(scope="module")
def digits_model():
    """A small MLP trained briefly on scikit-learn's digits (8x8, values in [0, 1])."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.eval()
    return model, x[1400:], y[1400:]


def test_autoattack_at_most_pgd_and_both_na_at_eps_zero(digits_model, tmp_path):
    model, x, y = digits_model
    outcome = evaluate_accuracy(model, x, y, SETTINGS, dataset="digits", seed=3, progress=False)
    s = outcome.summary
    na, pgd_aa, auto_aa = (s[k]["mean"] for k in ("natural_accuracy", "adversarial_accuracy", "autoattack_accuracy"))
    assert na > 0.85 and pgd_aa < na  # the attacks have something to do
    assert auto_aa <= pgd_aa + TOLERANCE
    assert s["autoattack_accuracy"]["n"] == s["adversarial_accuracy"]["n"] == 150  # the same images
    assert s["autoattack"]["library"] == "adversarial-robustness-toolbox" and s["autoattack"]["version"]
    assert s["autoattack"]["target_classes"] == 3 and s["autoattack"]["iterations"] == 20

    zero = evaluate_accuracy(model, x, y, {**SETTINGS, "eps": 0.0}, dataset="digits", seed=3, progress=False).summary
    assert zero["adversarial_accuracy"] == zero["natural_accuracy"] == zero["autoattack_accuracy"]
    assert zero["natural_accuracy"]["mean"] == na

    write_accuracy_outputs(tmp_path, outcome)
    with open(tmp_path / "per_example.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "autoattack_prediction" in rows[0]
    from_csv = sum(r["autoattack_prediction"] == r["label"] for r in rows) / len(rows)
    assert from_csv == pytest.approx(auto_aa)
    assert json.loads((tmp_path / "summary.json").read_text())["autoattack_accuracy"]["mean"] == pytest.approx(auto_aa)


def test_autoattack_stays_in_the_ball_and_is_seeded(digits_model):
    model, x, y = digits_model
    xb, yb = x[:40], y[:40]
    eps = 0.1
    with torch.no_grad():
        correct = model(xb).argmax(1) == yb
    one = autoattack(model, xb, yb, eps=eps, lo=0.0, hi=1.0, iterations=10, target_classes=2, classes=10, seed=1)
    two = autoattack(model, xb, yb, eps=eps, lo=0.0, hi=1.0, iterations=10, target_classes=2, classes=10, seed=1)
    assert torch.equal(one, two)
    assert float((one - xb).abs().max()) <= eps + 1e-6 and float(one.min()) >= 0.0 and float(one.max()) <= 1.0
    # Images already misclassified are not attacked.
    assert torch.equal(one[~correct], xb[~correct])
    with torch.no_grad():
        assert bool((model(one).argmax(1) != yb).sum() > (~correct).sum())  # it breaks some correct ones


def test_autoattack_pair_breaks_more_than_apgd_ce_alone(digits_model):
    """APGD-T adds to APGD-CE: with targets it breaks at least as many images as without."""
    model, x, y = digits_model
    xb, yb = x[:80], y[:80]
    kwargs = dict(eps=0.08, lo=0.0, hi=1.0, iterations=10, classes=10, seed=0)
    x_ce = autoattack(model, xb, yb, target_classes=0, **kwargs)
    x_pair = autoattack(model, xb, yb, target_classes=3, **kwargs)
    with torch.no_grad():
        ce_only, pair = ((model(z).argmax(1) == yb).sum() for z in (x_ce, x_pair))
    assert pair <= ce_only


def test_bad_autoattack_settings_are_one_line_errors(digits_model):
    model, x, y = digits_model
    with pytest.raises(AttrrobError, match="autoattack_iterations"):
        autoattack(model, x[:4], y[:4], eps=0.1, lo=0.0, hi=1.0, iterations=0, target_classes=3, classes=10)
