"""A plan's training time, estimated before any job from measured per-step costs (step_costs.yaml).

The workflow calls `check_plan` when it starts: on a CPU it prints one line with the estimate and
refuses a plan of more than a day unless the config asks for the CPU explicitly (`device: cpu`),
so that the paper grid never starts months of CPU work without a word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml

from . import config as attrrob_config
from .errors import ConfigError

DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class Estimate:
    seconds: float        # sum over the training jobs, one thread each
    jobs: int
    longest_s: float
    lower_bound: bool     # some data set was counted at a smaller network's cost
    device: str


def step_costs() -> dict:
    text = resources.files("attrrob").joinpath("step_costs.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def gradient_rows(method: str, settings: dict) -> int:
    """Input-gradient rows one training step computes (forward + backward of one example each):
    the work a step's cost scales with. Natural: the batch; Madry: PGD iterations + the outer
    step; attribution objectives: each PGD iteration's approximate IG (m / approx_factor points)
    plus the outer loss's m-point IG and CE."""
    batch = settings["batch_size"]
    if method == "natural":
        return batch
    if method == "madry":
        return batch * (settings["pgd_steps"] + 1)
    inner_points = max(1, math.ceil(settings["m"] / settings["approx_factor"]))
    return batch * (settings["pgd_steps"] * inner_points + settings["m"] + 1)


def seconds_per_step(dataset: str, method: str, settings: dict, device: str = "cpu",
                     costs: dict | None = None) -> tuple[float, bool] | None:
    """Estimated seconds per step and whether it is a lower bound; None when nothing is measured."""
    costs = costs or step_costs()
    table = costs.get(device) or {}
    lower_bound = False
    if dataset not in table:
        stand_in = (costs.get("stand_in") or {}).get(dataset)
        if not stand_in or stand_in["dataset"] not in table:
            return None
        dataset, lower_bound = stand_in["dataset"], bool(stand_in["lower_bound"])
    entry = table[dataset]
    measured = entry["seconds_per_step"][method]
    scale = gradient_rows(method, settings) / gradient_rows(method, entry["measured_at"])
    return measured * scale, lower_bound


def estimate(jobs: Iterable[tuple[str, str, dict]], device: str = "cpu") -> Estimate | None:
    """Sum of the estimated training times of (dataset, method, settings) jobs."""
    costs = step_costs()
    total, longest, count, lower = 0.0, 0.0, 0, False
    for dataset, method, settings in jobs:
        per_step = seconds_per_step(dataset, method, settings, device, costs)
        if per_step is None:
            return None
        seconds = per_step[0] * settings["steps"]
        total, longest, count = total + seconds, max(longest, seconds), count + 1
        lower = lower or per_step[1]
    return Estimate(total, count, longest, lower, device)


def human(seconds: float) -> str:
    if seconds >= DAY_S:
        days = seconds / DAY_S
        return "1 day" if round(days, 1) == 1 else f"{days:.1f} days" if days < 10 else f"{days:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def describe(est: Estimate) -> str:
    bound = "at least " if est.lower_bound else ""
    return (f"estimated training time on the {est.device.upper()}: {bound}{human(est.seconds)} "
            f"of one-thread compute for {est.jobs} training job(s) (longest {bound}{human(est.longest_s)}), "
            "from measured per-step costs (src/attrrob/step_costs.yaml)")


def training_jobs(config_path: str | Path | None, pairs: Iterable[tuple[str, str]], train_steps: int | None):
    """(dataset, method, settings) of each (dataset, method) model to train."""
    for dataset, method in pairs:
        settings = attrrob_config.train_settings(dataset, method, config_path)
        if train_steps is not None:
            settings["steps"] = int(train_steps)
        yield dataset, method, settings


def resolve_device(setting: str) -> str:
    """'cpu' or 'cuda' as `--device <setting>` would resolve it on this machine."""
    if setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if setting == "cpu" else "cuda"


def check_plan(config_path: str | Path | None, pairs: Iterable[tuple[str, str]], train_steps: int | None,
               device_setting: str, limit_s: float = DAY_S) -> str | None:
    """The estimate line for training the (dataset, method) `pairs` (None when there is nothing to
    train or no cost is known for the device); raises ConfigError when the device resolves to the
    CPU without `device: cpu` in the config and the estimate exceeds `limit_s`."""
    jobs = list(training_jobs(config_path, pairs, train_steps))
    if not jobs:
        return None
    device = resolve_device(device_setting)
    est = estimate(jobs, device)
    if est is None:
        return None
    line = describe(est)
    if device == "cpu" and device_setting != "cpu" and est.seconds > limit_s:
        raise ConfigError(
            f"{line}; that is more than {human(limit_s)} and `device: {device_setting}` found no GPU: "
            "run where a GPU is, use a smaller config (e.g. config/quickstart.yaml), or set "
            "`device: cpu` in the config to train on the CPU anyway")
    return line
