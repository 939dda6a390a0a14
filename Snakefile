# attrrob: Sarkar et al. (AAAI 2021) and its baselines, from raw data to HTML reports.
#
#   snakemake all --cores 2 --configfile config/quickstart.yaml     # offline, CPU, minutes
#   snakemake all --cores 8 --resources gpu=2                       # the paper grid
#   snakemake all --profile workflow/profiles/slurm                 # on a Slurm cluster
#
# The target comes first: --resources and --configfile take every word after them.
#
# A --configfile overrides config/config.yaml key by key; the result is validated against
# workflow/schemas/config.schema.yaml (unknown keys are errors, missing keys get defaults).

import re
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

SCHEMA = "workflow/schemas/config.schema.yaml"


try:
    from attrrob import config as attrrob_config
    from attrrob.errors import AttrrobError, ConfigError
except ImportError:  # named below, in one line (common.smk resolves settings with it)
    attrrob_config = None


# A config mistake stops here with one line naming the file and key (sys.exit prints it), not
# a traceback or Snakemake's dump of the whole schema. The files are checked before the
# `configfile:` directive reads config/config.yaml (a YAML error or an empty file there is named).
# Snakemake itself reads the --configfile files even earlier: a YAML syntax error or an empty
# file among them stops it with its own message (README, "Configuration").
if attrrob_config is not None:
    try:
        attrrob_config.check_workflow_files(
            ["config/config.yaml", *workflow.overwrite_configfiles]
        )
    except ConfigError as exc:
        sys.exit("attrrob: error: " + " ".join(str(exc).split()))


configfile: "config/config.yaml"


if attrrob_config is not None:
    # --config gives nested values as text; they mean what the same YAML means in a config file
    # (the schema types the settings).
    if "hyperparameters" in config:
        config["hyperparameters"] = attrrob_config.typed_from_text(
            config["hyperparameters"]
        )
    problem = attrrob_config.schema_problem(config, SCHEMA)
    if problem:
        sys.exit(f"attrrob: error: workflow config: {problem} (see {SCHEMA})")


validate(config, SCHEMA)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/handlers.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    attack="|".join([*ATTACKS, *SELECTION_ATTACKS]),
    run="|".join(re.escape(name) for name in RUNS),


rule all:
    default_target: True
    input:
        report_targets(),
