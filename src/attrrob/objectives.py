"""The training objectives of the built-in methods: an inner attack (PGD) and an outer loss (spec:
method.md table). The methods themselves (which inner and outer loss, which terms, which weight)
are registered in `attrrob.registry`.

Every objective is `inner` (None, or the PGD loss that finds x′ in the ε-ball ∩ valid range) plus
`outer` (the loss minimised over θ at x and x′). Shared facts, from the reference code
(details-from-code.md §1, sketch §1.7):
- the attribution objectives sum CE and regularisers over the batch; natural and madry reduce CE
  by `loss_reduction`;
- the inner maximisation uses the approximate IG with points a, 2a, …, m (a = approx_factor),
  differentiated with create_graph so its x′-gradient is exact; ig_sum_norm and all sarkar variants
  share one inner loss, CE(x′) + w‖IG_approx‖₁ (w = `inner_ig_weight`, tied to β or λ), so for
  equal weights they draw identical iterates for one seed;
- CE is clipped, −log clip(p_y, 1e-10), only as the ℓ inside an IG (the reference's hand-written
  CE); every CE of logits, the inner loss's included, is the unclipped softmax cross-entropy;
- outer IGs use all m points with create_graph (the θ-gradient goes through input gradients);
- λ (`lam`) weighs ig_norm's ‖IG‖₁ and the sarkar regularisers, β (`beta`) ig_sum_norm's ‖IG‖₁;
  weight decay is wd·Σ½‖W‖² over kernels.
`compute_loss` returns the loss and a dict of floats naming each unweighted component.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from . import config, ig, models, registry, regularizers
from .attacks.pgd import pgd

Tensor = torch.Tensor
InnerLoss = Callable[[torch.nn.Module, Tensor, Tensor, Mapping], Callable[[Tensor], Tensor]]
OuterLoss = Callable[[torch.nn.Module, Tensor, "Tensor | None", Tensor, Mapping], "tuple[Tensor, dict]"]


def rows_per_ig_call(settings: Mapping, x: Tensor) -> int | None:
    """Rows per IG pass: `ig_max_batch` (0 = no limit), capped on a CPU (`ig.rows_per_call`)."""
    return ig.rows_per_call(x, settings.get("ig_max_batch"))


def _approx_ig(model, x: Tensor, x_adv: Tensor, y: Tensor, settings: Mapping) -> Tensor:
    """IG^ℓ(x → x′) over the points a, 2a, …, m only, differentiable in x′ (for the attack)."""
    m, a = settings["m"], settings["approx_factor"]
    return ig.integrated_gradients(ig.cross_entropy_fn(model, y), x_adv, x, m,
                                            points=range(a, m + 1, a), create_graph=True,
                                            max_batch=rows_per_ig_call(settings, x))


def _full_ig(fn, x: Tensor, baseline: Tensor, settings: Mapping) -> Tensor:
    """m-point IG, differentiable in θ (training's outer loss)."""
    return ig.integrated_gradients(fn, x, baseline, settings["m"], create_graph=True,
                                            max_batch=rows_per_ig_call(settings, x))


def _zero_baseline_ig(fn, model, x: Tensor, settings: Mapping) -> Tensor:
    """m-point IG of `fn` from a zero baseline, differentiable in θ.

    The ResNets start with per-image standardisation, so fn(α·x) = fn(x) at every path point
    (spec, "Code facts") of every image whose scaled copies stay above the standardisation's
    floor: those take one gradient instead of m (same IG), the others the full path.
    """
    m = settings["m"]
    return ig.integrated_gradients(fn, x, 0.0, m, create_graph=True, max_batch=rows_per_ig_call(settings, x),
                                   scale_invariant=models.scale_invariant_images(model, x, 1.0 / m))


# ---- inner maximisation losses: each returns loss_fn(x′) -> 0-dim, to be maximised ----

def inner_ce(model, x, y, settings):
    return lambda z: F.cross_entropy(model(z), y, reduction="sum")


def inner_ig_l1(model, x, y, settings):
    return lambda z: regularizers.ig_l1(_approx_ig(model, x, z, y, settings))


def inner_ig_weight(settings: Mapping) -> float:
    """Weight w of ‖IG_approx‖₁ in the inner loss CE(x′) + w‖IG_approx‖₁ (ig_sum_norm, sarkar*).

    `inner_ig_weight: null` ties it to the method's own weight, as the reference code does: β for
    ig_sum_norm, λ for the sarkar variants.
    """
    weight = settings.get("inner_ig_weight")
    if weight is None:
        method = settings.get("method")
        weight = settings[registry.method(method).weight if method is not None else "lam"]
    return float(weight)


def inner_ce_ig_l1(model, x, y, settings):
    """CE(x′) + w‖IG_approx‖₁. CE here is unclipped (the reference's `adv_xent`, TF's
    sparse_softmax_cross_entropy_with_logits), so a confidently wrong x′ (p_y < 1e-10) is still
    pushed; only IG's ℓ inside `_approx_ig` uses the clipped −log clip(p_y, 1e-10), as there."""
    weight = inner_ig_weight(settings)
    return lambda z: F.cross_entropy(model(z), y, reduction="sum") + weight * regularizers.ig_l1(
        _approx_ig(model, x, z, y, settings))


# ---- outer losses: return (loss without weight decay, {term: unweighted tensor}) ----

def outer_natural(model, x, x_adv, y, settings):
    ce = F.cross_entropy(model(x), y, reduction=settings["loss_reduction"])
    return ce, {"ce": ce}


def outer_madry(model, x, x_adv, y, settings):
    ce = F.cross_entropy(model(x_adv), y, reduction=settings["loss_reduction"])
    return ce, {"ce": ce}


def _change_ig(model, x, x_adv, y, settings) -> Tensor:
    """IG^ℓ(x → x′; m): RAR's regularised attribution (its negation is WACR's A)."""
    return _full_ig(ig.cross_entropy_fn(model, y), x_adv, x, settings)


def outer_ig_norm(model, x, x_adv, y, settings):
    ce = F.cross_entropy(model(x), y, reduction="sum")
    ig_l1 = regularizers.ig_l1(_change_ig(model, x, x_adv, y, settings))
    return ce + settings["lam"] * ig_l1, {"ce": ce, "ig_l1": ig_l1}


def outer_ig_sum_norm(model, x, x_adv, y, settings):
    ce = F.cross_entropy(model(x_adv), y, reduction="sum")
    ig_l1 = regularizers.ig_l1(_change_ig(model, x, x_adv, y, settings))
    return ce + settings["beta"] * ig_l1, {"ce": ce, "ig_l1": ig_l1}


def probability_igs(model, inputs: list[Tensor], y: Tensor, settings: Mapping) -> list[Tensor]:
    """Zero-baseline m-point IGs of p_y for several input batches, in one batched IG call.

    sarkar needs two (B at x, T at x′): stacking them doubles the rows per pass instead of
    making a second pass.
    """
    stacked = torch.cat(inputs)
    fn = ig.probability_fn(model, y.repeat(len(inputs)))
    return list(_zero_baseline_ig(fn, model, stacked, settings).split(len(y)))


def _sarkar_outer(use_cacr: bool, use_wacr: bool) -> OuterLoss:
    """CE(x′) + λ(R_CACR + R_WACR), or one regulariser only (the ablations)."""

    def outer(model, x, x_adv, y, settings):
        ce = F.cross_entropy(model(x_adv), y, reduction="sum")
        terms = {"ce": ce}
        pieces = probability_igs(model, ([x] if use_wacr else []) + ([x_adv] if use_cacr else []), y, settings)
        if use_cacr:
            # T, N: channel-summed IG of p_y and p_neg (negative class chosen per path point) at x′.
            T = pieces[-1].sum(1)
            N = _zero_baseline_ig(ig.negative_probability_fn(model, y), model, x_adv, settings).sum(1)
            terms["cacr"] = regularizers.cacr(T, N)
        if use_wacr:
            B = pieces[0]                              # IG^{p_y}(0 → x)
            A = -_change_ig(model, x, x_adv, y, settings)  # −IG^ℓ(x → x′)
            terms["wacr"] = regularizers.wacr(B, A)
        reg = sum(terms[name] for name in ("cacr", "wacr") if name in terms)
        return ce + settings["lam"] * reg, terms

    outer.__name__ = "outer_sarkar" + ("" if use_cacr and use_wacr else "_cacr" if use_cacr else "_wacr")
    return outer


outer_sarkar = _sarkar_outer(True, True)
outer_sarkar_cacr = _sarkar_outer(True, False)
outer_sarkar_wacr = _sarkar_outer(False, True)


def term_names(method: str) -> tuple[str, ...]:
    """Names of the terms `compute_loss` reports for `method`, in log order (total last)."""
    return registry.method(method).terms + ("weight_decay", "total")


def adversarial_example(method: str, model: torch.nn.Module, x: Tensor, y: Tensor, settings: Mapping,
                        generator: torch.Generator | None = None) -> Tensor | None:
    """The inner maximiser x′ (detached), or None for objectives without one."""
    inner = registry.method(method).inner_loss
    if inner is None:
        return None
    hi = float(config.dataset_input(settings["dataset"])["max_value"])
    settings = {**settings, "method": method}  # the inner weight's tie depends on the method
    return pgd(inner(model, x, y, settings), x, eps=settings["eps"], steps=settings["pgd_steps"],
               step_size=settings["pgd_step_size"], lo=0.0, hi=hi, random_start=True, generator=generator)


def weight_decay(model: torch.nn.Module) -> Tensor:
    """Σ ½‖W‖² over the kernels that decay (tf.nn.l2_loss summed)."""
    return sum(0.5 * w.pow(2).sum() for w in models.decayed_parameters(model))


def compute_loss(method: str, model: torch.nn.Module, x: Tensor, y: Tensor, settings: Mapping,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch, and its components as floats (unweighted; `total` = loss)."""
    registered = registry.method(method)
    x_adv = adversarial_example(method, model, x, y, settings, generator)
    loss, terms = registered.outer_loss(model, x, x_adv, y, settings)
    wd = settings.get("weight_decay", 0.0)
    decay = weight_decay(model) if wd else loss.new_zeros(())
    loss = loss + wd * decay
    values = {name: float(terms[name].detach()) for name in registered.terms}
    values["weight_decay"] = float(decay.detach())
    values["total"] = float(loss.detach())
    return loss, values
