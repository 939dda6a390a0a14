"""The layout of a run's result files: their names, CSV columns and NPZ arrays.

Writers (`training`, `evaluation`) and readers (`report.load`, `experiments`, `selection`, the
study) import these names, so a renamed column or file changes both sides at once; a test writes
each file and reads it back through the report's readers.
"""

from __future__ import annotations

from typing import Iterable

# ---- training: results/.../<method>/
MODEL = "model.pt"
TRAIN_LOG = "train_log.csv"
TRAIN_METRICS = "train_metrics.json"
TRAIN_OUTPUTS = (MODEL, TRAIN_LOG, TRAIN_METRICS)


def train_log_columns(terms: Iterable[str]) -> list[str]:
    """train_log.csv's header: step, lr, total, the method's loss terms (registry), then batch stats."""
    return ["step", "lr", "total", *terms, "batch_accuracy", "examples_per_s"]


# ---- evaluation: results/.../<method>/accuracy/ and attack_<name>/
SUMMARY = "summary.json"
PER_EXAMPLE = "per_example.csv"
EXAMPLES = "examples.npz"
TRACE = "trace.npz"
ACCURACY_OUTPUTS = (SUMMARY, PER_EXAMPLE)
ATTACK_OUTPUTS = (SUMMARY, PER_EXAMPLE, EXAMPLES, TRACE)

ACCURACY_COLUMNS = ("index", "label", "natural_prediction", "adversarial_prediction", "autoattack_prediction")

# The attribution metrics of an attacked image (the paper's), and LENS (Kamath et al., AAAI 2024)
# at k_metric and the `window` setting, reported beside them.
METRIC_NAMES = ("topk_intersection", "kendall_tau", "spearman_rho", "mass_center_shift", "linf")
LENS_NAMES = ("lens_recall", "lens_precision", "topk_div_intersection", "lens_recall_div", "lens_precision_div")

# per_example.csv of an attack: the columns every reader needs, then those newer evaluators add
# (older files lack them; readers take them when present).
PER_EXAMPLE_COLUMNS = ("index", "label", "prediction", "status", *METRIC_NAMES, "restart", "step", "zero_direction")
OPTIONAL_PER_EXAMPLE_COLUMNS = ("topk_tied_slots", "topk_intersection_index")
ATTACK_COLUMNS = (*PER_EXAMPLE_COLUMNS, *OPTIONAL_PER_EXAMPLE_COLUMNS, *LENS_NAMES, "topk_div_completed")

TRACE_ARRAYS = ("indices", "iterations", "kendall_tau", "topk_intersection")
EXAMPLE_ARRAYS = ("indices", "labels", "original", "attacked", "saliency_original", "saliency_attacked",
                  "height", "width")
