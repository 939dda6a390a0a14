"""The reports' tables and figures, read from result files (never recomputed, never typed).

The notebooks under workflow/notebooks and `attrrob collect-results` only call this package:
  `load`     names, published numbers (published.yaml only), one reader per result file;
  `tables`   the results table (paper layout, Markdown, full listing), paired differences on the
             same attacked images, AutoAttack flags, the compute table in human units;
  `lens`     LENS metrics and the noise control: what an attack adds over noise of the same ε;
  `figures`  forest plots, attack-strength curves, saliency grids, training curves, and `show`
             (an embedded PNG with alt text).
Missing result files are reported as missing, never as an error; a file that exists but cannot be
read raises `DataError` naming it. Values keep the units of the result files (accuracies and IN as
fractions); formatting turns fractions into percentages for display.
"""

from .load import (AUTOATTACK, DATASET_NAMES, EXAMPLE_ARRAYS, METHOD_NAMES, METRICS, MISSING, NO_PUBLISHED,
                   OPTIONAL_PER_EXAMPLE_COLUMNS, PER_EXAMPLE_COLUMNS, TRACE_ARRAYS, Metric, Published,
                   collect_per_example, dataset_name, load_accuracy, load_attack, load_examples,
                   load_per_example, load_trace, load_train_log, load_train_metrics, method_name, parse_list,
                   published_value, sarkar_claim_markdown)
from .tables import (AUTOATTACK_GAP, PAIRED_METRICS, REFERENCE_METHOD, autoattack_flags, collect_table,
                     collect_timings, delta_html, delta_vs_reference, display_table, format_duration,
                     format_rate, html_table, markdown_table, mean_ci, paired_comparison, paired_difference,
                     paired_markdown, paper_table_html, settings_markdown, timings_html, unchanged_images,
                     details_html, markdown_html, attack_description, regularizer_magnitudes, regularizer_html,
                     protocol_differences, protocol_notes)
from .figures import (METHOD_COLOURS, collect_eps_points, common_example_indices, ce_reduction, example_caption,
                      figure_html, forest_caption, forest_shows_published,
                      loss_terms, method_palette, plot_attack_strength, plot_eps_curves, plot_example_grid,
                      plot_forest, plot_metric_distribution, plot_training_curves, show, trace_curve,
                      training_note)
from .lens import CONTROL, lens_comparison, lens_html, lens_markdown, plot_noise_forest
from .protocol import claim_verdict, protocol_line, protocol_markdown
from . import figures, lens, load, protocol, seeds, sweeps, tables  # noqa: E402  (the submodules, for `report.tables.paired_difference`)

STYLE = """<style>
/* Doubled selectors: JupyterLab's own table rules (.jp-RenderedHTMLCommon td ...) must not win. */
table.attrrob-paper, .jp-RenderedHTMLCommon table.attrrob-paper { border-collapse: collapse; font-size: 13px;
  margin: 0.6em 0; font-variant-numeric: tabular-nums; table-layout: auto; }
table.attrrob-paper th, table.attrrob-paper td,
.jp-RenderedHTMLCommon table.attrrob-paper th, .jp-RenderedHTMLCommon table.attrrob-paper td {
  padding: 3px 8px; text-align: center; vertical-align: top; border: none; white-space: nowrap; line-height: 1.25; }
.jp-RenderedHTMLCommon table.attrrob-paper thead { border-bottom: none; }
.jp-RenderedHTMLCommon table.attrrob-paper thead tr:first-child th { border-top: 2px solid #333; }
.jp-RenderedHTMLCommon table.attrrob-paper thead tr:last-child th { border-bottom: 1px solid #333;
  font-weight: 600; font-size: 12px; vertical-align: bottom; }
.jp-RenderedHTMLCommon table.attrrob-paper th.group { border-bottom: 1px solid #999; font-weight: 700; }
.jp-RenderedHTMLCommon table.attrrob-paper tbody tr:last-child td,
.jp-RenderedHTMLCommon table.attrrob-paper tbody tr:last-child th { border-bottom: 2px solid #333; }
.jp-RenderedHTMLCommon table.attrrob-paper th.method, .jp-RenderedHTMLCommon table.attrrob-paper th.corner {
  text-align: left; font-weight: 500; vertical-align: top; }
.jp-RenderedHTMLCommon table.attrrob-paper th.corner { vertical-align: bottom; font-weight: 600; }
table.attrrob-paper td .ci { font-size: 10.5px; color: #555; }
table.attrrob-paper td .pub { font-size: 10.5px; color: #8a8a8a; font-style: italic; }
table.attrrob-paper td.missing { color: #999; }
table.attrrob-paper td.count { color: #555; }
.jp-RenderedHTMLCommon table.attrrob-paper tbody tr:nth-child(odd) { background: #f7f7f7; }
.jp-RenderedHTMLCommon table.attrrob-paper tbody tr:hover { background: #eef3fb; }
p.note { font-size: 12px; color: #444; max-width: 100ch; margin: 0.2em 0; }
p.flag { font-size: 13px; color: #8a3b00; font-weight: 600; }
.jp-RenderedHTMLCommon table.attrrob-compute { font-size: 12.5px; font-variant-numeric: tabular-nums; }
.jp-RenderedHTMLCommon table.attrrob-compute td, .jp-RenderedHTMLCommon table.attrrob-compute th {
  white-space: nowrap; padding: 2px 10px; }
.jp-RenderedHTMLCommon table.attrrob-compute td:first-child, .jp-RenderedHTMLCommon table.attrrob-compute th:first-child {
  text-align: left; }
table.attrrob-results { font-size: 11.5px; }
figure.attrrob-figure { margin: 0.5em 0 1.4em 0; }
figure.attrrob-figure figcaption { font-size: 12.5px; color: #333; max-width: 110ch; margin-top: 0.3em; }
details.attrrob-details { margin: 0.4em 0 0.8em 0; font-size: 13px; }
details.attrrob-details > div { overflow-x: auto; }
</style>"""
"""CSS for the tables and figures above; the notebooks display it once, first."""
