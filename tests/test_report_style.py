"""Figure details a reader notices (issue 21): axis ranges, units, captions, colours."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from attrrob.registry import METHODS
from attrrob.report import figures


def _per_example(column: str, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"dataset": "mnist", "method": np.repeat(["natural", "madry"], len(values) // 2),
                         column: values})


def test_kendall_violin_axis_follows_the_data_not_minus_one_to_one():
    values = np.random.default_rng(0).uniform(0.40, 0.55, 100)
    fig = figures.plot_metric_distribution(_per_example("kendall_tau", values), "kendall_tau")
    low, high = fig.axes[0].get_ylim()
    assert 0.3 < low < 0.40 and 0.55 < high < 0.65


def test_in_violin_is_in_percent_and_stays_within_0_to_100():
    values = np.random.default_rng(1).uniform(0.9, 1.0, 100)
    fig = figures.plot_metric_distribution(_per_example("topk_intersection", values), "topk_intersection")
    ax = fig.axes[0]
    assert "%" in ax.get_ylabel()
    low, high = ax.get_ylim()
    assert 85 < low < 90 and high == 100.0


def test_forest_caption_mentions_published_markers_only_where_drawn():
    table = pd.DataFrame({"IN_published": [np.nan, np.nan]})
    assert "hollow" not in figures.forest_caption(table) and not figures.forest_shows_published(table)
    table["IN_published"] = [0.71, np.nan]
    assert "hollow" in figures.forest_caption(table) and figures.forest_shows_published(table)


def _srgb_to_linear(c):
    c = np.asarray(c, float)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _deuteranopia(rgb):
    # Viénot, Brettel & Mollon (1999) deuteranope projection in linear RGB.
    m = np.array([[0.29275, 0.70725, 0.0], [0.29275, 0.70725, 0.0], [-0.02234, 0.02234, 1.0]])
    return m @ _srgb_to_linear(rgb)


def _protanopia(rgb):
    m = np.array([[0.11238, 0.88762, 0.0], [0.11238, 0.88762, 0.0], [0.00401, -0.00401, 1.0]])
    return m @ _srgb_to_linear(rgb)


# Thresholds between the former seaborn "colorblind" assignment's closest pair (0.175, 0.131, 0.053:
# Madry, IG-SUM-NORM and CACR-only were three oranges) and this palette's (0.266, 0.197, 0.137).
@pytest.mark.parametrize("simulate, threshold", [(_srgb_to_linear, 0.2), (_deuteranopia, 0.15), (_protanopia, 0.1)],
                         ids=["normal", "deuteranopia", "protanopia"])
def test_seven_methods_get_seven_hues_distinct_under_colour_blindness(simulate, threshold):
    palette = figures.method_palette(METHODS)
    assert len(METHODS) == 7 and len(set(palette.values())) == 7
    simulated = {m: simulate(c) for m, c in palette.items()}
    closest = min(np.linalg.norm(simulated[a] - simulated[b]) for a, b in itertools.combinations(METHODS, 2))
    assert closest > threshold, closest  # linear-RGB distance of the closest pair


def test_the_palette_has_one_definition_and_a_method_keeps_its_colour():
    assert figures.method_palette(["sarkar", "natural"])["sarkar"] == figures.method_palette(METHODS)["sarkar"]
    from attrrob import registry

    assert all(registry.method(m).colour for m in METHODS)  # each built-in has its own, in the registry


def test_collect_results_writes_the_figures_dvc_plots_shows(tmp_path):
    from test_report import _write_method

    from attrrob.cli import collect_results

    for seed, method in enumerate(("natural", "ig_norm")):
        _write_method(tmp_path / "results", "mnist", method, seed=seed, new=True)
    out = tmp_path / "figures"
    collect_results.main(["--results-dir", str(tmp_path / "results"), "--datasets", "mnist", "--methods",
                          "natural", "ig_norm", "sarkar", "--figures", str(out)])
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == ["mnist/forest_topk.png", "mnist/in_topk.png", "mnist/kendall_tau_topk.png",
                     "mnist/training_curves.png"]
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    # dvc.yaml shows exactly these images, and its page stays out of git.
    import yaml
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    assert yaml.safe_load((repo / "dvc.yaml").read_text())["plots"] == ["results/plots/figures"]
    assert "/dvc_plots/" in (repo / ".gitignore").read_text().split()
