"""Fetch raw files (official URLs or a local mirror), verify their pinned checksums, write atomically.

A file reaches its final name in the raw directory only after it has verified; a failed or
interrupted fetch leaves nothing there (the temporary file beside it is removed).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import outputs
from ..errors import DataError
from .sources import DIGITS_CONTENT_SHA256, DIGITS_FILE, RawFile, check_dataset, raw_files
from .store import read_npz_arrays, write_npz

_CHUNK = 1 << 20
TIMEOUT_S = 60.0
ATTEMPTS_PER_URL = 3
BACKOFF_S = 2.0  # waits 2 s, then 4 s, between attempts on one URL
MIRROR_HINT = ("without network access, pass --mirror DIR (a folder holding the raw files under the "
               "same names) to `attrrob download`, or set data.mirror in the workflow config")

# Indirection so tests (and offline machines) can replace the network.
_open_url = urllib.request.urlopen


def file_hashes(path: str | Path) -> dict:
    """MD5 and SHA-256 of a file's bytes, and its size."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest(), "size": size}


def gzip_content_sha256(path: str | Path, shown_name: str) -> str:
    sha = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{shown_name}: not a valid gzip file ({exc}); delete it and run `attrrob download` "
                        "again (or fix the mirror's copy)") from None
    return sha.hexdigest()


def verify(path: str | Path, spec: RawFile, shown_name: str | None = None) -> dict:
    """Check `path` against the pins of `spec`; return its hashes, or raise DataError naming the file."""
    shown = shown_name or spec.name
    hashes = file_hashes(path)
    if (spec.md5 and hashes["md5"] == spec.md5) or (spec.sha256 and hashes["sha256"] == spec.sha256):
        return hashes
    if spec.content_sha256 and spec.name.endswith(".gz"):
        # The same content recompressed (e.g. a local mirror) has other archive bytes: compare content.
        content = gzip_content_sha256(path, shown)
        if content == spec.content_sha256:
            return {**hashes, "content_sha256": content}
        got = f"md5 {hashes['md5']}, decompressed sha256 {content}"
    else:
        got = f"md5 {hashes['md5']}, sha256 {hashes['sha256']}"
    expected = " or ".join(f"{label} {value}" for label, value in (
        ("md5", spec.md5), ("sha256", spec.sha256), ("decompressed sha256", spec.content_sha256)) if value)
    raise DataError(f"{shown}: checksum mismatch (expected {expected}; got {got}); the file is corrupt, "
                    "truncated or a different version: delete it and run `attrrob download` again "
                    "(or replace the mirror's copy)")


def _copy_from_mirror(spec: RawFile, mirror: Path, dest: Path) -> dict:
    source = mirror / spec.name
    if not source.is_file():
        raise DataError(f"mirror {mirror} has no file {spec.name}: put the official file there under "
                        "that name, or download without --mirror")
    with outputs.atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
        return verify(tmp, spec, shown_name=str(source))


def _stream(url: str, tmp: Path) -> None:
    with _open_url(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
        while chunk := response.read(_CHUNK):
            out.write(chunk)


def _fetch_from_network(spec: RawFile, dest: Path) -> dict:
    errors: list[str] = []
    mismatch: DataError | None = None
    for url in spec.urls:
        for attempt in range(ATTEMPTS_PER_URL):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                with outputs.atomic_path(dest) as tmp:
                    _stream(url, tmp)
                    return verify(tmp, spec, shown_name=f"{spec.name} (from {url})")
            except DataError as exc:
                # Wrong bytes are not a transient failure: try the next URL, do not retry this one.
                mismatch = exc
                break
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
    if mismatch is not None:
        raise mismatch
    last = errors[-1] if errors else "no URL known"
    raise DataError(f"could not download {spec.name} ({last}); {MIRROR_HINT}")


def fetch_file(spec: RawFile, raw_dir: str | Path, *, mirror: str | Path | None = None) -> dict:
    """Make `raw_dir/spec.name` a verified copy; keep an existing file that verifies. Returns its hashes."""
    dest = Path(raw_dir) / spec.name
    if dest.is_file():
        try:
            return verify(dest, spec)
        except DataError:
            print(f"attrrob: {dest} fails its checksum; fetching it again", file=sys.stderr)
    if mirror is not None:
        return _copy_from_mirror(spec, Path(mirror), dest)
    if not spec.urls:
        raise DataError(f"{spec.name}: no download address known; {MIRROR_HINT}")
    return _fetch_from_network(spec, dest)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's embedded 8x8 digits as (uint8 images [1797, 8, 8] in 0..16, int64 labels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def digits_content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    sha = hashlib.sha256()
    sha.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    sha.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return sha.hexdigest()


def _write_digits(raw_dir: Path) -> dict:
    dest = raw_dir / DIGITS_FILE
    if dest.is_file():
        images, labels = read_npz_arrays(dest, ("images", "labels"), what="raw digits file")
        if digits_content_sha256(images, labels) == DIGITS_CONTENT_SHA256:
            return file_hashes(dest)
    images, labels = digits_arrays()
    got = digits_content_sha256(images, labels)
    if got != DIGITS_CONTENT_SHA256:
        raise DataError(f"scikit-learn's digits data has content sha256 {got}, expected "
                        f"{DIGITS_CONTENT_SHA256}: this scikit-learn ships different digits; install "
                        "the version in pyproject.toml")
    write_npz(dest, {"images": images, "labels": labels})
    return file_hashes(dest)


def download(dataset: str, raw_dir: str | Path, *, mirror: str | Path | None = None,
             files: Sequence[RawFile] | None = None) -> dict[str, dict]:
    """Fetch every raw file of `dataset` into `raw_dir` (from `mirror` when given), verified.

    `files` replaces the data set's pinned file list (for other archives, e.g. tests).
    Returns {file name: {md5, sha256, size, ...}}.
    """
    check_dataset(dataset)
    raw_dir = Path(raw_dir)
    if mirror is not None and not Path(mirror).is_dir():
        raise DataError(f"mirror {mirror} is not a directory: pass a folder holding the raw files")
    raw_dir.mkdir(parents=True, exist_ok=True)
    if dataset == "digits" and files is None:
        return {DIGITS_FILE: _write_digits(raw_dir)}
    specs = tuple(files) if files is not None else raw_files(dataset)
    return {spec.name: fetch_file(spec, raw_dir, mirror=mirror) for spec in specs}
