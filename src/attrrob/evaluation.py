"""Evaluation driver: natural/adversarial accuracy and attribution attacks over a test set.

Batched over images (and, inside IG, over path points); per-example records and summaries in
the schemas of `docs/DESIGN.md`. The attack semantics live in `attrrob.attacks.saliency`;
this module chooses batch sizes within a memory budget, skips misclassified images, and turns
per-image results into rows, means with confidence intervals, and picture arrays.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics, registry
from .attacks import saliency as saliency_attacks
from .attacks.pgd import pgd
from .ig import integrated_gradients, logit_fn, rows_per_call, saliency_map
from .config import dataset_input
from .errors import AttrrobError
from .outputs import save_npz, write_csv, write_json
from .records import RECORDS_KEY, records
from .result_files import (ACCURACY_COLUMNS, ATTACK_COLUMNS, EXAMPLES, LENS_NAMES, METRIC_NAMES, PER_EXAMPLE,
                           SUMMARY, TRACE)


# Memory taken by the tensors autograd keeps is not all of it (temporaries, allocator slack).
_WORKSPACE_FACTOR = 2.0
_CPU_BUDGET_CAP = 8 << 30


# ----------------------------------------------------------------------------- memory planning


def default_memory_budget(device: torch.device) -> int:
    """Bytes the attack may use: 60% of free GPU memory, or a quarter of available RAM (≤ 8 GiB)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(0.6 * free)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 4 << 30
    return int(min(available // 4, _CPU_BUDGET_CAP))


def surrogate_row_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes one IG path row costs in the attack's differentiable surrogate pass (measured).

    Counts the tensors autograd saves while one image's IG is built with `create_graph=True`
    and differentiated again, with one and with two path points: the difference is the per-row
    cost (weights, saved once per call, cancel). A workspace margin is added.
    """

    def saved_bytes(points: int) -> int:
        saved = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            saved += tensor.numel() * tensor.element_size()
            return tensor

        x = sample[:1].detach()
        y = torch.zeros(1, dtype=torch.long, device=x.device)
        with saliency_attacks.input_gradients_only(model), torch.enable_grad():
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                leaf = x.clone().requires_grad_(True)
                ig = integrated_gradients(logit_fn(model, y, smooth=True), leaf, 0.0, points, create_graph=True)
                torch.autograd.grad(saliency_map(ig).square().sum(), leaf)
        return saved

    per_row = saved_bytes(2) - saved_bytes(1)
    return int(_WORKSPACE_FACTOR * max(per_row, sample[:1].numel() * sample.element_size()))


@dataclass(frozen=True)
class BatchPlan:
    batch_images: int     # images attacked together
    max_rows: int         # IG path rows per call (images × points)
    row_bytes: int        # measured cost of one row
    budget_bytes: int


def plan_batches(model: nn.Module, sample: torch.Tensor, ig_steps: int, batch_images: int, ig_max_batch: int,
                 budget_bytes: int | None = None, rows_cap: int | None = None) -> BatchPlan:
    """Largest batch (≤ `batch_images`) whose full differentiable IG fits the memory budget.

    When even one image's `ig_steps` rows do not fit, one image at a time with the IG split into
    chunks of `max_rows` rows (the attack then uses its chunked, equal-result gradient).
    A positive `ig_max_batch` caps the rows per call further, and so does `rows_cap`
    (None: the CPU cache cap of `ig.rows_per_call` on a CPU, no cap on a GPU; 0: no cap).
    """
    budget = int(budget_bytes) if budget_bytes else default_memory_budget(sample.device)
    row_bytes = surrogate_row_bytes(model, sample)
    max_rows = max(1, budget // row_bytes)
    if ig_max_batch and ig_max_batch > 0:
        max_rows = min(max_rows, int(ig_max_batch))
    if rows_cap is None:
        rows_cap = (rows_per_call(sample[:1]) or 0) if sample.device.type == "cpu" else 0
    images = max(1, min(int(batch_images), max_rows // ig_steps))
    if rows_cap:
        # The cap limits how many images share a pass; it never splits one image's IG (that costs
        # an extra pass), which only the memory budget may force.
        images = max(1, min(images, rows_cap // ig_steps))
    return BatchPlan(batch_images=images, max_rows=max_rows, row_bytes=row_bytes, budget_bytes=budget)


# ----------------------------------------------------------------------------- helpers


def _progress(total: int, desc: str, enabled: bool):
    # A tqdm bar on a terminal, periodic log lines otherwise (attrrob.logs).
    from .logs import progress_bar

    return progress_bar(total, desc, enabled, unit="img")


def _value_range(dataset: str) -> tuple[float, float, bool]:
    spec = dataset_input(dataset)
    return 0.0, float(spec["max_value"]), bool(spec["integral"])


def check_inputs(x: torch.Tensor, y: torch.Tensor, dataset: str, where: str = "data") -> None:
    """The test arrays have the data set's shape and value range (one-line error otherwise)."""
    spec = dataset_input(dataset)
    expected = (spec["channels"], spec["height"], spec["width"])
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise AttrrobError(f"{where}: images have shape {tuple(x.shape[1:])}, the {dataset} model expects "
                           f"{expected}; pass the prepared file of {dataset}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > spec["max_value"]):
        raise AttrrobError(f"{where}: pixel values outside [0, {spec['max_value']}] for {dataset}; "
                           "pass the prepared file of that data set")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec["classes"]):
        raise AttrrobError(f"{where}: labels outside 0..{spec['classes'] - 1} for {dataset}")


def _take(x: torch.Tensor, y: torch.Tensor, num_examples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if num_examples is not None and num_examples > 0:
        return x[:num_examples], y[:num_examples]
    return x, y


def _predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- accuracy


@dataclass
class AccuracyOutcome:
    rows: list[dict]
    summary: dict


def accuracy_pgd_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict):
    """The loss the AA's PGD maximises, z ↦ 0-dim (`pgd_loss`): `ce`, the summed cross-entropy (RAR's
    protocol), or `ce_ig_approx`, CE + w‖IG_approx(x → z)‖₁, the Sarkar authors' Flower evaluation
    loss (`adv_ar_approx`), which is their training objectives' inner loss at the pgd_ig_* values."""
    if settings.get("pgd_loss", "ce") == "ce":
        return lambda z: F.cross_entropy(model(z), y, reduction="sum")
    from .objectives import inner_ce_ig_l1  # the same loss as training's inner PGD

    ig_settings = {"m": int(settings["pgd_ig_m"]), "approx_factor": int(settings["pgd_ig_approx_factor"]),
                   "inner_ig_weight": float(settings["pgd_ig_weight"]), "ig_max_batch": 0}
    return inner_ce_ig_l1(model, x, y, ig_settings)


def pgd_protocol(settings: dict) -> str:
    """The AA's PGD protocol in words, as reports name it."""
    steps = f"PGD-{int(settings['steps'])}"
    if settings.get("pgd_loss", "ce") == "ce":
        return f"{steps} on CE"
    points = int(settings["pgd_ig_m"]) // int(settings["pgd_ig_approx_factor"])
    return f"{steps} on CE + {float(settings['pgd_ig_weight']):g}·‖IG_approx‖₁ ({points} of {int(settings['pgd_ig_m'])} points)"


def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict, *, dataset: str,
                      method: str | None = None, seed: int = 0, progress: bool = True) -> AccuracyOutcome:
    """Natural accuracy, L∞ PGD (random start; on `accuracy_pgd_loss`) adversarial accuracy and, when
    `settings["autoattack"]`, AutoAttack's APGD-CE + APGD-T adversarial accuracy, all on the same
    first `settings["num_examples"]` images at the same ε. Each batch's random starts come from
    streams keyed by (seed, first index of the batch)."""
    device = next(model.parameters()).device
    x, y = _take(x, y, settings.get("num_examples"))
    check_inputs(x, y, dataset)
    lo, hi, _integral = _value_range(dataset)
    batch = max(1, int(settings["batch_size"]))
    eps = float(settings["eps"])
    use_autoattack = bool(settings.get("autoattack", False))
    if use_autoattack:  # imported only when used: the library is heavy to load
        from .attacks import autoattack as aa
    classes = int(dataset_input(dataset)["classes"])
    natural, adversarial, auto = [], [], []
    pgd_time = auto_time = 0.0
    start_time = time.perf_counter()
    with saliency_attacks.input_gradients_only(model), _progress(len(x), f"accuracy {dataset}", progress) as bar:
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch].to(device), y[start:start + batch].to(device)
            with torch.no_grad():
                natural.append(model(xb).argmax(1).cpu())

            t0 = time.perf_counter()
            x_adv = pgd(accuracy_pgd_loss(model, xb, yb, settings), xb, eps=eps, steps=int(settings["steps"]),
                        step_size=float(settings["step_size"]), lo=lo, hi=hi, random_start=True,
                        generator=saliency_attacks.image_generator(seed, start, 0))
            with torch.no_grad():
                adversarial.append(model(x_adv).argmax(1).cpu())
            t1 = time.perf_counter()
            pgd_time += t1 - t0
            if use_autoattack:
                x_auto = aa.autoattack(model, xb, yb, eps=eps, lo=lo, hi=hi,
                                    iterations=int(settings["autoattack_iterations"]),
                                    target_classes=int(settings["autoattack_target_classes"]),
                                    classes=classes, seed=seed, start=start)
                with torch.no_grad():
                    auto.append(model(x_auto).argmax(1).cpu())
                auto_time += time.perf_counter() - t1
            bar.update(len(xb))
    wall = time.perf_counter() - start_time
    nat, adv, labels = torch.cat(natural), torch.cat(adversarial), y.cpu()
    aut = torch.cat(auto) if use_autoattack else None
    rows = [{"index": i, "label": int(labels[i]), "natural_prediction": int(nat[i]),
             "adversarial_prediction": int(adv[i]),
             "autoattack_prediction": int(aut[i]) if aut is not None else None} for i in range(len(labels))]
    summary = {
        "dataset": dataset,
        "method": method,
        "natural_accuracy": metrics.proportion_ci(nat == labels),
        "adversarial_accuracy": metrics.proportion_ci(adv == labels),
        # null when the setting is off, so readers can rely on the key.
        "autoattack_accuracy": metrics.proportion_ci(aut == labels) if aut is not None else None,
        "autoattack": None,
        "pgd_protocol": pgd_protocol(settings),
        "settings": {**settings, "seed": seed},
        "wall_time_s": wall,
        "pgd_wall_time_s": pgd_time,
        "images_per_s": len(labels) / wall if wall > 0 else math.nan,
        "device": _device_name(device),
    }
    if aut is not None:
        summary["autoattack"] = {
            "library": aa.LIBRARY, "version": aa.library_version(), "attacks": list(aa.ATTACKS),
            "eps": eps, "iterations": int(settings["autoattack_iterations"]),
            "target_classes": min(int(settings["autoattack_target_classes"]), classes - 1),
            "random_starts": 1, "initial_step": 2.0 * eps, "wall_time_s": auto_time,
            # Images PGD left correct that AutoAttack broke, and the other way round (paired).
            "broken_only_by_autoattack": int(((adv == labels) & (aut != labels)).sum()),
            "broken_only_by_pgd": int(((adv != labels) & (aut == labels)).sum()),
        }
    return AccuracyOutcome(rows=rows, summary=summary)


