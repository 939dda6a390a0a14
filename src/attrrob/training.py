"""The training loop: seeded, logged, checkpointed, and resumable bit-identically (on CPU).

One step = draw the next batch (epoch-wise reshuffling, as TensorFlow's `next_batch`), compute
the objective (`attrrob.objectives.compute_loss`), check every term is finite, update. Every
`checkpoint_every` steps, and at the end, the whole state (model, optimizer, step, data order,
every RNG, log rows, timing) goes atomically to `<checkpoint_dir>/settings~<key>/latest.pt`, where
the key is the digest of the settings that matter for the result: a rerun with the same settings
resumes from it; a run with other settings starts afresh in its own folder (never a silent mix of
two configurations, never an error). Settings that change only bookkeeping or memory chunking
(`steps`, `log_every`, `checkpoint_every`, `ig_max_batch`) are left out of the key, so they may
differ on resume.

Randomness: the model is initialised from `seed`; the data order and the PGD random starts come
from two CPU generators seeded from `seed` (samples are moved to the device), so a run does not
depend on what else touched the global RNG.

Determinism: on a CPU, the same settings, data file and torch thread count give a bit-identical
model, whether run in one go or resumed any number of times (tests/test_training.py). Another
thread count sums in another order (1 vs 2 threads: weights differ after a few steps of Madry
training), so the thread count is recorded in the checkpoint and train_metrics.json, and a
resume at another count is logged as a warning. GPU kernels are not made deterministic.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import checkpoint, models, objectives
from .config import dataset_input, settings_digest
from .errors import AttrrobError, DataError, Interrupted, short
from .logs import Progress, bar_wanted, duration, get
from .outputs import write_csv, write_json
from .records import RECORDS_KEY, records
from .result_files import MODEL, TRAIN_LOG, TRAIN_METRICS, train_log_columns

log = get("train")

CHECKPOINT_NAME = "latest.pt"
CALL_LOG = "train.log"  # beside the checkpoint: the log lines of every call that trained it (logs.kept_across_calls)
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "checkpoint_every", "ig_max_batch"})


def default_checkpoint_dir(out_dir: str | Path) -> Path:
    """`<parent>/.checkpoints-<name>` beside the output directory: resumable state, not a result."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f".checkpoints-{out_dir.name}"


def checkpoint_path(checkpoint_dir: str | Path, settings: Mapping[str, Any]) -> Path:
    """`<checkpoint_dir>/settings~<digest>/latest.pt`: the resumable state of exactly these settings."""
    kept = {key: value for key, value in settings.items() if key not in RESUMABLE_CHANGES}
    return Path(checkpoint_dir) / f"settings~{settings_digest(kept)}" / CHECKPOINT_NAME


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


_RNG_ENTRIES = ("data_generator", "noise_generator", "torch", "numpy", "python")
_EXTRA_ENTRIES = ("data_order", "log_rows", "train_time_s", "wall_time_s", "last_terms")


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
    return train_log_columns(t for t in objectives.term_names(method) if t != "total")


def _check_finite(terms: Mapping[str, float], step: int, method: str) -> None:
    for name in objectives.term_names(method):  # components first, so the culprit is named
        value = terms[name]
        if not math.isfinite(value):
            raise AttrrobError(f"step {step}: loss term '{name}' is {value} ({method}); training stopped — "
                               "lower the learning rate or the regulariser weight (--set lam=... or beta=...), or check the data")


class StopRequest:
    """SIGINT or SIGTERM during the training loop: finish the current step, save a checkpoint, stop.

    Stopping mid-step would save weights that do not match the step counter (a resume would not
    be bit-identical), so the handler only records the signal; a second signal stops at once.
    Outside the main thread (no signal handlers there) it never fires.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @classmethod
    def install(cls) -> "StopRequest":
        request = cls()
        if threading.current_thread() is threading.main_thread():
            request._previous = {s: signal.signal(s, request._handle) for s in cls.SIGNALS}
        return request

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step and writing a checkpoint (again to stop at once)",
                    signal.Signals(signum).name)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


@dataclass
class RunState:
    """Everything a run carries from step to step, and what a checkpoint saves and restores."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    order: BatchOrder
    data_gen: torch.Generator
    noise_gen: torch.Generator
    step: int = 0
    rows: list = field(default_factory=list)
    train_time: float = 0.0    # seconds inside training steps, all runs
    wall_before: float = 0.0   # wall seconds of earlier runs
    last_terms: dict = field(default_factory=dict)
    resumed_from: int | None = None
    threads: list = field(default_factory=list)  # torch thread counts the run was made at, in order of use


