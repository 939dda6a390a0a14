"""Models: TF-exact building blocks, shapes, weight sharing of the smooth twin, TF weight loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal

from attrrob import models
from attrrob.config import dataset_input
from attrrob.errors import AttrrobError, ConfigError

DATASETS = ("mnist", "fashion_mnist", "digits", "gtsrb", "flower")


def _tf_per_image_standardization(image_nhwc: np.ndarray) -> np.ndarray:
    """tf.image.per_image_standardization written out in numpy (float32, as TF computes it)."""
    image = image_nhwc.astype(np.float32)
    num = np.float32(np.prod(image.shape[1:]))
    mean = image.mean(axis=(1, 2, 3), keepdims=True, dtype=np.float32)
    variance = np.maximum((image * image).mean(axis=(1, 2, 3), keepdims=True, dtype=np.float32) - mean * mean, 0)
    stddev = np.sqrt(variance)
    min_stddev = np.float32(1.0) / np.sqrt(num)
    return (image - mean) / np.maximum(stddev, min_stddev)


def test_per_image_standardization_matches_tf_formula():
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, size=(4, 9, 7, 3)).astype(np.float32)
    images[1] = 17.0  # constant image: the stddev floor 1/√N applies
    images[2] = 0.0
    images[3, :, :, 1] *= 0.001
    expected = _tf_per_image_standardization(images)
    got = models.per_image_standardization(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)
    # Per image: the other images of the batch do not matter.
    alone = models.per_image_standardization(torch.from_numpy(images[:1]).permute(0, 3, 1, 2))
    torch.testing.assert_close(alone[0], got[0])


def test_per_image_standardization_scale_invariant_and_finite_gradient_on_constant_image():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 255
    torch.testing.assert_close(models.per_image_standardization(0.01 * x), models.per_image_standardization(x))
    const = torch.full((1, 3, 8, 8), 5.0, requires_grad=True)
    (grad,) = torch.autograd.grad(models.per_image_standardization(const).pow(2).sum(), const)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("size", [8, 7])
def test_tf_same_padding_of_strided_conv(size):
    # Independent oracle: TF SAME with stride 2 picks every second output of the stride-1 SAME conv,
    # starting at 1 on even sizes (padding 0 top/left, 1 bottom/right) and at 0 on odd sizes.
    torch.manual_seed(0)
    conv = models.TfConv2d(3, 4, 3, stride=2, bias=False)
    x = torch.randn(2, 3, size, size)
    dense = F.conv2d(x, conv.weight, padding=1)
    start = 1 if size % 2 == 0 else 0
    torch.testing.assert_close(conv(x), dense[..., start::2, start::2])


def _parameter_count(dataset: str) -> int:
    """The parameter count of each data set's network, from the architecture in the spec."""
    if dataset in ("mnist", "fashion_mnist", "digits"):
        k, c1, c2, hidden, side = (5, 32, 64, 1024, 7) if dataset != "digits" else (3, 16, 32, 64, 2)
        return (k * k * 1 * c1 + c1) + (k * k * c1 * c2 + c2) + (side * side * c2 * hidden + hidden) + (hidden * 10 + 10)
    units, classes = (2, 43) if dataset == "gtsrb" else (1, 17)
    count = 3 * 3 * 3 * 16  # init conv, no bias
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        count += 9 * cin * cout + 9 * cout * cout + (units - 1) * 2 * 9 * cout * cout
    return count + 64 * classes + classes


@pytest.mark.parametrize("dataset", DATASETS)
def test_build_gives_the_spec_architecture_with_input_dependent_finite_outputs(dataset):
    torch.manual_seed(0)
    spec = dataset_input(dataset)
    model = models.build(dataset)
    assert model.dataset == dataset and model.num_classes == spec["classes"]
    assert sum(p.numel() for p in model.parameters()) == _parameter_count(dataset)
    x = torch.rand(2, spec["channels"], spec["height"], spec["width"]) * spec["max_value"]
    with torch.no_grad():
        for smooth in (False, True):
            out = model(x, smooth=smooth)
            assert out.shape == (2, spec["classes"]) and torch.isfinite(out).all()
            assert not torch.allclose(out[0], out[1])  # the logits depend on the image
        assert not torch.allclose(model(x), model(x, smooth=True), atol=1e-3)
        # The declared scale invariance holds (ResNets) or does not (CNNs), as the model says.
        invariant = torch.allclose(model(0.5 * x), model(x), rtol=1e-4, atol=1e-5)
        assert invariant == type(model).input_scale_invariant


