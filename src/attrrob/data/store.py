"""Prepared data on disk: a byte-reproducible compressed `.npz` plus a JSON manifest beside it.

numpy's own savez stamps each member with the current time, so two identical runs would give
different bytes (and different DVC hashes); `write_npz` fixes the timestamps and member order.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .. import outputs
from ..errors import DataError
from ..records import sha256_file

SPLITS = ("train", "validation", "test")
# Every prepared file has these; `validation` only where the data set keeps one (see prepare).
REQUIRED_SPLITS = ("train", "test")
MANIFEST_FORMAT = 1


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Write `arrays` as a byte-reproducible compressed .npz (`attrrob.outputs.save_npz`); return its SHA-256."""
    outputs.save_npz(path, **arrays)
    return sha256_file(path)


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
    # A file without a validation split keeps the exact bytes it had before splits could be three.
    ordered = {f"{kind}_{split}": arrays[f"{kind}_{split}"] for split in SPLITS for kind in ("x", "y")
               if split in REQUIRED_SPLITS or f"x_{split}" in arrays}
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


def _first(bad: np.ndarray) -> int:
    """The first image (index along axis 0) where `bad` holds."""
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def check_content(path: Path, split: str, x: np.ndarray, y: np.ndarray, manifest: Mapping) -> None:
    """The arrays are what the manifest and the data set say: dtype, shape, finite values in the data
    set's range, labels in [0, classes). A matching hash only says the file is the one the manifest
    describes, not that its content is sane; errors name the file and the first bad index."""
    from ..config import dataset_input
    from ..registry import dataset_names

    dataset, hint = manifest.get("dataset"), _rerun_hint(manifest.get("dataset"))
    where = f"prepared file {path}"
    for key, array in ((f"x_{split}", x), (f"y_{split}", y)):
        described = (manifest.get("arrays") or {}).get(key) or {}
        if described and (str(array.dtype) != described.get("dtype") or list(array.shape) != described.get("shape")):
            raise DataError(f"{where}: {key} is {array.dtype} {list(array.shape)}, its manifest says "
                            f"{described.get('dtype')} {described.get('shape')}; {hint}")
    if x.dtype.kind not in "uif":
        raise DataError(f"{where}: x_{split} has dtype {x.dtype}, not a number type; {hint}")
    if y.dtype.kind not in "ui":
        raise DataError(f"{where}: y_{split} has dtype {y.dtype}; labels must be integers; {hint}")
    scale = manifest.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise DataError(f"{where}: its manifest's scale {str(scale)[:40]!r} is not a positive number; {hint}")
    if dataset not in dataset_names():
        raise DataError(f"{where}: its manifest names the unknown data set {str(dataset)[:40]!r}; {hint}")
    spec = dataset_input(dataset)
    expected = (spec["channels"], spec["height"], spec["width"])
    if x.shape[1:] != expected:
        raise DataError(f"{where}: x_{split} images are {list(x.shape[1:])}, {dataset} images are "
                        f"{list(expected)}; {hint}")
    if x.dtype.kind == "f" and len(x):
        finite = np.isfinite(x)
        if not finite.all():
            i = _first(~finite)
            raise DataError(f"{where}: x_{split}[{i}] holds NaN or infinite pixels; {hint}")
    top = spec["max_value"] / scale  # the stored values' range
    if len(x):
        outside = (x < 0) | (x > top * (1 + 1e-6))
        if outside.any():
            i = _first(outside)
            raise DataError(f"{where}: x_{split}[{i}] has pixel values outside the {dataset} range "
                            f"[0, {spec['max_value']}] (stored [0, {top:g}] × scale {scale:g}); {hint}")
    bad_labels = (y < 0) | (y >= spec["classes"])
    if bad_labels.any():
        i = int(np.flatnonzero(bad_labels)[0])
        raise DataError(f"{where}: y_{split}[{i}] = {int(y[i])} is not a class of {dataset} "
                        f"(0..{spec['classes'] - 1}); {hint}")


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
    if split not in REQUIRED_SPLITS and f"x_{split}" not in manifest.get("arrays", {}):
        raise DataError(f"prepared file {path} keeps no {split} split ({manifest.get('dataset')}: set its "
                        f"prepare settings to keep one, e.g. validation_holdout / validation_fraction); {hint}")
    try:
        x, y = read_npz_arrays(path, (f"x_{split}", f"y_{split}"), what="prepared file")
    except DataError as exc:
        raise DataError(f"{exc}; {hint}") from None
    if x.ndim != 4 or y.shape != (x.shape[0],):
        raise DataError(f"prepared file {path}: x_{split} {x.shape} / y_{split} {y.shape} are not "
                        f"[N,C,H,W] / [N]; {hint}")
    check_content(path, split, x, y, manifest)
    labels = torch.from_numpy(y.astype(np.int64, copy=False))
    if as_stored:
        return torch.from_numpy(x), labels
    # float32 times a float32 scale, as TensorFlow's MNIST reader did (uint8 -> float32, × 1/255).
    images = x.astype(np.float32)
    images *= np.float32(manifest["scale"])
    return torch.from_numpy(images), labels
