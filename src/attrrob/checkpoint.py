"""Training checkpoints and final model files: saved atomically, loaded with `weights_only=True`.

A checkpoint holds everything a bit-identical resume needs: model and optimizer state, step,
every RNG state, the settings it was trained with, and any extra state the loop adds (data
order, log rows). The final `model.pt` is `{"model", "config", "step", "dataset", "method",
"format": 1}`. Both contain plain types and tensors only, so no code runs when they are read.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import AttrrobError
from .outputs import save_torch

FORMAT = 1


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, rng: Mapping[str, Any], config: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> None:
    """Write a resumable training state to `path` (atomically)."""
    state = {
        "format": FORMAT,
        "kind": "checkpoint",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "rng": dict(rng),
        "config": dict(config),
        "dataset": config.get("dataset"),
        "method": config.get("method"),
        "extra": dict(extra or {}),
    }
    save_torch(path, state)


def save_model(path: str | Path, *, model: torch.nn.Module, config: Mapping[str, Any], step: int) -> None:
    """Write the final weights with the settings that produced them (atomically)."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"model": state_dict, "config": dict(config), "step": int(step),
                      "dataset": config.get("dataset"), "method": config.get("method"), "format": FORMAT})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint or model file; a missing, truncated or foreign file raises AttrrobError."""
    path = Path(path)
    if not path.is_file():
        raise AttrrobError(f"{path}: no such model/checkpoint file; train first or fix the path")
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing; the error says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise AttrrobError(f"{path}: not a readable attrrob model/checkpoint (corrupt, truncated or "
                           f"unsafe: {reason}); delete it and retrain") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise AttrrobError(f"{path}: not an attrrob model/checkpoint (missing 'model'/'config'); "
                           "pass a model.pt written by 'attrrob train'")
    if state.get("format") != FORMAT:
        raise AttrrobError(f"{path}: unsupported file format {state.get('format')!r} (this attrrob reads "
                           f"format {FORMAT}); retrain with this version")
    return state


def load_model(path: str | Path, *, dataset: str | None = None,
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Build the model recorded in a model/checkpoint file and load its weights, in eval mode.

    Returns `(model, meta)` with meta = `{"dataset", "method", "step", "config"}`. When `dataset`
    is given and differs from the file's, raises AttrrobError rather than evaluating a wrong model.
    """
    from . import models  # the top floor may import the ground floor; keep import cost off startup

    path = Path(path)
    state = load_checkpoint(path)
    file_dataset = state.get("dataset") or state["config"].get("dataset")
    if dataset is not None and file_dataset != dataset:
        raise AttrrobError(f"{path}: model was trained on '{file_dataset}', not '{dataset}'; "
                           "pass the model file of that data set")
    if file_dataset is None:
        raise AttrrobError(f"{path}: records no data set; pass a model.pt written by 'attrrob train'")
    model = models.build(file_dataset)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise AttrrobError(f"{path}: weights do not fit the {file_dataset} model ({first}); "
                           "retrain with this version") from None
    model.to(device).eval()
    meta = {"dataset": file_dataset, "method": state.get("method") or state["config"].get("method"),
            "step": int(state.get("step", 0)), "config": state["config"]}
    return model, meta
