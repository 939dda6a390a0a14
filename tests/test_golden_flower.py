"""The authors' Flower ResNet and regularisers (TensorFlow), reproduced on their golden outputs.

Golden files: `<shared>/data/golden/sarkar_flower_m4_logit_x{1,15}.npz` (README there): fixed
weights, 2 images, x_adv within ε = 8, m = 4 IG steps, λ = 0.1. Tolerances are the README's,
relative to the largest golden value. The file's `IG_approx` equals its `IG` exactly: it was
made with approx_factor 1 (all m points), which is what is checked here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrrob import ig as A
from attrrob import models
from attrrob import regularizers as R
from conftest import golden_path

VARIANTS = ("x1", "x15")


def _nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def _nhwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().permute(0, 2, 3, 1).numpy()


def _relative(got, expected) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module", params=VARIANTS)
def case(request):
    golden = dict(np.load(golden_path(f"sarkar_flower_m4_logit_{request.param}.npz")))
    out = {k[len("outputs/"):]: v for k, v in golden.items() if k.startswith("outputs/")}
    model = models.load_tf_weights(models.build("flower"), golden)
    x, x_adv = _nchw(golden["inputs/x"]), _nchw(golden["inputs/x_adv"])
    y = torch.from_numpy(golden["inputs/y"])
    m = int(golden["settings/m"])
    zero = torch.zeros_like(x)
    ce = A.cross_entropy_fn(model, y)
    ours = {
        "output_with_relu": model(x),
        "output_with_softplus": model(x, smooth=True),
        "xent": ce(x).sum(),
        "adv_xent": ce(x_adv).sum(),
        "IG": A.integrated_gradients(ce, x_adv, x, m),
        "IG_half": A.integrated_gradients(ce, x_adv, x, m, points=range(2, m + 1, 2)),
        "base_attr": A.integrated_gradients(A.probability_fn(model, y), x, zero, m),
        "T": A.integrated_gradients(A.probability_fn(model, y), x_adv, zero, m).sum(1),
        "N": A.integrated_gradients(A.negative_probability_fn(model, y), x_adv, zero, m).sum(1),
        "weight_decay_loss": sum(0.5 * w.pow(2).sum() for w in models.decayed_parameters(model)),
    }
    assert models.input_scale_invariant(model, torch.cat([x, x_adv]), 1 / m)
    shortcut = dict(scale_invariant=True)  # one gradient instead of m; same values
    ours["base_attr_shortcut"] = A.integrated_gradients(A.probability_fn(model, y), x, zero, m, **shortcut)
    ours["T_shortcut"] = A.integrated_gradients(A.probability_fn(model, y), x_adv, zero, m, **shortcut).sum(1)
    ours["N_shortcut"] = A.integrated_gradients(A.negative_probability_fn(model, y), x_adv, zero, m,
                                                **shortcut).sum(1)
    ours = {k: v.detach() for k, v in ours.items()}
    ours["IG_approx"] = ours["IG"]  # approx_factor 1: every point (see the last test)
    ours["change_attr"] = -ours["IG"]
    return {"out": out, "ours": ours, "lam": float(golden["settings/lambda"])}


@pytest.mark.parametrize("key", ["output_with_relu", "output_with_softplus"])
def test_logits(case, key):
    assert _relative(case["ours"][key].numpy(), case["out"][key]) <= 1e-6


@pytest.mark.parametrize("key,tol", [("base_attr", 1e-5), ("IG", 1e-2), ("IG_approx", 1e-2), ("change_attr", 1e-2)])
def test_attributions(case, key, tol):
    assert _relative(_nhwc(case["ours"][key]), case["out"][key]) <= tol


@pytest.mark.parametrize("which,key", [("T", "true_cls_attr_dist"), ("N", "neg_cls_attr_dist")])
def test_attribution_distributions(case, which, key):
    dist = case["ours"][which].flatten(1).softmax(1).numpy()
    assert _relative(dist, case["out"][key]) <= 1e-4
    # The distributions lie within ≈2e-8 of uniform, so the check above says little: compare the
    # deviation from uniform itself (ours in float64), to 2% of its size plus the resolution of
    # TF's float32 softmax (16 ulps of 1/16384; its normalising sum is off by ≈1e-6 relative).
    ours64 = case["ours"][which].double().flatten(1).softmax(1).numpy()
    golden = case["out"][key].astype(np.float64)
    uniform = 1.0 / golden.shape[1]
    resolution = 16 * float(np.spacing(np.float32(uniform)))
    assert np.abs(ours64 - golden).max() <= 0.02 * np.abs(golden - uniform).max() + resolution


def test_wacr_terms(case):
    agreeing, disagreeing = R.wacr_terms(case["ours"]["base_attr"], case["ours"]["change_attr"])
    assert agreeing.item() == pytest.approx(float(case["out"]["IG_reg_1_term"]), rel=1e-4)
    assert disagreeing.item() == pytest.approx(float(case["out"]["IG_reg_2_term"]), rel=1e-4)


def test_cacr_in_float64_from_the_golden_distributions(case):
    # KL_TCA/KL_NCA of the file are float32 rounding noise (README); recompute R_CACR from the
    # distributions in float64 (renormalised: their float32 sums are off by ≈1e-8).
    def kl_uniform(dist):
        q = dist.astype(np.float64)
        q /= q.sum(1, keepdims=True)
        return -np.log(q.shape[1]) - np.log(q).mean(1)

    expected = float((kl_uniform(case["out"]["neg_cls_attr_dist"]) - kl_uniform(case["out"]["true_cls_attr_dist"])).sum())
    got = R.cacr(case["ours"]["T"], case["ours"]["N"]).item()
    # The float32 distributions resolve KL values to ≈5e-15 (x15's are ≈5e-14 in all).
    assert got == pytest.approx(expected, rel=1e-3, abs=5e-15)


@pytest.mark.parametrize("key", ["xent", "adv_xent", "weight_decay_loss"])
def test_scalar_losses(case, key):
    assert case["ours"][key].item() == pytest.approx(float(case["out"][key]), rel=1e-5)


def test_total_objective_decomposes(case):
    ours = case["ours"]
    cacr = R.cacr(ours["T"], ours["N"])
    regularizer = cacr + R.wacr(ours["base_attr"], ours["change_attr"])
    # The golden total contains the float32 KL noise (≤ 3e-6), far below these tolerances.
    assert regularizer.item() == pytest.approx(float(case["out"]["IG_regularization_term"]), rel=1e-5)
    total = ours["adv_xent"] + case["lam"] * regularizer
    assert total.item() == pytest.approx(float(case["out"]["adv_loss_with_IG_regularizer"]), rel=1e-5)


def test_ig_approx_of_the_file_used_every_point(case):
    # How the file's IG_approx was made: identical to IG, so approx_factor 1; a factor of 2
    # (points 2, 4) would differ far beyond the IG tolerance.
    np.testing.assert_array_equal(case["out"]["IG_approx"], case["out"]["IG"])
    assert _relative(_nhwc(case["ours"]["IG_half"]), case["out"]["IG_approx"]) > 5e-2


def test_scale_invariant_shortcut_on_the_golden(case):
    ours, out = case["ours"], case["out"]
    assert _relative(_nhwc(ours["base_attr_shortcut"]), out["base_attr"]) <= 1e-5
    for which, key in (("T", "true_cls_attr_dist"), ("N", "neg_cls_attr_dist")):
        assert _relative(ours[f"{which}_shortcut"].flatten(1).softmax(1).numpy(), out[key]) <= 1e-4
    cacr = R.cacr(ours["T_shortcut"], ours["N_shortcut"]).item()
    assert cacr == pytest.approx(R.cacr(ours["T"], ours["N"]).item(), rel=1e-3, abs=5e-15)