def write_accuracy_outputs(out_dir: str | Path, outcome: AccuracyOutcome) -> None:
    out_dir = Path(out_dir)
    write_csv(out_dir / PER_EXAMPLE, ACCURACY_COLUMNS, outcome.rows)
    # summary.json last, recording the files as written (attrrob.records: readers check them).
    write_json(out_dir / SUMMARY, {**outcome.summary, RECORDS_KEY: records(out_dir, [PER_EXAMPLE])})


# ----------------------------------------------------------------------------- attribution attacks


@dataclass
class AttackOutcome:
    rows: list[dict]
    summary: dict
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    trace: dict[str, np.ndarray] = field(default_factory=dict)


def load_target_mask(path: str | Path, height: int, width: int) -> torch.Tensor:
    """A targeted attack's target from a `.npy` file: an [H, W] (or [H*W]) array, non-zero = target."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AttrrobError(f"{path}: cannot read the target mask ({exc}); pass an .npy array of shape "
                           f"[{height}, {width}]") from None
    if array.size != height * width:
        raise AttrrobError(f"{path}: target mask has shape {array.shape}, expected [{height}, {width}]")
    mask = torch.from_numpy((array.reshape(-1) != 0).astype(np.float32))
    if not bool(mask.any()):
        raise AttrrobError(f"{path}: target mask is all zero; mark the target pixels with non-zero values")
    return mask


def evaluate_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, settings: dict, *,
                    dataset: str, method: str | None = None, seed: int = 0, target: torch.Tensor | None = None,
                    batch_images: int | None = None, memory_budget_bytes: int | None = None,
                    save_examples: int = 8, progress: bool = True) -> AttackOutcome:
    """Run `attack` on the first `settings["num_examples"]` test images; misclassified ones are
    skipped and recorded. `target` (`[H*W]`, targeted attack only) replaces the default
    per-image random square. `batch_images` overrides the settings' upper bound (1 = per-image
    mode: the same code path, the same per-example results)."""
    device = next(model.parameters()).device
    x, y = _take(x, y, settings.get("num_examples"))
    check_inputs(x, y, dataset)
    lo, hi, integral = _value_range(dataset)
    _, _, height, width = x.shape
    settings = registry.attack(attack).settings_run(settings)
    wanted_batch = int(batch_images if batch_images is not None else settings["batch_images"])
    if wanted_batch < 1:
        raise AttrrobError(f"batch_images must be ≥ 1, got {wanted_batch}")
    if target is not None and not registry.attack(attack).takes_target:
        raise AttrrobError("a target mask is only used by the targeted attack; drop it or use --attack targeted")

    start_time = time.perf_counter()
    plan = plan_batches(model, x[:1].to(device), int(settings["ig_steps"]), wanted_batch,
                        int(settings.get("ig_max_batch") or 0), memory_budget_bytes)
    predictions = _predict(model, x.to(device)).cpu()
    correct = (predictions == y).nonzero().flatten().tolist()
    with _progress(len(correct), f"{attack} {dataset}", progress) as bar:
        per_image, traces, examples = _attack_images(
            model, x, y, correct, attack, settings, plan, seed=seed, target=target, value_range=(lo, hi, integral),
            save_examples=save_examples, on_batch=bar.update)
    wall = time.perf_counter() - start_time

    rows = []
    for index in range(len(y)):
        row = {"index": index, "label": int(y[index]), "prediction": int(predictions[index])}
        if index in per_image:
            rows.append({**row, "status": "attacked", **per_image[index]})
        else:
            rows.append({**row, "status": "skipped_misclassified"})
    summary = _attack_summary(rows, [per_image[i] for i in sorted(per_image)], attack, settings, plan,
                              dataset=dataset, method=method, seed=seed, target=target, shape=(height, width),
                              wall=wall, device=device)
    return AttackOutcome(rows=rows, summary=summary, examples=_example_arrays(examples, x.shape[1:], height, width),
                         trace=attack_trace(traces, int(settings["iterations"])))


def _attack_images(model, x, y, correct: list[int], attack: str, settings: dict, plan, *, seed: int,
                   target: torch.Tensor | None, value_range: tuple, save_examples: int, on_batch):
    """The batch loop: attack the correctly classified images `correct`, batch by batch; per image its
    metrics row and traces, and the first `save_examples` images' arrays."""
    device = next(model.parameters()).device
    lo, hi, integral = value_range
    _, _, height, width = x.shape
    per_image: dict[int, dict] = {}
    traces: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    examples: dict[str, list] = {k: [] for k in ("indices", "labels", "original", "attacked",
                                                   "saliency_original", "saliency_attacked")}
    k_metric, ties, window = int(settings["k_metric"]), settings["ties"], int(settings["window"])
    for start in range(0, len(correct), plan.batch_images):
        batch = correct[start:start + plan.batch_images]
        xb, yb = x[batch].to(device), y[batch].to(device)
        tb = None if target is None else target.to(device).expand(len(batch), -1)
        result = saliency_attacks.attack_batch(model, xb, yb, batch, attack, settings, lo=lo, hi=hi,
                                                  integral=integral, seed=seed, target=tb,
                                                  max_rows=plan.max_rows)
        values = {k: v.cpu() for k, v in result.metrics(k_metric, height, width, ties).items()}
        # IN with ties broken by pixel index as well, whatever `ties` is: what the tie-break moves.
        by_index = result.topk_intersection(k_metric, "index").cpu()
        tied = metrics.topk_tied_slots(result.map_original, k_metric).cpu()
        lens = {k: v.cpu() for k, v in lens_values(result, k_metric, height, width, window, ties).items()}
        trace_tau, trace_in = result.trace_kendall_tau.cpu().numpy(), result.trace_topk_intersection.cpu().numpy()
        for row, index in enumerate(batch):
            per_image[index] = {name: float(values[name][row]) for name in METRIC_NAMES}
            per_image[index].update(restart=int(result.restart[row]), step=int(result.step[row]),
                                    zero_direction=int(result.zero_direction[row]),
                                    topk_tied_slots=int(tied[row]),
                                    topk_intersection_index=float(by_index[row]),
                                    topk_div_completed=int(lens["topk_div_completed"][row]),
                                    **{name: float(lens[name][row]) for name in LENS_NAMES})
            traces[index] = (trace_tau[row], trace_in[row])
        room = save_examples - len(examples["indices"])
        if room > 0:
            keep = slice(0, room)
            examples["indices"].extend(batch[keep])
            examples["labels"].extend(yb[keep].cpu().tolist())
            examples["original"].append(xb[keep].cpu().numpy())
            examples["attacked"].append(result.x_kept[keep].cpu().numpy())
            examples["saliency_original"].append(result.map_original[keep].cpu().numpy())
            examples["saliency_attacked"].append(result.map_kept[keep].cpu().numpy())
        on_batch(len(batch))
    return per_image, traces, examples


