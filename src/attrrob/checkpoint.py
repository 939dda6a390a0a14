"""Training checkpoints and final model files: saved atomically, loaded with `weights_only=True`.

A checkpoint holds everything a bit-identical resume needs: model and optimizer state, step,
every RNG state, the settings it was trained with, and any extra state the loop adds (data
order, log rows). The final `model.pt` is `{"model", "config", "step", "dataset", "method",
"format": 1}`. Both contain plain types and tensors only, so no code runs when they are read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from . import registry
from .errors import AttrrobError, short
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


# What a training checkpoint must hold beyond a model file's entries (`training.resume` reads them).
_CHECKPOINT_ENTRIES = {"optimizer": dict, "step": int, "rng": dict, "extra": dict}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint or model file; a missing, corrupt, truncated or foreign file raises AttrrobError.

    Any bytes may arrive here, so every exception of the loader is caught (random bytes make
    torch's unpickler raise IndexError, KeyError, TypeError, ... as well as its own errors), and
    the structure is checked before anything uses it.
    """
    path = Path(path)
    if not path.is_file():
        raise AttrrobError(f"{path}: no such model/checkpoint file; train first or fix the path")
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing; the error says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise AttrrobError(f"{path}: not a readable attrrob model/checkpoint (it claims more memory than "
                           "there is); delete it and retrain") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes: any loader failure means "not a model file"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise AttrrobError(f"{path}: not a readable attrrob model/checkpoint (corrupt, truncated or "
                           f"unsafe: {reason}); delete it and retrain") from None
    check_structure(state, path)
    return state


def check_structure(state: Any, path: Path) -> None:
    """The entries, and their types, that a model file (and, for kind 'checkpoint', a checkpoint) holds."""
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise AttrrobError(f"{path}: not an attrrob model/checkpoint (missing 'model'/'config'); "
                           "pass a model.pt written by 'attrrob train'")
    if state.get("format") != FORMAT:
        raise AttrrobError(f"{path}: unsupported file format {short(state.get('format'))} (this attrrob reads "
                           f"format {FORMAT}); retrain with this version")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise AttrrobError(f"{path}: entry 'model' is not a mapping of parameter names to tensors; "
                           "pass a model.pt written by 'attrrob train'")
    if not isinstance(state["config"], dict):
        raise AttrrobError(f"{path}: entry 'config' is not a mapping; pass a model.pt written by 'attrrob train'")
    for key in ("dataset", "method"):
        if not isinstance(state.get(key), (str, type(None))):
            raise AttrrobError(f"{path}: entry '{key}' is not a name; pass a model.pt written by 'attrrob train'")
    if not isinstance(state.get("step", 0), int):
        raise AttrrobError(f"{path}: entry 'step' is not an integer; pass a model.pt written by 'attrrob train'")
    if state.get("kind") != "checkpoint":
        return
    for key, kind in _CHECKPOINT_ENTRIES.items():
        if not isinstance(state.get(key), kind):
            raise AttrrobError(f"checkpoint {path}: entry '{key}' is missing or not a {kind.__name__}; "
                               "delete the checkpoint directory to start afresh")


def require_entries(state: Mapping, path: Path, group: str, keys: tuple[str, ...]) -> None:
    """A checkpoint's `group` mapping holds `keys` (what the training loop saved and will restore)."""
    missing = [key for key in keys if key not in state[group]]
    if missing:
        raise AttrrobError(f"checkpoint {path}: entry '{group}' lacks {', '.join(missing)}; "
                           "delete the checkpoint directory to start afresh")


def check_weights(path: Path, weights: Mapping[str, torch.Tensor], model: torch.nn.Module, what: str) -> None:
    """The file's parameter names and shapes are the network's (names the first that is not)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    if missing or unexpected:
        detail = f"missing {short(missing[0])}" if missing else f"unexpected {short(unexpected[0])}"
        raise AttrrobError(f"{path}: weights do not fit the {what} model ({detail}; "
                           f"{len(missing)} missing, {len(unexpected)} unexpected); pass a model of {what}")
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise AttrrobError(f"{path}: weights do not fit the {what} model ({key} has shape "
                               f"{list(weights[key].shape)}, the network's is {list(tensor.shape)}); "
                               f"pass a model of {what}")


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
        raise AttrrobError(f"{path}: model was trained on {short(file_dataset)}, not '{dataset}'; "
                           "pass the model file of that data set")
    if file_dataset is None:
        raise AttrrobError(f"{path}: records no data set; pass a model.pt written by 'attrrob train'")
    if file_dataset not in registry.dataset_names():
        raise AttrrobError(f"{path}: records the unknown data set {short(file_dataset)}; "
                           "pass a model.pt written by 'attrrob train'")
    model = models.build(file_dataset)
    check_weights(path, state["model"], model, file_dataset)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    meta = {"dataset": file_dataset, "method": state.get("method") or state["config"].get("method"),
            "step": int(state.get("step", 0)), "config": state["config"]}
    return model, meta