def fresh_state(settings: Mapping[str, Any], n_train: int, device: torch.device) -> RunState:
    """Step 0: model initialised from `seed`, data order and PGD noise from two CPU generators."""
    torch.manual_seed(settings["seed"])
    model = models.build(settings["dataset"]).to(device)
    optimizer = make_optimizer(model, settings)
    data_gen = torch.Generator().manual_seed(settings["seed"])
    noise_gen = torch.Generator().manual_seed(settings["seed"] + 1)
    return RunState(model, optimizer, BatchOrder(n_train, data_gen), data_gen, noise_gen,
                    threads=[torch.get_num_threads()])


def _differences(saved: Mapping, current: Mapping) -> str:
    diff = _config_difference(saved, current)
    return ", ".join(f"{k}: {short(saved.get(k))} -> {short(current.get(k))}" for k in diff[:4])


def check_finished_model(model_path: Path, settings: Mapping, force: bool) -> None:
    """Refuse to replace a finished model of other settings (unless `force`): a rerun into the wrong
    folder must not silently overwrite someone's result."""
    if force or not model_path.is_file():
        return
    saved = checkpoint.load_checkpoint(model_path)["config"]
    shown = _differences(saved, settings)
    if shown:
        raise AttrrobError(f"{model_path} holds a finished model of other settings ({shown}); "
                           "use another --out, or pass --force to replace it")


def resumes(ckpt_path: Path, settings: Mapping, force: bool = False) -> bool:
    """Whether `train` will resume from `ckpt_path` rather than start afresh (`resume`'s choice, made ahead)."""
    if not Path(ckpt_path).is_file():
        return False
    return not force or not _differences(checkpoint.load_checkpoint(ckpt_path)["config"], settings)


def resume(state: RunState, ckpt_path: Path, settings: Mapping, force: bool = False) -> bool:
    """Load `ckpt_path` into `state` when it exists and was made with these settings; True if resumed.

    A checkpoint of other settings is an error (or, with `force`, ignored: the run starts afresh
    and overwrites it at its first checkpoint)."""
    if not ckpt_path.exists():
        return False
    saved = checkpoint.load_checkpoint(ckpt_path)
    shown = _differences(saved["config"], settings)
    if shown:
        if force:
            log.warning("ignoring checkpoint %s of other settings (%s): --force starts afresh", ckpt_path, shown)
            return False
        raise AttrrobError(f"checkpoint {ckpt_path} was made with other settings ({shown}); "
                           "delete that directory to start afresh, or restore the settings")
    total_steps = int(settings["steps"])
    if saved["step"] > total_steps:
        raise AttrrobError(f"checkpoint {ckpt_path} is at step {saved['step']}, beyond steps={total_steps}; "
                           "raise --steps or delete the checkpoint directory")
    checkpoint.require_entries(saved, ckpt_path, "rng", _RNG_ENTRIES)
    checkpoint.require_entries(saved, ckpt_path, "extra", _EXTRA_ENTRIES)
    checkpoint.check_weights(ckpt_path, saved["model"], state.model, settings["dataset"])
    extra = saved["extra"]
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.order.load_state_dict(extra["data_order"])
        _restore_rng(saved["rng"], state.data_gen, state.noise_gen)
        state.rows = list(extra["log_rows"])
        state.train_time = float(extra["train_time_s"])
        state.wall_before = float(extra["wall_time_s"])
        state.last_terms = dict(extra["last_terms"])
    except AttrrobError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        # A checkpoint of the right keys but wrong contents (damaged, or not written by this loop).
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:120]
        raise AttrrobError(f"checkpoint {ckpt_path}: its training state cannot be restored ({reason}); "
                           "delete the checkpoint directory to start afresh") from None
    state.step = state.resumed_from = saved["step"]
    made_at, threads = [int(t) for t in extra.get("threads") or []], torch.get_num_threads()  # older: none
    if made_at and made_at[-1] != threads:
        log.warning("resuming at %d torch threads a run made at %d: the model will not be bit-identical to a "
                    "run at either count", threads, made_at[-1])
    state.threads = made_at + [threads] if not made_at or made_at[-1] != threads else made_at
    return True


