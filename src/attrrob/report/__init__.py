"""The reports' tables and figures, read from result files (never recomputed, never typed).

The notebooks under workflow/notebooks and `attrrob collect-results` only call this package:
  `load`     names, published numbers (published.yaml only), one reader per result file;
  `tables`   the results table (paper layout, Markdown, full listing), AutoAttack flags;
  `paired`   paired differences between two models on the same attacked images;
  `compute`  the compute table in human units; `magnitudes` regulariser magnitudes from the logs;
  `lens`     LENS metrics and the noise control: what an attack adds over noise of the same ε;
  `figures`  forest plots, attack-strength curves, saliency grids, training curves, and `show`
             (an embedded PNG with alt text).
Missing result files are reported as missing, never as an error; a file that exists but cannot be
read raises `DataError` naming it. Values keep the units of the result files (accuracies and IN as
fractions); formatting turns fractions into percentages for display.
"""

from importlib import resources as _resources

from .load import (AUTOATTACK, EXAMPLE_ARRAYS, METRICS, MISSING, NO_PUBLISHED,
                   OPTIONAL_PER_EXAMPLE_COLUMNS, PER_EXAMPLE_COLUMNS, TRACE_ARRAYS, Metric, Published,
                   collect_per_example, dataset_name, load_accuracy, load_attack, load_examples,
                   load_per_example, load_trace, load_train_log, load_train_metrics, method_name, parse_list,
                   published_value, sarkar_claim_markdown)
from ..intervals import mean_ci
from .tables import (AUTOATTACK_GAP, autoattack_flags, collect_table, display_table, html_table, markdown_table,
                     paper_table_html, settings_markdown, unchanged_images, details_html, markdown_html,
                     attack_description, protocol_differences, protocol_notes)
from .paired import (PAIRED_METRICS, REFERENCE_METHOD, delta_html, delta_vs_reference, paired_comparison,
                     paired_difference, paired_markdown)
from .compute import collect_timings, format_duration, format_rate, timings_html
from .magnitudes import regularizer_magnitudes, regularizer_html
from .figures import (collect_eps_points, common_example_indices, ce_reduction, example_caption,
                      figure_html, forest_caption, forest_shows_published,
                      loss_terms, method_palette, plot_attack_strength, plot_eps_curves, plot_example_grid,
                      plot_forest, plot_metric_distribution, plot_training_curves, show, trace_curve,
                      training_note)
from .lens import CONTROL, lens_comparison, lens_html, lens_markdown, plot_noise_forest
from .protocol import claim_verdict, protocol_line, protocol_markdown
from . import compute, figures, lens, load, magnitudes, paired, protocol, seeds, sweeps, tables  # noqa: E402  (the submodules, for `report.paired.paired_difference`)

# The reports' CSS lives in report.css (package data) so that editors and linters see it as CSS.
STYLE = "<style>\n" + _resources.files(__name__).joinpath("report.css").read_text(encoding="utf-8") + "</style>"
"""CSS for the tables and figures above; the notebooks display it once, first."""
