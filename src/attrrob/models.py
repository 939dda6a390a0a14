"""The networks of RAR and Sarkar et al., ported exactly from their TensorFlow code.

- `MnistCNN`: the MNIST-challenge CNN (MNIST, Fashion-MNIST) and a small member of the same
  family for sklearn's 8x8 `digits`.
- `RarResNet`: the pre-activation ResNet without batch norm of RAR's GTSRB/Flower code
  (per-image standardisation, leaky ReLU 0.1, avg-pool + zero-padded-channel shortcuts).

Every model takes NCHW float input in the data set's native range and returns logits.
`model(x, smooth=True)` evaluates the *same* parameters with the smooth surrogate activations
that the attribution attack differentiates (softplus for the CNN, 0.1x + 0.9·softplus(x) for the
ResNet); max-pooling stays max-pooling. Models read no files.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import activations, registry
from .config import dataset_input
from .errors import AttrrobError, ConfigError

__all__ = [
    "MnistCNN",
    "RarResNet",
    "build",
    "per_image_standardization",
    "load_tf_weights",
    "decayed_parameters",
    "input_scale_invariant",
    "scale_invariant_images",
]

LEAK = 0.1


# ----------------------------------------------------------------------------- building blocks


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's `tf.image.per_image_standardization` on an NCHW batch, per image.

    (x − mean) / max(std, 1/√N), N = C·H·W, with the population variance computed as
    E[x²] − E[x]² and clipped at 0, as TF does. The floor is applied to the variance before the
    square root (same value), so that the gradient stays finite for constant images.
    """
    num = math.prod(x.shape[1:])
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    variance = (x * x).mean(dim=(1, 2, 3), keepdim=True) - mean * mean
    min_std = 1.0 / math.sqrt(num)
    # sqrt(max(v, 1/N)) == max(sqrt(relu(v)), 1/√N), but sqrt is never differentiated at 0.
    std = variance.clamp_min(min_std * min_std).sqrt()
    scale = torch.clamp_min(std, min_std)
    return (x - mean) / scale


