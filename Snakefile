# attrrob: Sarkar et al. (AAAI 2021) and its baselines, from raw data to HTML reports.
#
#   snakemake --cores 2 all --configfile config/quickstart.yaml     # offline, CPU, minutes
#   snakemake --cores 8 --resources gpu=2 all                       # the paper grid
#   snakemake --profile workflow/profiles/slurm all                 # on a Slurm cluster
#
# A --configfile overrides config/config.yaml key by key; the result is validated against
# workflow/schemas/config.schema.yaml (unknown keys are errors, missing keys get defaults).

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    attack="|".join(ATTACKS),


rule all:
    default_target: True
    input:
        report_targets(),
