"""AutoAttack's standard L∞ pair, APGD-CE then APGD-T (Croce & Hein, ICML 2020), from ART.

A check for gradient masking beside the fixed-step PGD of the adversarial accuracy: APGD adapts
its step size, keeps its best iterate's momentum, and APGD-T attacks the margin to each of the
`target_classes` highest-scoring wrong classes, so a model that only *looks* robust to PGD (flat
or noisy gradients, as IG-regularised and smooth models may have) shows a lower AA here.

The attacks are the adversarial-robustness-toolbox (ART) implementations,
`art.attacks.evasion.AutoProjectedGradientDescent`: APGD with the cross-entropy loss
(untargeted), then, on the images still classified correctly, APGD with ART's difference-of-
logits-ratio loss in targeted mode against each target class in turn. ART's targeted DLR is
−(z_t − max_{j≠t} z_j)/(z_π1 − z_π3), normalised like the untargeted DLR; Croce & Hein's APGD-T
normalises by z_π1 − (z_π3 + z_π4)/2. Both are scale- and shift-invariant margins to the target.
Like AutoAttack, an image counts as broken as soon as one attack misclassifies it, and images
misclassified without perturbation are not attacked (they are already wrong).

torchattacks (which ports the original code) was not used: its pinned `requests~=2.25.1` does not
fit the workflow's pinned environment (snakemake needs a newer requests).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ..errors import AttrrobError

LIBRARY = "adversarial-robustness-toolbox"
ATTACKS = ("apgd-ce", "apgd-t")


def library_version() -> str:
    import art

    return art.__version__


def _numpy_seed(seed: int, start: int) -> np.random.RandomState:
    # ART draws its random starts from numpy's global generator; a per-batch key makes a batch's
    # result independent of what ran before it.
    return np.random.RandomState(np.random.SeedSequence([int(seed), int(start)]).generate_state(1)[0])


def _classifier(model: nn.Module, x: torch.Tensor, classes: int, lo: float, hi: float):
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=classes, clip_values=(float(lo), float(hi)),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy()


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """Adversarial examples `[N, C, H, W]` for one batch (x, y) under APGD-CE then APGD-T.

    Keywords as `_autoattack`. ART places its estimator on the *current* CUDA device (and moves
    the model there), so the current device is set to the model's for the call.
    """
    device = next(model.parameters()).device
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        return _autoattack(model, x, y, **kwargs)


def _autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, lo: float, hi: float,
                iterations: int, target_classes: int, classes: int, seed: int = 0, start: int = 0) -> torch.Tensor:
    """APGD-CE then APGD-T on one batch.

    `iterations`: APGD iterations per attack (and per target class); `target_classes`: how many
    of the highest-scoring wrong classes of the clean image APGD-T targets (at most classes − 1).
    One random start per attack (AutoAttack's standard version). ε = 0 returns x itself (the
    only point of the ball). The random starts come from a stream keyed by (seed, start).
    """
    from art.attacks.evasion import AutoProjectedGradientDescent

    if int(iterations) < 1 or int(target_classes) < 0:
        raise AttrrobError(f"accuracy settings: autoattack_iterations must be >= 1 and autoattack_target_classes "
                           f">= 0, got {iterations} and {target_classes}; fix them in the config")
    x_np = x.detach().cpu().numpy().astype(np.float32)
    if eps <= 0 or len(x_np) == 0:
        return x.detach().clone()
    labels = y.cpu().numpy().astype(np.int64)
    classifier = _classifier(model, x, classes, lo, hi)
    common = dict(norm=np.inf, eps=float(eps), eps_step=2.0 * float(eps), max_iter=int(iterations),
                  nb_random_init=1, batch_size=len(x_np), verbose=False)
    x_adv = x_np.copy()
    with torch.no_grad():
        clean_logits = model(torch.from_numpy(x_np).to(next(model.parameters()).device)).cpu().numpy()
    robust = clean_logits.argmax(1) == labels

    saved = np.random.get_state()
    try:
        np.random.set_state(_numpy_seed(seed, start).get_state())
        if robust.any():
            apgd_ce = AutoProjectedGradientDescent(classifier, targeted=False, loss_type="cross_entropy", **common)
            one_hot = np.eye(classes, dtype=np.float32)[labels[robust]]
            candidate = apgd_ce.generate(x_np[robust], y=one_hot)
            broken = _predict(model, candidate) != labels[robust]
            idx = np.flatnonzero(robust)[broken]
            x_adv[idx] = candidate[broken]
            robust[idx] = False
        # Targets: the clean image's wrong classes by decreasing logit, as APGD-T picks them.
        masked = clean_logits.copy()
        masked[np.arange(len(labels)), labels] = -np.inf
        order = np.argsort(-masked, axis=1, kind="stable")
        apgd_t = None
        for rank in range(min(int(target_classes), classes - 1)):
            if not robust.any():
                break
            if apgd_t is None:
                apgd_t = AutoProjectedGradientDescent(classifier, targeted=True, loss_type="difference_logits_ratio",
                                                      **common)
            idx = np.flatnonzero(robust)
            target = np.eye(classes, dtype=np.float32)[order[idx, rank]]
            candidate = apgd_t.generate(x_np[idx], y=target)
            broken = _predict(model, candidate) != labels[idx]
            x_adv[idx[broken]] = candidate[broken]
            robust[idx[broken]] = False
    finally:
        np.random.set_state(saved)
    # ART works in float32 numpy and clips to (lo, hi) and the ε-ball; clamp again against rounding.
    out = torch.from_numpy(x_adv).to(x.device, x.dtype)
    return torch.min(torch.max(out, x - eps), x + eps).clamp(lo, hi).detach()
