"""Atomic writes: the final name appears only when the write completed."""

import json

import numpy as np
import pytest

from attrrob import outputs


def test_writes_land_under_final_name(tmp_path):
    outputs.write_json(tmp_path / "a" / "s.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "s.json").read_text()) == {"x": 1}
    outputs.save_npz(tmp_path / "arr.npz", x=np.arange(3))
    assert np.load(tmp_path / "arr.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "arr.npz"]


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_npz_bytes_depend_only_on_the_arrays(tmp_path):
    outputs.save_npz(tmp_path / "a.npz", x=np.arange(5), y=np.ones((2, 2)))
    outputs.save_npz(tmp_path / "b.npz", x=np.arange(5), y=np.ones((2, 2)))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_written_files_get_umask_permissions(tmp_path):
    import os

    outputs.write_text(tmp_path / "t.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_npz_keeps_shapes_including_scalars(tmp_path):
    outputs.save_npz(tmp_path / "s.npz", h=28, grid=np.arange(6).reshape(2, 3).T)
    with np.load(tmp_path / "s.npz") as npz:
        assert npz["h"].shape == () and int(npz["h"]) == 28
        assert npz["grid"].tolist() == [[0, 3], [1, 4], [2, 5]]


def test_csv_writes_floats_exactly_and_blanks_missing_cells(tmp_path):
    import csv

    outputs.write_csv(tmp_path / "t.csv", ["a", "b", "c"], [{"a": 0.1 + 0.2, "b": None}, {"a": 3, "b": "x", "c": 1e-300}])
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert float(rows[0]["a"]) == 0.1 + 0.2 and rows[0]["b"] == "" and rows[0]["c"] == ""
    assert rows[1] == {"a": "3", "b": "x", "c": "1e-300"}
