"""The README's results section, the study README's status, the study's table.md/metrics.json and
docs/budgets.md are exactly what the committed study files give (the command the README names,
`attrrob study report ... --check`): any difference, byte for byte, fails. The HTML reports are
left out here (slow); tests/test_study.py renders them from a clone of a tiny study."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attrrob.study import regenerate

REPO = Path(__file__).resolve().parents[1]
STUDY = Path("studies/mnist_cpu")
BUDGET_SOURCES = [Path("studies/mnist_cpu/budget"), Path("studies/digits_quickstart/budget")]


@pytest.fixture
def in_repo():
    # The generated texts name the study by its path from the repository root, as the README's command does.
    before = Path.cwd()
    os.chdir(REPO)
    yield
    os.chdir(before)


def regenerated() -> dict[Path, str]:
    return regenerate.regenerated(STUDY, Path("README.md"), Path("docs/budgets.md"), BUDGET_SOURCES)


def test_committed_files_regenerate_byte_identically(in_repo):
    texts = regenerated()
    assert Path("README.md") in texts and Path("docs/budgets.md") in texts and STUDY / "README.md" in texts
    stale = regenerate.differences(texts)
    assert not stale, (f"{[str(p) for p in stale]} differ from the committed study files; run "
                       "`attrrob study report --study studies/mnist_cpu --readme README.md --budgets docs/budgets.md "
                       "--budget-sources studies/mnist_cpu/budget studies/digits_quickstart/budget` and commit")


def test_a_hand_edit_is_a_difference(in_repo):
    texts = regenerated()
    edited = {path: text.replace("Study", "Studies", 1) for path, text in texts.items() if "Study" in text}
    assert edited and all(text != texts[path] for path, text in edited.items())
    # The same check, against the edited texts as if they were the files.
    assert set(regenerate.differences(edited)) == set(edited)


def test_budget_sources_are_in_the_tree():
    assert sorted(p.name for p in (REPO / "studies/digits_quickstart/budget").glob("grid_*.json"))
    assert not (REPO / "benchmarks/results.dvc").exists()
    page = (REPO / "docs/budgets.md").read_text(encoding="utf-8")
    assert "not in this repository's tree" not in page
    assert "`studies/digits_quickstart/budget/grid_000300.json`" in page


def test_the_committed_study_stays_within_its_size_limit():
    # The issue that set the study up allows 25 MB for everything committed under studies/ (per-example
    # files, traces, rendered reports); about 0.5 MB a run leaves room for all 18 runs.
    files = [path for path in (REPO / "studies").rglob("*") if path.is_file()]
    total = sum(path.stat().st_size for path in files)
    largest = max(files, key=lambda path: path.stat().st_size)
    assert total <= 25 * 10**6, (f"studies/ holds {total / 1e6:.1f} MB, over the 25 MB limit; the largest file is "
                                 f"{largest.relative_to(REPO)} ({largest.stat().st_size / 1e6:.1f} MB)")