def test_build_unknown_dataset_raises_config_error():
    with pytest.raises(ConfigError, match="cifar"):
        models.build("cifar")


def _digits_forward_by_hand(model: models.MnistCNN, x: torch.Tensor, smooth: bool) -> torch.Tensor:
    """The digits CNN written out from its parameters (3×3 SAME convs, 2×2 max-pools with TF's ceil)."""
    act = (lambda z: torch.log1p(torch.exp(z))) if smooth else (lambda z: z.clamp_min(0))
    h = act(F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1))
    h = F.max_pool2d(h, 2, 2, ceil_mode=True)
    h = F.max_pool2d(act(F.conv2d(h, model.conv2.weight, model.conv2.bias, padding=1)), 2, 2, ceil_mode=True)
    h = act(h.flatten(1) @ model.fc1.weight.T + model.fc1.bias)
    return h @ model.fc2.weight.T + model.fc2.bias


def test_smooth_twin_shares_the_weights_cnn():
    torch.manual_seed(1)
    model = models.build("digits").double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(x), model(x, smooth=True)
        model.conv1.weight.mul_(1.5)        # one weight change ...
        model.fc2.bias.add_(0.25)
        relu_out, smooth_out = model(x), model(x, smooth=True)
        # ... moves both forwards, each to what a hand-written forward of the new weights gives.
        assert not torch.allclose(relu_out, before[0]) and not torch.allclose(smooth_out, before[1])
        torch.testing.assert_close(smooth_out, _digits_forward_by_hand(model, x, smooth=True), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(relu_out, _digits_forward_by_hand(model, x, smooth=False), rtol=1e-12, atol=1e-12)


def test_smooth_twin_shares_the_weights_resnet():
    torch.manual_seed(1)
    model = models.build("gtsrb").double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    with torch.no_grad():
        relu_out, smooth_out = model(x), model(x, smooth=True)
        shift = torch.linspace(-1, 1, 43, dtype=torch.float64)
        model.logit.bias.add_(shift)  # a change of the last layer moves both forwards by the same amount
        torch.testing.assert_close(model(x) - relu_out, shift.expand(2, -1), rtol=0, atol=1e-12)
        torch.testing.assert_close(model(x, smooth=True) - smooth_out, shift.expand(2, -1), rtol=0, atol=1e-12)
    # Every parameter (and no other tensor) carries the smooth forward: each gets a gradient from it.
    grads = torch.autograd.grad(model(x, smooth=True).square().sum(), list(model.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)
    assert len(grads) == len(model.tf_variables())


def test_activations_are_the_reference_ones():
    z = torch.tensor([-2.0, -0.0, 0.0, 3.0], requires_grad=True)
    out = models._leaky_relu(z)
    torch.testing.assert_close(out, torch.tensor([-0.2, 0.0, 0.0, 3.0]))
    (grad,) = torch.autograd.grad(out.sum(), z)
    torch.testing.assert_close(grad, torch.tensor([0.1, 1.0, 1.0, 1.0]))  # TF: slope 1 at exactly 0
    z64 = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(models._leaky_relu, (z64,))  # double back-propagation
    assert torch.equal(models._leaky_relu(z64), torch.where(z64 < 0, 0.1 * z64, z64))
    torch.testing.assert_close(models._leaky_softplus(z.detach()),
                               0.1 * z.detach() + 0.9 * torch.log1p(torch.exp(z.detach())))


def test_resnet_structure_and_init():
    torch.manual_seed(0)
    flower, gtsrb = models.build("flower"), models.build("gtsrb")
    assert [len(stage) for stage in flower.stages] == [1, 1, 1]
    assert [len(stage) for stage in gtsrb.stages] == [2, 2, 2]
    assert "unit_3_1/sub2/conv2/DW" in gtsrb.tf_variables() and "unit_1_1/sub1/conv1/DW" not in flower.tf_variables()
    conv = gtsrb.stages[2][0].conv2.weight  # 3x3x64x64
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    bound = math.sqrt(3 / 64)
    assert gtsrb.logit.weight.abs().max() <= bound and gtsrb.logit.weight.abs().max() > 0.9 * bound
    assert torch.all(gtsrb.logit.bias == 0)
    assert all(c.bias is None for c in gtsrb._convs().values())
    assert len(models.decayed_parameters(gtsrb)) == 1 + 2 * 6 + 1


def test_cnn_init_truncated_normal():
    torch.manual_seed(0)
    cnn = models.build("mnist")
    w = cnn.fc1.weight
    assert w.abs().max() <= 0.2
    assert w.std().item() == pytest.approx(0.1 * 0.8796, rel=0.01)  # std of N(0, 0.1²) cut at ±2σ
    assert all(torch.all(b == 0.1) for b in (cnn.conv1.bias, cnn.conv2.bias, cnn.fc1.bias, cnn.fc2.bias))
    assert [tuple(p.shape) for p in models.decayed_parameters(cnn)] == [(32, 1, 5, 5), (64, 32, 5, 5),
                                                                        (1024, 3136), (10, 1024)]


def _numpy_cnn_forward(weights: dict, images_nhwc: np.ndarray) -> np.ndarray:
    """The MNIST-challenge CNN in TF layout, written with scipy (SAME conv, 2x2 max-pool, HWC flatten)."""

    def conv_same(x, kernel, bias):
        kh, kw, cin, cout = kernel.shape
        out = np.zeros(x.shape[:2] + (cout,))
        for o in range(cout):
            for i in range(cin):
                out[:, :, o] += signal.correlate2d(x[:, :, i], kernel[:, :, i, o], mode="same")
        return out + bias

    def pool(x):
        h, w, c = x.shape
        return x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))

    logits = []
    for image in images_nhwc.astype(np.float64):
        h = pool(np.maximum(conv_same(image, weights["W_conv1"], weights["b_conv1"]), 0))
        h = pool(np.maximum(conv_same(h, weights["W_conv2"], weights["b_conv2"]), 0))
        h = np.maximum(h.reshape(-1) @ weights["W_fc1"] + weights["b_fc1"], 0)
        logits.append(h @ weights["W_fc2"] + weights["b_fc2"])
    return np.array(logits)


