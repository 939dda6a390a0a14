"""IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or not, read strictly.

Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type these data sets use),
the number of dimensions, each dimension as a big-endian uint32, then the values.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

_UBYTE = 0x08


def _fail(path: Path, problem: str) -> DataError:
    return DataError(f"{path}: {problem}; delete it and run `attrrob download` again (or fix the mirror's copy)")


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """The uint8 array stored in an IDX file (`.gz` is decompressed); checks magic, rank and length."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `attrrob download` first")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail(path, f"cannot be read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _fail(path, "not an IDX file (bad magic number)")
    if data[2] != _UBYTE:
        raise _fail(path, f"IDX value type 0x{data[2]:02x} is not unsigned byte (0x08)")
    rank = data[3]
    if ndim is not None and rank != ndim:
        raise _fail(path, f"IDX file has {rank} dimensions, expected {ndim}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise _fail(path, "truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise _fail(path, f"IDX length {len(data)} bytes, header {shape} implies {expected} (truncated or padded)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