class _TfLeakyRelu(torch.autograd.Function):
    """tf.where(x < 0, 0.1x, x): F.leaky_relu's values, but slope 1 at exactly 0 as in TF
    (F.leaky_relu's gradient uses 0.1 there). Twice as fast as the torch.where form; the
    backward is made of differentiable ops, so double back-propagation works."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.leaky_relu(x, LEAK)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where(x < 0, LEAK * grad, grad)


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return _TfLeakyRelu.apply(x)


def _leaky_softplus(x: torch.Tensor) -> torch.Tensor:
    return LEAK * x + (1.0 - LEAK) * F.softplus(x)


def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) along one dimension: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TfConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, asymmetric when TF's is (stride-2 convs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = _tf_same_padding(x.shape[-2], k, s)
        left, right = _tf_same_padding(x.shape[-1], k, s)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, s, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, s)


def _max_pool_2x2_same(x: torch.Tensor) -> torch.Tensor:
    # TF 'SAME' 2x2/2 max-pool pads only after; ceil_mode does the same (and nothing on even sizes).
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


# ----------------------------------------------------------------------------- MNIST CNN


class MnistCNN(nn.Module):
    """conv k×k×c1 SAME → act → maxpool → conv k×k×c2 → act → maxpool → FC hidden → act → FC classes.

    The defaults are the MNIST-challenge network (5×5×32, 5×5×64, 1024, 10 classes); `build`
    also makes a small member of the family for 8×8 digits. TF init: truncated normal
    (std 0.1, cut at 2 std) for kernels, 0.1 for biases. smooth=True: softplus activations.
    """

    # Biases and ReLUs: model(α·x) ≠ model(x), so zero-baseline IG needs every path point.
    input_scale_invariant = False

    def __init__(self, *, in_channels: int = 1, height: int = 28, width: int = 28,
                 channels: tuple[int, int] = (32, 64), kernel_size: int = 5, hidden: int = 1024,
                 classes: int = 10, dataset: str = "mnist", generator: torch.Generator | None = None):
        super().__init__()
        self.dataset = dataset
        self.num_classes = classes
        self.conv1 = TfConv2d(in_channels, channels[0], kernel_size)
        self.conv2 = TfConv2d(channels[0], channels[1], kernel_size)
        # Two SAME 2x2 max-pools: ceil(ceil(size/2)/2).
        self.feature_shape = (channels[1], math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2))
        self.fc1 = nn.Linear(int(np.prod(self.feature_shape)), hidden)
        self.fc2 = nn.Linear(hidden, classes)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2, generator=generator)
            nn.init.constant_(layer.bias, 0.1)

    def forward(self, x: torch.Tensor, smooth: bool = False) -> torch.Tensor:
        act = activations.softplus if smooth else F.relu  # log1p-free on a CPU (attrrob.activations)
        h = _max_pool_2x2_same(act(self.conv1(x)))
        h = _max_pool_2x2_same(act(self.conv2(h)))
        h = act(self.fc1(h.flatten(1)))
        return self.fc2(h)

    def tf_variables(self) -> dict[str, tuple[torch.Tensor, str]]:
        """TF variable name → (parameter, layout) for `load_tf_weights`."""
        return {
            "W_conv1": (self.conv1.weight, "conv"), "b_conv1": (self.conv1.bias, "bias"),
            "W_conv2": (self.conv2.weight, "conv"), "b_conv2": (self.conv2.bias, "bias"),
            "W_fc1": (self.fc1.weight, "dense_after_conv"), "b_fc1": (self.fc1.bias, "bias"),
            "W_fc2": (self.fc2.weight, "dense"), "b_fc2": (self.fc2.bias, "bias"),
        }


# ----------------------------------------------------------------------------- RAR ResNet


class _ResidualUnit(nn.Module):
    """Pre-activation unit: [act] → conv3×3/s → act → conv3×3 (+ avg-pool, zero-padded shortcut)."""

    def __init__(self, in_filters: int, out_filters: int, stride: int, activate_before_residual: bool):
        super().__init__()
        self.in_filters, self.out_filters, self.stride = in_filters, out_filters, stride
        self.activate_before_residual = activate_before_residual
        self.conv1 = TfConv2d(in_filters, out_filters, 3, stride, bias=False)
        self.conv2 = TfConv2d(out_filters, out_filters, 3, 1, bias=False)

    def forward(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.activate_before_residual:
            x = act(x)
            shortcut = x
        else:
            shortcut = x
            x = act(x)
        x = self.conv2(act(self.conv1(x)))
        if self.in_filters != self.out_filters:
            if self.stride > 1:
                shortcut = F.avg_pool2d(shortcut, self.stride, self.stride)
            pad = (self.out_filters - self.in_filters) // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, pad, pad))
        return x + shortcut


class RarResNet(nn.Module):
    """RAR's GTSRB/Flower ResNet (CIFAR10-challenge family, no batch norm).

    per_image_standardization → conv3×3×16 → 3 stages (16/32/64 filters, strides 1/2/2,
    `units_per_stage` units each) → act → global average pool → FC. Activation: leaky ReLU 0.1;
    smooth=True: 0.1x + 0.9·softplus(x). Init as TF: conv N(0, √(2/(k·k·out))), FC uniform unit
    scaling U[±√(3/fan_in)], bias 0.

    `input_scale_invariant`: the first op, per-image standardisation, makes model(α·x) = model(x)
    for α > 0 as long as the scaled image's standard deviation stays above TF's floor 1/√N;
    `scale_invariant_images` says for which images of a batch that holds on a zero-baseline path.
    """

    input_scale_invariant = True

    FILTERS = (16, 16, 32, 64)
    STRIDES = (1, 2, 2)
    ACTIVATE_BEFORE_RESIDUAL = (True, False, False)

    def __init__(self, units_per_stage: int = 1, classes: int = 17, *, in_channels: int = 3,
                 dataset: str = "flower", generator: torch.Generator | None = None):
        super().__init__()
        if units_per_stage < 1:
            raise ConfigError(f"RarResNet: units_per_stage must be ≥ 1, got {units_per_stage}")
        self.dataset = dataset
        self.num_classes = classes
        self.units_per_stage = units_per_stage
        f = self.FILTERS
        self.init_conv = TfConv2d(in_channels, f[0], 3, 1, bias=False)
        stages = []
        for s in range(3):
            units = [_ResidualUnit(f[s], f[s + 1], self.STRIDES[s], self.ACTIVATE_BEFORE_RESIDUAL[s])]
            units += [_ResidualUnit(f[s + 1], f[s + 1], 1, False) for _ in range(units_per_stage - 1)]
            stages.append(nn.ModuleList(units))
        self.stages = nn.ModuleList(stages)
        self.logit = nn.Linear(f[3], classes)
        for conv in self._convs().values():
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (9 * conv.out_channels)), generator=generator)
        bound = math.sqrt(3.0 / f[3])
        nn.init.uniform_(self.logit.weight, -bound, bound, generator=generator)
        nn.init.zeros_(self.logit.bias)

    def scale_invariant_images(self, x: torch.Tensor, min_scale: float) -> torch.Tensor:
        """Per image (bool `[N]`): model(α·x) = model(x) for every α in [`min_scale`, 1].

        Holds where α²·var(x) ≥ 1/N for α = `min_scale` (the floor of the standardisation never
        applies on the path); a near-constant image fails it and takes the full IG path.
        """
        flat = x.detach().flatten(1).double()
        variance = flat.var(1, unbiased=False)
        # A relative margin keeps float32 rounding of the scaled path points on the safe side.
        return min_scale * min_scale * variance * flat.shape[1] >= 1.0 + 1e-4

    def _convs(self) -> dict[str, TfConv2d]:
        convs = {"input/init_conv": self.init_conv}
        for s, stage in enumerate(self.stages):
            for i, unit in enumerate(stage):
                convs[f"unit_{s + 1}_{i}/sub1/conv1"] = unit.conv1
                convs[f"unit_{s + 1}_{i}/sub2/conv2"] = unit.conv2
        return convs

    def forward(self, x: torch.Tensor, smooth: bool = False) -> torch.Tensor:
        act = _leaky_softplus if smooth else _leaky_relu
        h = self.init_conv(per_image_standardization(x))
        for stage in self.stages:
            for unit in stage:
                h = unit(h, act)
        h = act(h).mean(dim=(2, 3))
        return self.logit(h)

    def tf_variables(self) -> dict[str, tuple[torch.Tensor, str]]:
        """TF variable name → (parameter, layout) for `load_tf_weights`."""
        table = {f"{name}/DW": (conv.weight, "conv") for name, conv in self._convs().items()}
        table["logit/DW"] = (self.logit.weight, "dense")
        table["logit/biases"] = (self.logit.bias, "bias")
        return table


# ----------------------------------------------------------------------------- public helpers


def build(dataset: str, *, generator: torch.Generator | None = None) -> nn.Module:
    """The network of a data set, freshly initialised on the CPU (from `generator` when given,
    else from torch's global generator)."""
    spec = dataset_input(dataset)  # raises ConfigError for an unknown name
    return registry.dataset(dataset).network_builder(spec, dataset=dataset, generator=generator)


# The networks of the built-in data sets (attrrob.registry names them), from their `input:` spec.

def _common(spec: dict, dataset: str, generator: torch.Generator | None) -> dict:
    return dict(in_channels=spec["channels"], classes=spec["classes"], dataset=dataset, generator=generator)


def mnist_cnn(spec: dict, *, dataset: str, generator: torch.Generator | None = None) -> nn.Module:
    """RAR's MNIST CNN (MNIST and Fashion-MNIST)."""
    return MnistCNN(height=spec["height"], width=spec["width"], **_common(spec, dataset, generator))


def digits_cnn(spec: dict, *, dataset: str, generator: torch.Generator | None = None) -> nn.Module:
    """The MNIST CNN shrunk for 8×8 digits (the quickstart)."""
    return MnistCNN(height=spec["height"], width=spec["width"], channels=(16, 32), kernel_size=3, hidden=64,
                    **_common(spec, dataset, generator))


def gtsrb_resnet(spec: dict, *, dataset: str, generator: torch.Generator | None = None) -> nn.Module:
    return RarResNet(units_per_stage=2, **_common(spec, dataset, generator))


def flower_resnet(spec: dict, *, dataset: str, generator: torch.Generator | None = None) -> nn.Module:
    return RarResNet(units_per_stage=1, **_common(spec, dataset, generator))


def _tf_to_torch(array: np.ndarray, layout: str, feature_shape) -> torch.Tensor:
    a = np.asarray(array)
    if layout == "conv":  # HWIO → OIHW
        a = a.transpose(3, 2, 0, 1)
    elif layout == "dense":  # [in, out] → [out, in]
        a = a.T
    elif layout == "dense_after_conv":  # rows in TF's H,W,C flatten order → torch's C,H,W
        c, h, w = feature_shape
        if a.ndim != 2 or a.shape[0] != c * h * w:
            return torch.as_tensor(a)  # the shape check below reports it
        a = a.reshape(h, w, c, a.shape[1]).transpose(2, 0, 1, 3).reshape(c * h * w, a.shape[1]).T
    return torch.from_numpy(np.ascontiguousarray(a))


def load_tf_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy TensorFlow variables (TF names, HWIO conv and [in, out] dense kernels) into `model`, in place.

    `weights` may be an `np.load` result holding other arrays too: when any key starts with
    `weights/`, only those keys are used (prefix removed). Every variable of the model must be
    present and no unknown variable may be left over (that would mean another architecture).
    """
    keys = list(weights.keys())
    prefixed = [k for k in keys if k.startswith("weights/")]
    names = {k[len("weights/"):]: k for k in prefixed} if prefixed else {k: k for k in keys}
    table = model.tf_variables()
    missing = sorted(set(table) - set(names))
    unexpected = sorted(set(names) - set(table))
    if missing or unexpected:
        raise AttrrobError(f"TF weights do not fit {type(model).__name__} ({getattr(model, 'dataset', '?')}): "
                           f"missing {missing or 'none'}, unexpected {unexpected or 'none'}")
    feature_shape = getattr(model, "feature_shape", None)
    with torch.no_grad():
        for name, (param, layout) in table.items():
            value = _tf_to_torch(weights[names[name]], layout, feature_shape)
            if tuple(value.shape) != tuple(param.shape):
                raise AttrrobError(f"TF variable {name}: shape {tuple(np.shape(weights[names[name]]))} "
                                   f"does not fit {type(model).__name__} parameter {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))
    return model


def decayed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The conv and FC kernels (TF's `DW`/`W_` variables, not biases) that weight decay applies to."""
    return [param for param, layout in model.tf_variables().values() if layout != "bias"]


def scale_invariant_images(model: nn.Module, x: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Per image of `x` (bool `[N]`, on x's device): model(α·x_i) = model(x_i) for every α in
    [`min_scale`, 1], so its zero-baseline IG needs one gradient instead of one per path point
    (`ig.integrated_gradients(..., scale_invariant=mask)`; `min_scale` = 1/steps).

    A model declares the property with a class attribute `input_scale_invariant = True` and a
    method `scale_invariant_images(x, min_scale)` for the per-image condition (the ResNets);
    every other module (the CNNs, test nets) gets all False.
    """
    if not getattr(model, "input_scale_invariant", False):
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return model.scale_invariant_images(x, min_scale).to(device=x.device, dtype=torch.bool)


def input_scale_invariant(model: nn.Module, x: torch.Tensor, min_scale: float) -> bool:
    """True when `scale_invariant_images` holds for every image of `x` (the whole-batch question)."""
    return bool(scale_invariant_images(model, x, min_scale).all()) if x.shape[0] else False