def _attack_summary(rows: list[dict], attacked: list[dict], attack: str, settings: dict, plan, *, dataset: str,
                    method: str | None, seed: int, target: torch.Tensor | None, shape: tuple[int, int], wall: float,
                    device) -> dict:
    """summary.json of an attack run: settings as run, counts, tie and LENS facts, each metric's mean."""
    height, width = shape
    k_metric, ties, window = int(settings["k_metric"]), settings["ties"], int(settings["window"])
    n_zero = sum(r["zero_direction"] for r in attacked)
    n_tied = sum(r["topk_tied_slots"] > 0 for r in attacked)
    summary = {
        "dataset": dataset, "method": method, "attack": attack,
        "settings": {**settings, "runs": saliency_attacks.number_of_runs(attack, settings), "seed": seed,
                     "batch_images_used": plan.batch_images, "ig_rows_per_call": plan.max_rows,
                     "memory_budget_bytes": plan.budget_bytes,
                     "target": "default: per-image random square of ceil(sqrt(k_attack))^2 pixels"
                     if attack == "targeted" and target is None else ("given mask" if target is not None else None)},
        "zero_direction": settings["zero_direction"],
        "counts": {"n_total": len(rows), "n_attacked": len(attacked), "n_skipped": len(rows) - len(attacked),
                   "n_zero_direction": n_zero},
        "zero_direction_fraction": n_zero / len(attacked) if attacked else math.nan,
        "ties": {"mode": ties, "n_with_ties": n_tied,
                 "share_with_ties": n_tied / len(attacked) if attacked else math.nan,
                 "topk_intersection_index": metrics.mean_ci([r["topk_intersection_index"] for r in attacked])},
        "metrics": {name: metrics.mean_ci([r[name] for r in attacked]) for name in (*METRIC_NAMES, *LENS_NAMES)},
        "lens": {"window": window, "k": k_metric, "ties": ties, "topk_div_max_k": metrics.topk_div_max_k(height, width, window),
                 "n_topk_div_completed": sum(r["topk_div_completed"] > 0 for r in attacked)},
        "wall_time_s": wall,
        "images_per_s": len(attacked) / wall if wall > 0 else math.nan,
        "device": _device_name(device),
    }
    if attack == "noise":  # the control keeps an image's label or counts it here (its metrics read 1)
        summary["noise"] = {"n_label_changed": sum(r["step"] == 0 for r in attacked)}
    return summary


