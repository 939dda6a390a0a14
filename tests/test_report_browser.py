"""The HTML reports as a reader sees them: rendered from a synthetic results tree exactly as
workflow/rules/report.smk renders them (papermill, then nbconvert with workflow/report/offline.html.j2),
opened in headless Chromium at 1,400 px. No console errors, every image decodes and has alt text,
no table wider than the viewport, the headings and methods present. Full-page screenshots are kept
in $ATTRROB_TEST_ARTEFACTS (default: pytest's temporary folder; the path is printed).

With ATTRROB_REPORTS_DIR set to a folder holding a quickstart's summary.html and digits.html (for
example <quickstart>/reports), those pages are checked as well.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason="the reports need the workflow extras")
pytest.importorskip("papermill", reason="the reports need the workflow extras (papermill)")
pytest.importorskip("nbconvert", reason="the reports need the workflow extras (nbconvert)")

import browser_check  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)
from test_report import _run_notebook, _write_method  # noqa: E402

from attrrob import report  # noqa: E402

if browser_check.chromium() is None:
    if os.environ.get("ATTRROB_REQUIRE_CHROMIUM"):  # .ci/run installed it: a skip would hide a broken install
        raise RuntimeError("ATTRROB_REQUIRE_CHROMIUM is set but no chromium is on PATH")
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)", allow_module_level=True)

METHODS = ["natural", "madry", "ig_norm", "ig_sum_norm", "sarkar"]
DATASETS = ["mnist", "fashion_mnist", "gtsrb", "flower"]
HEADINGS_SUMMARY = ["Results", "Δ vs IG-SUM-NORM", "Forest plots", "Attack strength", "Per-example Kendall τ",
                    "Training curves", "Compute"]
HEADINGS_DATASET = ["Results", "Δ vs IG-SUM-NORM", "Attacked examples", "Attack strength", "Per-example metrics",
                    "Training curves", "Compute"]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    folder = os.environ.get("ATTRROB_TEST_ARTEFACTS")
    path = Path(folder) / "browser" if folder else tmp_path_factory.mktemp("browser-artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """summary.html and mnist.html of a synthetic tree of the paper's four data sets (the widest
    table): MNIST and GTSRB with every newer file (trace, ties, AutoAttack), Fashion-MNIST and
    Flower as older evaluators wrote them."""
    root = tmp_path_factory.mktemp("results")
    for i, dataset in enumerate(DATASETS):
        for j, method in enumerate(METHODS):
            _write_method(root, dataset, method, seed=100 + 10 * i + j, n_images=60,
                          new=dataset in ("mnist", "gtsrb"))
    out = tmp_path_factory.mktemp("reports")
    common = {"results_dir": str(root), "methods": json.dumps(METHODS), "attacks": '["topk"]',
              "config_name": "browser check"}
    rendered = {}
    for name, parameters in (("summary", {"datasets": json.dumps(DATASETS)}), ("mnist", {"dataset": "mnist"})):
        notebook = "summary.ipynb" if name == "summary" else "dataset.ipynb"
        _, body = _run_notebook(notebook, out, {**common, **parameters})
        rendered[name] = out / f"{name}.html"
        rendered[name].write_text(body, encoding="utf-8")
    return rendered


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _check(page: Path, screenshot: Path, headings: list[str], texts: list[str]) -> dict:
    result = browser_check.check_page(page, screenshot)
    print(f"screenshot: {screenshot}")
    assert browser_check.problems(result, headings, texts) == []
    width, height = _png_size(screenshot)
    assert width == browser_check.VIEWPORT_WIDTH and height >= result["height"] > 1000  # the whole page
    return result


@pytest.mark.parametrize("name", ["summary", "mnist"])
def test_report_reads_cleanly_in_chromium(pages, artefacts, name):
    headings = HEADINGS_SUMMARY if name == "summary" else HEADINGS_DATASET
    result = _check(pages[name], artefacts / f"{name}.png", headings, [report.method_name(m) for m in METHODS])
    images = result["images"]
    assert len(images) >= 5 and all(i["natural_width"] > 100 for i in images)
    # Figures use the page's width: the forest plot spans most of the 1,400 px window.
    assert max(i["shown_width"] for i in images) > 0.75 * browser_check.VIEWPORT_WIDTH
    tables = [t for t in result["tables"] if t["cls"] == "attrrob-paper"]
    assert tables and all(t["right"] <= result["viewport"] for t in tables)


@pytest.mark.parametrize("name", ["summary", "digits"])
def test_quickstart_reports_read_cleanly_in_chromium(artefacts, name):
    folder = os.environ.get("ATTRROB_REPORTS_DIR")
    if not folder:
        pytest.skip("set ATTRROB_REPORTS_DIR to a quickstart's reports/ folder to check its pages")
    page = Path(folder) / f"{name}.html"
    assert page.is_file(), f"{page} is missing"
    methods = ["natural", "madry", "ig_norm", "ig_sum_norm", "sarkar", "sarkar_cacr", "sarkar_wacr"]
    headings = HEADINGS_SUMMARY if name == "summary" else HEADINGS_DATASET
    # Attack-strength curves need trace.npz; the headings stand either way.
    _check(page, artefacts / f"quickstart-{name}.png", headings, [report.method_name(m) for m in methods])


def test_the_check_catches_what_a_reader_would_trip_over(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head><body>"
        "<h1>Results</h1>"
        "<img alt='a broken image' src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA'>"
        "<img src='data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7'>"
        "<table class='wide'><tr><td><div style='width:2000px'>x</div></td></tr></table>"
        "<script>throw new Error('boom');</script>"
        "<script src='missing-file.js'></script>"
        "</body></html>", encoding="utf-8")
    result = browser_check.check_page(page)
    found = browser_check.problems(result, ["Results", "Training curves"], ["Natural"])
    text = "\n".join(found)
    assert "script error" in text and "boom" in text
    assert "failed to load" in text and "missing-file.js" in text
    assert "image 0 does not decode" in text
    assert "image 1 has no alt text" in text and "image 0 has no alt text" not in text
    assert "table 'wide'" in text and "past the 1400 px viewport" in text
    assert "no heading containing 'Training curves'" in text and "'Results'" not in text.split("headings:")[0]
    assert "does not show 'Natural'" in text
