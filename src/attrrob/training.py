"""The training loop: seeded, logged, checkpointed, and resumable bit-identically (on CPU).

One step = draw the next batch (epoch-wise reshuffling, as TensorFlow's `next_batch`), compute
the objective (`attrrob.objectives.compute_loss`), check every term is finite, update. Every
`checkpoint_every` steps, and at the end, the whole state (model, optimizer, step, data order,
every RNG, log rows, timing) goes atomically to `<checkpoint_dir>/latest.pt`; a rerun with the
same settings resumes from it. Settings that change only bookkeeping or memory chunking (`steps`,
`log_every`, `checkpoint_every`, `ig_max_batch`) may differ on resume; any other difference is
an error rather than a silent mix of two configurations.

Randomness: the model is initialised from `seed`; the data order and the PGD random starts come
from two CPU generators seeded from `seed` (samples are moved to the device), so a run does not
depend on what else touched the global RNG.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import checkpoint, models, objectives
from .config import dataset_input
from .errors import AttrrobError, DataError
from .outputs import write_csv, write_json

CHECKPOINT_NAME = "latest.pt"
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "checkpoint_every", "ig_max_batch"})


def default_checkpoint_dir(out_dir: str | Path) -> Path:
    """`<parent>/.checkpoints-<name>` beside the output directory: resumable state, not a result."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f".checkpoints-{out_dir.name}"


def learning_rate(schedule: list, step: int) -> float:
    """Piecewise-constant LR at a step, as tf.train.piecewise_constant: a boundary step keeps the earlier value."""
    lr = schedule[0][1]
    for boundary, value in schedule[1:]:
        if step > boundary:
            lr = value
    return float(lr)


def make_optimizer(model: torch.nn.Module, settings: Mapping) -> torch.optim.Optimizer:
    lr = learning_rate(settings["lr_schedule"], 0)
    if settings["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    # tf.train.MomentumOptimizer: accum = μ·accum + g; θ -= lr·accum (no dampening, no Nesterov).
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=settings["momentum"], dampening=0.0)


class BatchOrder:
    """Epoch-wise reshuffled batches, as TF's `DataSet.next_batch`: a batch that crosses an epoch
    end takes the rest of the old permutation and the start of a fresh one."""

    def __init__(self, n: int, generator: torch.Generator):
        if n < 1:
            raise DataError("training split is empty; re-run 'attrrob prepare'")
        self.n = n
        self.generator = generator
        self.perm = torch.randperm(n, generator=generator)
        self.pos = 0
        self.epoch = 0

    def next(self, batch_size: int) -> torch.Tensor:
        parts, need = [], batch_size
        while need:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos, self.epoch = 0, self.epoch + 1
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"perm": self.perm.clone(), "pos": self.pos, "epoch": self.epoch, "n": self.n}

    def load_state_dict(self, state: Mapping) -> None:
        if state["n"] != self.n:
            raise AttrrobError(f"checkpoint was made on {state['n']} training examples, the data has {self.n}; "
                               "use the same prepared data or delete the checkpoint directory")
        self.perm, self.pos, self.epoch = state["perm"].clone(), int(state["pos"]), int(state["epoch"])