def save_state(state: RunState, ckpt_path: Path, settings: Mapping, wall_this_run: float) -> None:
    checkpoint.save_checkpoint(
        ckpt_path, model=state.model, optimizer=state.optimizer, step=state.step,
        rng=_rng_state(state.data_gen, state.noise_gen), config=settings,
        extra={"data_order": state.order.state_dict(), "log_rows": state.rows, "train_time_s": state.train_time,
               "last_terms": state.last_terms, "wall_time_s": state.wall_before + wall_this_run,
               "threads": state.threads})


@dataclass
class StepResult:
    terms: dict
    lr: float
    accuracy: float | None  # clean-batch accuracy, measured on logged steps only
    seconds: float


def train_step(state: RunState, settings: Mapping[str, Any], x_train: torch.Tensor, y_train: torch.Tensor,
               device: torch.device, measure_accuracy: bool) -> StepResult:
    """One step: next batch, LR of this step, objective, finite check, update; advances `state.step`."""
    method, batch_size = settings["method"], int(settings["batch_size"])
    idx = state.order.next(batch_size)
    x, y = x_train[idx].to(device, non_blocking=True), y_train[idx].to(device, non_blocking=True)
    lr = learning_rate(settings["lr_schedule"], state.step)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    accuracy = None
    if measure_accuracy:  # accuracy of the weights the loss is evaluated at, on the clean batch
        with torch.no_grad():
            accuracy = (state.model(x).argmax(1) == y).float().mean().item()
    t0 = time.perf_counter()
    loss, terms = objectives.compute_loss(method, state.model, x, y, settings, state.noise_gen)
    _check_finite(terms, state.step + 1, method)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    state.train_time += elapsed
    state.step += 1
    state.last_terms = terms
    return StepResult(terms, lr, accuracy, elapsed)


def _terms_text(terms: Mapping[str, float], method: str) -> str:
    return " ".join(f"{name} {terms[name]:.4g}" for name in objectives.term_names(method) if name in terms)