def _example_arrays(examples: dict[str, list], image_shape, height: int, width: int) -> dict[str, np.ndarray]:
    """examples.npz: always the same keys (a rule output); with no example kept, arrays of length 0."""
    empty = {"original": (0, *image_shape), "attacked": (0, *image_shape),
             "saliency_original": (0, height * width), "saliency_attacked": (0, height * width)}
    return {
        "indices": np.asarray(examples["indices"], dtype=np.int64),
        "labels": np.asarray(examples["labels"], dtype=np.int64),
        **{k: (np.concatenate(examples[k]) if examples[k] else np.zeros(shape)).astype(np.float32)
           for k, shape in empty.items()},
        "height": np.int64(height), "width": np.int64(width),
    }


def lens_values(result: saliency_attacks.AttackResult, k: int, height: int, width: int, window: int,
                ties: str) -> dict[str, torch.Tensor]:
    """LENS metrics `[N]` of an attack's kept iterate (1 where nothing was kept, as IN), and
    `topk_div_completed` `[N]`: how many of the two maps' top-k-div sets were completed (k beyond
    their greedy set, see `metrics.topk_div`)."""
    original = result.map_original.view(-1, height, width)
    kept = result.map_kept.view(-1, height, width)
    one = torch.ones(original.shape[0], dtype=torch.float64, device=original.device)
    values = {
        "lens_recall": metrics.lens_recall(original, kept, k, window, ties=ties),
        "lens_precision": metrics.lens_precision(original, kept, k, window, ties=ties),
        "topk_div_intersection": metrics.topk_div_intersection(original, kept, k, window),
        "lens_recall_div": metrics.lens_recall(original, kept, k, window, div=True),
        "lens_precision_div": metrics.lens_precision(original, kept, k, window, div=True),
    }
    values = {name: torch.where(result.improved, value, one) for name, value in values.items()}
    short = [(metrics.topk_div_ranked(m, window)[1] < k).to(torch.int64) for m in (original, kept)]
    values["topk_div_completed"] = torch.where(result.improved, short[0] + short[1], short[0] * 2)
    return values


