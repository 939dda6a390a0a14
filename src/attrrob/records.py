"""Records of written result files, and their check when the files are read back.

A run's summary (summary.json, train_metrics.json) records, for each per-run file it describes,
the file's SHA-256 and, for a CSV, its row count and header, all taken from the file as written
(not from a fixed column list, so a producer may add columns). A reader refuses a file that no
longer matches its record: a CSV cut mid-row, a file of another run copied in, or a half-finished
rerun whose new file sits beside the old summary would otherwise change numbers silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Mapping

from .errors import DataError

RECORDS_KEY = "files"


def sha256_file(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _csv_shape(data: bytes) -> tuple[list[str], int]:
    """(header, number of data rows) of CSV bytes; quoted newlines count as part of their row."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return (rows[0] if rows else []), max(len(rows) - 1, 0)


def record(path: str | Path) -> dict:
    """The record of a file as it is on disk now: sha256, and rows and columns for a CSV."""
    path = Path(path)
    data = path.read_bytes()
    entry: dict = {"sha256": hashlib.sha256(data).hexdigest()}
    if path.suffix == ".csv":
        columns, rows = _csv_shape(data)
        entry.update(rows=rows, columns=columns)
    return entry


def records(folder: str | Path, names: list[str]) -> dict:
    """`{name: record}` of the named files of `folder` that exist."""
    folder = Path(folder)
    return {name: record(folder / name) for name in names if (folder / name).is_file()}


def check(path: Path, summary: Mapping | None, summary_path: Path, producer: str) -> None:
    """Refuse `path` when `summary` records it and it no longer matches (no record: nothing to check,
    e.g. results written before records existed)."""
    entry = ((summary or {}).get(RECORDS_KEY) or {}).get(path.name)
    if not isinstance(entry, Mapping):
        return
    hint = f"re-run `{producer}` (or restore both files of one run)"
    data = path.read_bytes()
    if path.suffix == ".csv" and "rows" in entry:
        try:
            columns, rows = _csv_shape(data)
        except (UnicodeDecodeError, csv.Error):
            raise DataError(f"{path}: not a readable CSV, {summary_path} records {entry['rows']} rows; {hint}") from None
        if rows != entry["rows"]:
            raise DataError(f"{path}: {rows} rows, {summary_path} records {entry['rows']}: the file is cut or "
                            f"from another run; {hint}")
        if columns != entry.get("columns"):
            raise DataError(f"{path}: columns differ from those {summary_path} records; {hint}")
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise DataError(f"{path}: its SHA-256 differs from the one {summary_path} records: the file was changed "
                        f"or is from another run; {hint}")
