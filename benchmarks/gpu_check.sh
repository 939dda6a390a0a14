#!/usr/bin/env bash
# The GPU machine's one command: the device check (benchmarks/gpu_check.py, at most 8 minutes),
# then config/mnist_cpu.yaml's ig_norm training on the GPU (its train_log.csv, to compare with the
# CPU run's loss curve). Needs only python, torch, numpy, scipy, pyyaml and this checkout (no
# install, no network); MNIST and the golden weights come from $ATTRROB_SHARED (default ../shared).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR default: $OUT, else docs/gpu
#   GPU_CHECK_BUDGET_S=480 CURVE_STEPS=1000 CURVE=0 TOTAL_S=570 ...   (CURVE=0 skips the training curve;
#   the curve gets what is left of TOTAL_S, the whole command's limit, and is skipped under 60 s)
#   Trying the wrapper on a CPU: GPU_CHECK_ARGS=--cpu-smoke CURVE_DEVICE=cpu CURVE_STEPS=2 bash benchmarks/gpu_check.sh /tmp/x
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-${OUT:-docs/gpu}}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
shared="${ATTRROB_SHARED:-$PWD/../shared}"
budget="${GPU_CHECK_BUDGET_S:-480}"
began=$(date +%s)

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>/dev/null || true
# The check keeps its own budget; `timeout` is the backstop (the report is rewritten after every section).
timeout --signal=INT "$((${budget%.*} + 60))" python benchmarks/gpu_check.py --budget-s "$budget" --out-dir "$out" ${GPU_CHECK_ARGS:-}
rc=$?

left=$(( ${TOTAL_S:-570} - ($(date +%s) - began) ))
if [ "${CURVE:-1}" != "0" ] && [ "$left" -lt 60 ]; then
  echo "curve: skipped, only ${left} s left of TOTAL_S=${TOTAL_S:-570}"
elif [ "${CURVE:-1}" != "0" ]; then
  steps="${CURVE_STEPS:-1000}"
  work="$(mktemp -d "${TMPDIR:-/tmp}/attrrob-curve.XXXXXX")"
  if ! python -c "import tqdm.auto" 2>/dev/null; then  # the CLIs import tqdm: a silent stand-in
    mkdir -p "$work/stub/tqdm"
    printf 'from .auto import tqdm\n' >"$work/stub/tqdm/__init__.py"
    printf '%s\n' 'class tqdm:' '    def __init__(self, *a, **k): pass' '    def __enter__(self): return self' \
      '    def __exit__(self, *e): return False' '    def update(self, *a, **k): pass' \
      '    def set_postfix(self, *a, **k): pass' '    def close(self): pass' >"$work/stub/tqdm/auto.py"
    export PYTHONPATH="$PYTHONPATH:$work/stub"
  fi
  if [ -f data/prepared/mnist.npz ]; then
    data=data/prepared/mnist.npz
  else
    data="$work/mnist.npz"
    python -m attrrob prepare --dataset mnist --raw "$shared/data/mnist" --out "$data" --config config/mnist_cpu.yaml \
      >"$work/prepare.log" 2>&1 || { echo "curve: prepare failed (see below)"; tail -3 "$work/prepare.log"; data=""; }
  fi
  if [ -n "$data" ]; then
    start=$(date +%s)
    timeout "$(( ${TOTAL_S:-570} - ($(date +%s) - began) - 5 ))" python -m attrrob train --dataset mnist --method ig_norm --data "$data" --out "$work/ig_norm" \
      --config config/mnist_cpu.yaml --steps "$steps" --device "${CURVE_DEVICE:-cuda}" --no-progress >"$work/train.log" 2>&1
    echo "curve: ig_norm on mnist_cpu.yaml, $steps steps on ${CURVE_DEVICE:-cuda}, exit $?, $(( $(date +%s) - start )) s"
    [ -f "$work/ig_norm/train_log.csv" ] && cp "$work/ig_norm/train_log.csv" "$out/train_log-mnist_cpu-ig_norm-gpu.csv"
    [ -f "$work/ig_norm/train_metrics.json" ] && cp "$work/ig_norm/train_metrics.json" "$out/train_metrics-mnist_cpu-ig_norm-gpu.json"
    tail -2 "$work/train.log"
  fi
  rm -rf "$work"
fi
exit "$rc"