def _rng_state(data_gen: torch.Generator, noise_gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "data_generator": data_gen.get_state(),
        "noise_generator": noise_gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping, data_gen: torch.Generator, noise_gen: torch.Generator) -> None:
    data_gen.set_state(state["data_generator"])
    noise_gen.set_state(state["noise_generator"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    # CUDA states restore only onto the same number of GPUs (a resume elsewhere still gets the rest).
    if "torch_cuda" in state and torch.cuda.is_available() and len(state["torch_cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def _config_difference(saved: Mapping, current: Mapping) -> list[str]:
    keys = (set(saved) | set(current)) - RESUMABLE_CHANGES
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def log_columns(method: str) -> list[str]:
    terms = [t for t in objectives.term_names(method) if t != "total"]
    return ["step", "lr", "total", *terms, "batch_accuracy", "examples_per_s"]


def _check_finite(terms: Mapping[str, float], step: int, method: str) -> None:
    for name in objectives.term_names(method):  # components first, so the culprit is named
        value = terms[name]
        if not math.isfinite(value):
            raise AttrrobError(f"step {step}: loss term '{name}' is {value} ({method}); training stopped — "
                               "lower the learning rate or the regulariser weight (--set lam=... or beta=...), or check the data")


def train(settings: Mapping[str, Any], x_train: torch.Tensor, y_train: torch.Tensor, out_dir: str | Path, *,
          checkpoint_dir: str | Path | None = None, device: str | torch.device = "cpu",
          progress: bool = True) -> dict:
    """Train `settings["method"]` on (x_train, y_train); write model.pt, train_log.csv, train_metrics.json.

    Resumes from `<checkpoint_dir>/latest.pt` when it exists. Returns the train_metrics dict.
    """
    from tqdm.auto import tqdm

    settings = dict(settings)
    dataset, method = settings["dataset"], settings["method"]
    objective_terms = objectives.term_names(method)  # validates the method name early
    shape = dataset_input(dataset)
    expected = (shape["channels"], shape["height"], shape["width"])
    if tuple(x_train.shape[1:]) != expected:
        raise DataError(f"training images have shape {tuple(x_train.shape[1:])}, dataset '{dataset}' "
                        f"expects {expected}; pass that data set's prepared file")
    device = torch.device(device)
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out_dir)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    total_steps, batch_size = int(settings["steps"]), int(settings["batch_size"])

    torch.manual_seed(settings["seed"])
    model = models.build(dataset).to(device)
    optimizer = make_optimizer(model, settings)
    data_gen = torch.Generator().manual_seed(settings["seed"])
    noise_gen = torch.Generator().manual_seed(settings["seed"] + 1)
    order = BatchOrder(len(x_train), data_gen)
    step, rows, train_time, wall_before, last_terms, resumed_from = 0, [], 0.0, 0.0, {}, None

    if ckpt_path.exists():
        state = checkpoint.load_checkpoint(ckpt_path)
        diff = _config_difference(state["config"], settings)
        if diff:
            shown = ", ".join(f"{k}: {state['config'].get(k)!r} -> {settings.get(k)!r}" for k in diff[:4])
            raise AttrrobError(f"checkpoint {ckpt_path} was made with other settings ({shown}); "
                               "delete that directory to start afresh, or restore the settings")
        if state["step"] > total_steps:
            raise AttrrobError(f"checkpoint {ckpt_path} is at step {state['step']}, beyond steps={total_steps}; "
                               "raise --steps or delete the checkpoint directory")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order.load_state_dict(state["extra"]["data_order"])
        _restore_rng(state["rng"], data_gen, noise_gen)
        step = resumed_from = state["step"]
        rows = list(state["extra"]["log_rows"])
        train_time = float(state["extra"]["train_time_s"])
        wall_before = float(state["extra"]["wall_time_s"])
        last_terms = dict(state["extra"]["last_terms"])

    def save_state() -> None:
        checkpoint.save_checkpoint(
            ckpt_path, model=model, optimizer=optimizer, step=step, rng=_rng_state(data_gen, noise_gen),
            config=settings, extra={"data_order": order.state_dict(), "log_rows": rows,
                                    "train_time_s": train_time, "last_terms": last_terms,
                                    "wall_time_s": wall_before + time.perf_counter() - wall_start})

    columns = log_columns(method)
    wall_start = time.perf_counter()
    start_step, window_time, window_examples = step, 0.0, 0
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc=f"{dataset}/{method}",
               unit="step", dynamic_ncols=True)
    model.train()
    try:
        while step < total_steps:
            idx = order.next(batch_size)
            x, y = x_train[idx].to(device, non_blocking=True), y_train[idx].to(device, non_blocking=True)
            lr = learning_rate(settings["lr_schedule"], step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logging_now = (step + 1) % settings["log_every"] == 0 or step + 1 == total_steps
            if logging_now:  # accuracy of the weights the loss is evaluated at, on the clean batch
                with torch.no_grad():
                    accuracy = (model(x).argmax(1) == y).float().mean().item()
            t0 = time.perf_counter()
            loss, terms = objectives.compute_loss(method, model, x, y, settings, noise_gen)
            _check_finite(terms, step + 1, method)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - t0
            train_time += elapsed
            window_time += elapsed
            window_examples += batch_size
            step += 1
            last_terms = terms
            bar.update(1)
            if logging_now:
                rows.append({"step": step, "lr": lr, **{t: terms[t] for t in objective_terms},
                             "batch_accuracy": accuracy, "examples_per_s": window_examples / window_time})
                bar.set_postfix(loss=f"{terms['total']:.4g}", acc=f"{accuracy:.2f}")
                window_time, window_examples = 0.0, 0
            if step % settings["checkpoint_every"] == 0 or step == total_steps:
                save_state()
                write_csv(out_dir / "train_log.csv", columns, rows)
    finally:
        bar.close()

    write_csv(out_dir / "train_log.csv", columns, rows)
    metrics = {
        "dataset": dataset, "method": method, "steps": step, "final": last_terms,
        "examples_per_s": (step * batch_size / train_time) if train_time > 0 else None,
        "wall_time_s": wall_before + time.perf_counter() - wall_start, "device": str(device),
        "resumed_from_step": resumed_from, "steps_this_run": step - start_step, "settings": settings,
    }
    write_json(out_dir / "train_metrics.json", metrics)
    checkpoint.save_model(out_dir / "model.pt", model=model, config=settings, step=step)
    return metrics