def train(settings: Mapping[str, Any], x_train: torch.Tensor, y_train: torch.Tensor, out_dir: str | Path, *,
          checkpoint_dir: str | Path | None = None, device: str | torch.device = "cpu",
          progress: bool = True, force: bool = False) -> dict:
    """Train `settings["method"]` on (x_train, y_train); write model.pt, train_log.csv, train_metrics.json.

    Resumes from the checkpoint of these settings (`checkpoint_path`) when it exists. An `out_dir` holding a finished
    model of other settings is refused unless `force`. Returns the train_metrics dict.
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
    if int(settings["batch_size"]) > len(x_train):
        raise DataError(f"batch_size={settings['batch_size']} exceeds the {len(x_train)} training images; "
                        "set a smaller batch_size (--set batch_size=...)")
    device = torch.device(device)
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out_dir)
    ckpt_path = checkpoint_path(ckpt_dir, settings)
    total_steps, batch_size = int(settings["steps"]), int(settings["batch_size"])
    check_finished_model(out_dir / MODEL, settings, force)

    state = fresh_state(settings, len(x_train), device)
    resumed = resume(state, ckpt_path, settings, force)
    log.info("train %s/%s: settings %s, device %s, threads %d, %d steps of batch %d on %d images",
             dataset, method, settings_digest(settings), device, torch.get_num_threads(), total_steps,
             batch_size, len(x_train))
    if resumed:
        log.info("resumed from checkpoint %s at step %d", ckpt_path, state.step)

    columns = log_columns(method)
    wall_start = time.perf_counter()
    start_step, time_before, window_time, window_examples = state.step, state.train_time, 0.0, 0
    bar = tqdm(total=total_steps, initial=state.step, disable=not bar_wanted(progress), desc=f"{dataset}/{method}",
               unit="step", dynamic_ncols=True)
    lines = Progress(log, total_steps, f"{dataset}/{method} step", "steps", done=state.step,
                     enabled=not bar_wanted(progress))
    state.model.train()
    stop = StopRequest.install()
    try:
        while state.step < total_steps:
            logging_now = (state.step + 1) % settings["log_every"] == 0 or state.step + 1 == total_steps
            result = train_step(state, settings, x_train, y_train, device, measure_accuracy=logging_now)
            window_time += result.seconds
            window_examples += batch_size
            bar.update(1)
            if logging_now:
                rate = window_examples / window_time
                state.rows.append({"step": state.step, "lr": result.lr,
                                   **{t: result.terms[t] for t in objective_terms},
                                   "batch_accuracy": result.accuracy, "examples_per_s": rate})
                bar.set_postfix(loss=f"{result.terms['total']:.4g}", acc=f"{result.accuracy:.2f}")
                window_time, window_examples = 0.0, 0
            if lines.due(1):
                speed = batch_size * (state.step - start_step) / max(state.train_time - time_before, 1e-9)
                lines.update(1, f"{_terms_text(result.terms, method)}, lr {result.lr:.3g}, {speed:.4g} examples/s")
            else:
                lines.update(1)
            if state.step % settings["checkpoint_every"] == 0 or state.step == total_steps:
                save_state(state, ckpt_path, settings, time.perf_counter() - wall_start)
                write_csv(out_dir / TRAIN_LOG, columns, state.rows)
                log.info("checkpoint %s written at step %d", ckpt_path, state.step)
            elif stop.signum is not None:
                save_state(state, ckpt_path, settings, time.perf_counter() - wall_start)
                write_csv(out_dir / TRAIN_LOG, columns, state.rows)
            if stop.signum is not None:
                raise Interrupted(f"interrupted by {signal.Signals(stop.signum).name} after step {state.step}: "
                                  f"checkpoint {ckpt_path} written; rerun the same command to resume", stop.signum)
    finally:
        stop.uninstall()
        bar.close()

    return _finish(state, settings, out_dir, device, wall_this_run=time.perf_counter() - wall_start,
                   steps_this_run=state.step - start_step)


def _finish(state: RunState, settings: Mapping[str, Any], out_dir: Path, device: torch.device, *,
            wall_this_run: float, steps_this_run: int) -> dict:
    """The run's outputs: train_log.csv, train_metrics.json, then model.pt (its presence means done)."""
    dataset, method = settings["dataset"], settings["method"]
    write_csv(out_dir / TRAIN_LOG, log_columns(method), state.rows)
    step, train_time = state.step, state.train_time
    speed = step * int(settings["batch_size"]) / train_time if train_time > 0 else None
    metrics = {
        "dataset": dataset, "method": method, "steps": step, "final": state.last_terms,
        "examples_per_s": speed, "wall_time_s": state.wall_before + wall_this_run, "device": str(device),
        "resumed_from_step": state.resumed_from, "steps_this_run": steps_this_run, "settings": settings,
        "threads": state.threads,
        RECORDS_KEY: records(out_dir, [TRAIN_LOG]),
    }
    write_json(out_dir / TRAIN_METRICS, metrics)
    checkpoint.save_model(out_dir / MODEL, model=state.model, config=settings, step=step)
    log.info("done %s/%s: step %d, %s, %s examples/s, wall %s; wrote %s", dataset, method, step,
             _terms_text(state.last_terms, method) or "no step run", f"{speed:.4g}" if speed else "?",
             duration(metrics["wall_time_s"]), out_dir / MODEL)
    return metrics
