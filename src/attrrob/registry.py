"""The names the project knows: data sets, training methods, attacks, workflow config keys.

This is the one list of each. Everything else derives from it (`attrrob.config`, the CLIs'
choices) or is checked against it by tests/test_config.py (the workflow schema's enums and
top-level keys, `defaults.yaml`'s data sets, `objectives.OBJECTIVES`, `data.sources.DATASETS`,
the report's display names), so adding a name here and nowhere else fails a test that says
where it is missing.
"""

from __future__ import annotations

DATASETS = ("mnist", "fashion_mnist", "gtsrb", "flower", "digits")
METHODS = ("natural", "madry", "ig_norm", "ig_sum_norm", "sarkar", "sarkar_cacr", "sarkar_wacr")
ATTACKS = ("topk", "random", "mass_center", "targeted", "noise")  # noise: the control, attacks/noise.py

# Top-level keys of a workflow config file (workflow/schemas/config.schema.yaml `properties:`).
# A CLI `--config` file is a workflow config file: it reads `hyperparameters:` and refuses any
# key outside this list, as the workflow does.
WORKFLOW_KEYS = ("datasets", "methods", "attacks", "data", "device", "seeds", "sweeps", "train_steps", "evaluation",
                 "reports", "resources", "hyperparameters")
