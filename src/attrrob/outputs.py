"""Atomic file writes: a crash never leaves a half-written file under its final name."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .errors import is_write_error, write_error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failed write (full disk, read-only file system, no permission) raises AttrrobError naming
    `path` and the errno; the temporary file is removed and an earlier `path` keeps its bytes.
    """
    path = Path(path)
    tmp_path: Path | None = None
    in_block = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        in_block = True
        yield tmp_path
        in_block = False
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        # The block may fail for reasons of its own (a download's network error): only write errors
        # are reported as such; ours (folder, temporary file, rename) always are.
        if in_block and not is_write_error(exc):
            raise
        raise write_error(path, exc) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A CSV with `columns`; floats written exactly (repr), None and missing keys as empty cells."""
    def cell(value: Any) -> Any:
        if value is None:
            return ""
        return repr(value) if isinstance(value, float) else value

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: cell(row.get(key)) for key in columns})
    write_text(path, buffer.getvalue())


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Through a Python file object, a full disk raises OSError(ENOSPC) rather than torch's
        # errno-less RuntimeError ("basic_ios::clear", "unexpected pos").
        torch.save(obj, fh)


def save_npz(path: str | os.PathLike, compressed: bool = True, **arrays: Any) -> None:
    """Write an .npz whose bytes depend only on the arrays (numpy's savez stamps the current time)."""
    import zipfile

    import numpy as np

    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as archive:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def json_safe(value: Any) -> Any:
    """NaN (no value, no interval) as null, recursively: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