def attack_trace(traces: dict[int, tuple[np.ndarray, np.ndarray]], iterations: int) -> dict[str, np.ndarray]:
    """The arrays of trace.npz from per-image (kept-τ, kept-IN) curves over t = 0..T, by test index."""
    order = sorted(traces)
    columns = iterations + 1

    def stack(part: int) -> np.ndarray:
        if not order:
            return np.ones((0, columns), dtype=np.float32)
        return np.stack([traces[i][part] for i in order]).astype(np.float32)

    return {"indices": np.asarray(order, dtype=np.int64), "iterations": np.arange(columns, dtype=np.int64),
            "kendall_tau": stack(0), "topk_intersection": stack(1)}


def write_attack_outputs(out_dir: str | Path, outcome: AttackOutcome) -> None:
    """per_example.csv, summary.json, trace.npz and examples.npz, each atomically."""
    out_dir = Path(out_dir)
    write_csv(out_dir / PER_EXAMPLE, ATTACK_COLUMNS, outcome.rows)
    if outcome.examples:
        save_npz(out_dir / EXAMPLES, **outcome.examples)
    if outcome.trace:
        save_npz(out_dir / TRACE, **outcome.trace)
    # summary.json last, recording the files as written (attrrob.records: readers check them).
    files = records(out_dir, [PER_EXAMPLE, TRACE, EXAMPLES])
    write_json(out_dir / SUMMARY, {**outcome.summary, RECORDS_KEY: files})
