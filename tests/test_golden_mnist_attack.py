"""RAR's MNIST top-k attack on its own golden weights: the exactly-zero first direction of images 0 and 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrrob import metrics, models
from attrrob.attacks.saliency import SaliencyObjective, attack_batch, real_saliency, surrogate_objective_gradient
from conftest import golden_path

SETTINGS = dict(eps=0.3, step_size=0.01, iterations=100, k_attack=200, k_metric=100, ig_steps=100, restarts=1,
                random_restarts=1, ties="expected")


@pytest.fixture(scope="module")
def golden():
    data = np.load(golden_path("rar_mnist_natural.npz"))
    model = models.build("mnist")
    models.load_tf_weights(model, {k: data[k] for k in data.files if k.startswith("weights/")})
    x = torch.tensor(data["images"]).permute(0, 3, 1, 2).contiguous()  # NHWC → NCHW
    y = torch.tensor(data["labels"]).long()
    return model.eval(), x, y, data


def test_first_direction_of_images_0_and_2_is_exactly_zero(golden):
    model, x, y, data = golden
    picks = [0, 2]
    xs, ys = x[picks], y[picks]
    original = real_saliency(model, xs, ys, 100)
    objective = SaliencyObjective("topk", metrics.topk_mask(original, 200), 28, 28)
    direction = -surrogate_objective_gradient(model, xs, ys, objective, 100).sign()
    for row, image in enumerate(picks):
        reference = data[f"attack/{image}/first_direction"]
        assert not reference.any()  # the golden file's own claim
        np.testing.assert_array_equal(direction[row].permute(1, 2, 0).numpy(), reference)


def test_stay_never_moves_and_scores_one(golden):
    model, x, y, data = golden
    picks = [0, 2]
    result = attack_batch(model, x[picks], y[picks], picks, "topk", {**SETTINGS, "zero_direction": "stay"},
                          lo=0.0, hi=1.0, integral=False)
    assert result.zero_direction.tolist() == [True, True]
    assert torch.equal(result.x_kept, x[picks]) and result.step.tolist() == [0, 0]
    out = result.metrics(100, 28, 28)
    for row, image in enumerate(picks):
        in_rho_tau = [out["topk_intersection"][row].item(), out["spearman_rho"][row].item(),
                      out["kendall_tau"][row].item()]
        np.testing.assert_array_equal(in_rho_tau, data[f"attack/{image}/final_in_rho_tau"])


def test_random_sign_flags_and_moves(golden):
    model, x, y, _ = golden
    picks = [0, 2]
    result = attack_batch(model, x[picks], y[picks], picks, "topk",
                          {**SETTINGS, "iterations": 2, "zero_direction": "random_sign"},
                          lo=0.0, hi=1.0, integral=False, seed=0)
    assert result.zero_direction.tolist() == [True, True]
    assert result.improved.all() and (result.kendall_tau < 1).all()
