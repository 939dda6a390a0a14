"""Prepared data on disk: a byte-reproducible compressed `.npz` plus a JSON manifest beside it.

numpy's own savez stamps each member with the current time, so two identical runs would give
different bytes (and different DVC hashes); `write_npz` fixes the timestamps and member order.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .. import outputs
from ..errors import DataError

SPLITS = ("train", "test")
MANIFEST_FORMAT = 1


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Write `arrays` as a byte-reproducible compressed .npz (`attrrob.outputs.save_npz`); return its SHA-256."""
    outputs.save_npz(path, **arrays)
    return sha256_file(path)


def sha256_file(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def read_npz_arrays(path: str | Path, keys: Sequence[str], *, what: str) -> list[np.ndarray]:
    """The named arrays of an .npz file; a missing or unreadable file raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in keys if key not in npz.files]
            if missing:
                raise DataError(f"{what} {path} lacks arrays {', '.join(missing)}")
            return [npz[key] for key in keys]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{what} {path} is unreadable ({exc})") from None


def manifest_path(npz_path: str | Path) -> Path:
    return Path(npz_path).with_suffix(".json")


def write_prepared(out_path: str | Path, arrays: Mapping[str, np.ndarray], manifest: dict) -> dict:
    """Write the arrays, then the manifest (completed with shapes, dtypes and the npz's SHA-256)."""
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise DataError(f"output {out_path}: the prepared file must end in .npz")
    ordered = {f"{kind}_{split}": arrays[f"{kind}_{split}"] for split in SPLITS for kind in ("x", "y")}
    digest = write_npz(out_path, ordered)
    full = {
        **manifest,
        "format": MANIFEST_FORMAT,
        "file": out_path.name,
        "npz_sha256": digest,
        "arrays": {key: {"shape": list(value.shape), "dtype": str(value.dtype)} for key, value in ordered.items()},
    }
    outputs.write_json(manifest_path(out_path), full)
    return full


def _rerun_hint(dataset: str | None) -> str:
    name = dataset or "<dataset>"
    return f"run `attrrob prepare --dataset {name} --raw data/raw/{name} --out data/prepared/{name}.npz`"


def load_manifest(path: str | Path) -> dict:
    """The manifest of a prepared file (`path` may name the .npz or the .json)."""
    path = manifest_path(path)
    dataset = path.stem
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; {_rerun_hint(dataset)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"manifest {path} is unreadable ({exc}); {_rerun_hint(dataset)}") from None
    needed = ("dataset", "scale", "npz_sha256", "arrays")
    if not isinstance(manifest, dict) or any(key not in manifest for key in needed):
        raise DataError(f"manifest {path} lacks one of {', '.join(needed)}; {_rerun_hint(dataset)}")
    return manifest


def load_prepared(path: str | Path, split: str, *, verify: bool = True, as_stored: bool = False):
    """(x, y) of one split: x a float32 tensor NCHW in the data set's native range, y int64.

    `verify` checks the file's SHA-256 against its manifest. `as_stored=True` returns x in its
    stored dtype (uint8) instead, to save memory (multiply by `load_manifest(path)["scale"]`).
    """
    import torch

    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prepared file {path} does not exist; {_rerun_hint(path.stem)}")
    manifest = load_manifest(path)
    hint = _rerun_hint(manifest.get("dataset"))
    if verify:
        digest = sha256_file(path)
        if digest != manifest["npz_sha256"]:
            raise DataError(f"prepared file {path} has sha256 {digest}, its manifest says "
                            f"{manifest['npz_sha256']}: the file is corrupt or stale; {hint}")
    try:
        x, y = read_npz_arrays(path, (f"x_{split}", f"y_{split}"), what="prepared file")
    except DataError as exc:
        raise DataError(f"{exc}; {hint}") from None
    if x.ndim != 4 or y.shape != (x.shape[0],):
        raise DataError(f"prepared file {path}: x_{split} {x.shape} / y_{split} {y.shape} are not "
                        f"[N,C,H,W] / [N]; {hint}")
    labels = torch.from_numpy(y.astype(np.int64, copy=False))
    if as_stored:
        return torch.from_numpy(x), labels
    # float32 times a float32 scale, as TensorFlow's MNIST reader did (uint8 -> float32, × 1/255).
    images = x.astype(np.float32)
    images *= np.float32(manifest["scale"])
    return torch.from_numpy(images), labels
