#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment, from the working directory (the
# repository root): install this checkout's package, whose dependencies the env already has.
set -euo pipefail
python -m pip install --no-deps -e .