def test_load_tf_weights_cnn_layout_against_numpy_forward():
    gen = np.random.default_rng(3)
    shapes = {"W_conv1": (3, 3, 1, 16), "b_conv1": (16,), "W_conv2": (3, 3, 16, 32), "b_conv2": (32,),
              "W_fc1": (2 * 2 * 32, 64), "b_fc1": (64,), "W_fc2": (64, 10), "b_fc2": (10,)}
    weights = {k: (0.3 * gen.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    images = gen.random((3, 8, 8, 1)).astype(np.float32)
    model = models.load_tf_weights(models.build("digits").double(), weights)
    got = model(torch.from_numpy(images).double().permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(got, _numpy_cnn_forward(weights, images), rtol=1e-10, atol=1e-10)
    # The `weights/` prefix of a golden file is understood; other keys are ignored then.
    prefixed = {f"weights/{k}": v for k, v in weights.items()} | {"images": images}
    again = models.load_tf_weights(models.build("digits").double(), prefixed)
    torch.testing.assert_close(again(torch.from_numpy(images).double().permute(0, 3, 1, 2)), torch.from_numpy(got))


def test_load_tf_weights_rejects_wrong_variables():
    torch.manual_seed(0)
    gtsrb = models.build("gtsrb")
    gtsrb_weights = {}
    for name, (param, layout) in gtsrb.tf_variables().items():
        arr = param.detach().numpy()
        gtsrb_weights[name] = arr.transpose(2, 3, 1, 0) if layout == "conv" else (arr.T if layout == "dense" else arr)
    models.load_tf_weights(models.build("gtsrb"), gtsrb_weights)  # round trip works
    with pytest.raises(AttrrobError, match="unexpected"):
        models.load_tf_weights(models.build("flower"), gtsrb_weights)
    broken = dict(gtsrb_weights)
    del broken["logit/biases"]
    with pytest.raises(AttrrobError, match="logit/biases"):
        models.load_tf_weights(models.build("gtsrb"), broken)
    broken = dict(gtsrb_weights, **{"logit/DW": np.zeros((64, 17), np.float32)})
    with pytest.raises(AttrrobError, match="logit/DW"):
        models.load_tf_weights(models.build("gtsrb"), broken)


def test_models_run_in_float64_and_on_channels_last_input():
    torch.manual_seed(0)
    model = models.build("gtsrb").double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    out = model(x)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), out)


def test_build_is_reproducible_from_an_explicit_generator():
    first = models.build("digits", generator=torch.Generator().manual_seed(7))
    second = models.build("digits", generator=torch.Generator().manual_seed(7))
    third = models.build("digits", generator=torch.Generator().manual_seed(8))
    for a, b, c in zip(first.parameters(), second.parameters(), third.parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(first.conv1.weight, third.conv1.weight)
