"""Shared test helpers: where the project's shared reference data lives, and skipping without it.

The shared folder sits beside the repository (`<repo>/../shared`); `ATTRROB_SHARED` overrides it.
Tests that need it skip with a message saying so, as on a user's clone that lacks it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared reference-data folder (`$ATTRROB_SHARED`, else `<repo>/../shared`)."""
    return Path(os.environ.get("ATTRROB_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under the shared folder; skips the calling test when it does not exist."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (shared reference data; set ATTRROB_SHARED to its folder)")
    return path


def golden_path(name: str) -> Path:
    """A golden reference file of `<shared>/data/golden/`; skips the calling test when absent."""
    return shared_path("data", "golden", name)


@pytest.fixture(scope="session")
def SHARED() -> Path:
    """The shared folder; skips the test when it is absent."""
    return shared_path()


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    """A copy of the workflow for dry runs of bad configs (one per test module)."""
    import shutil

    if shutil.which("snakemake") is None:
        pytest.skip("snakemake is not installed")
    from test_workflow import copy_workflow

    return copy_workflow(tmp_path_factory.mktemp("wf"))


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """The prepared offline digits (scikit-learn's), once per test module."""
    from attrrob import data

    root = tmp_path_factory.mktemp("digits")
    data.download("digits", root / "raw")
    data.prepare("digits", root / "raw", root / "digits.npz")
    return root / "digits.npz"
