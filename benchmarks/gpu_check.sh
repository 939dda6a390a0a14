#!/usr/bin/env bash
# The GPU machine's one command: the CUDA correctness tests (tests/test_cuda.py, pytest with
# pytest-timeout), the speed and memory table (benchmarks/gpu_check.py, whose report carries the
# tests' verdict), then config/mnist_cpu.yaml's ig_norm training on the GPU (its train_log.csv, to
# compare with the CPU run's loss curve). Needs python with torch, numpy, scipy, pyyaml, tqdm, pytest
# and pytest-timeout (the lent H200 image has them all) and this checkout (no install, no network);
# MNIST and the golden weights come from $ATTRROB_SHARED (default ../shared).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR default: $OUT, else docs/gpu
#   TOTAL_S=480 TESTS_S=150 GPU_CHECK_BUDGET_S=220 CURVE_STEPS=1000 CURVE=0 ...
#     TESTS_S: the tests' session limit (each test has its own too); GPU_CHECK_BUDGET_S: the speed
#     table's; the curve gets what is left of TOTAL_S, the whole command's limit (skipped under 60 s).
#   SMOKE=1 bash benchmarks/gpu_check.sh /tmp/x   # all of it at tiny sizes on the CPU (CI); not a GPU result
# Exit status: 0 all passed and complete, 1 a test failed or something was cut short, 2 no CUDA or a
# package missing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-${OUT:-docs/gpu}}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
shared="${ATTRROB_SHARED:-$PWD/../shared}"
began=$(date +%s)
total="${TOTAL_S:-480}"
if [ "${SMOKE:-0}" = 1 ]; then
  export ATTRROB_CUDA_TESTS_ON_CPU=1 OMP_NUM_THREADS=1
  mode=cpu-smoke check_args=--cpu-smoke curve_device=cpu steps="${CURVE_STEPS:-2}"
else
  mode=gpu check_args= curve_device=cuda steps="${CURVE_STEPS:-1000}"
fi

missing=$(python -c 'import importlib.util as u
print(" ".join(m for m in ("torch", "numpy", "scipy", "yaml", "tqdm", "pytest", "pytest_timeout") if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  echo "gpu_check.sh: Python packages missing here: $missing (see docs/gpu/README.md)" >&2
  exit 2
fi
if [ "$mode" = gpu ] && ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check.sh: CUDA is not available here; SMOKE=1 runs the whole command on the CPU" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>/dev/null || true

# 1. Correctness. pytest-timeout stops a test past its own limit and the session past TESTS_S;
# `timeout` is the backstop for a hang it cannot interrupt.
tests_s="${TESTS_S:-150}"
stem="$out/test_cuda-$(date -u +%Y-%m-%d)-$mode"
timeout --signal=INT "$((${tests_s%.*} + 60))" python -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
  --session-timeout "$tests_s" --junitxml "$stem.xml" -o junit_family=xunit1 2>&1 | tee "$stem.log"
tests_rc=${PIPESTATUS[0]}

# 2. Speed and memory; its report (written after every section) includes the tests' verdict.
budget="${GPU_CHECK_BUDGET_S:-220}"
timeout --signal=INT "$((${budget%.*} + 60))" python benchmarks/gpu_check.py --budget-s "$budget" --out-dir "$out" \
  --tests-junit "$stem.xml" --tests-exit-code "$tests_rc" $check_args
rc=$?

# 3. The training curve, with what is left.
left=$((total - ($(date +%s) - began)))
if [ "${CURVE:-1}" != "0" ] && [ "$left" -lt 60 ]; then
  echo "curve: skipped, only ${left} s left of TOTAL_S=$total"
elif [ "${CURVE:-1}" != "0" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/attrrob-curve.XXXXXX")"
  if [ -f data/prepared/mnist.npz ]; then
    data=data/prepared/mnist.npz
  else
    data="$work/mnist.npz"
    python -m attrrob prepare --dataset mnist --raw "$shared/data/mnist" --out "$data" --config config/mnist_cpu.yaml \
      >"$work/prepare.log" 2>&1 || { echo "curve: prepare failed (see below)"; tail -3 "$work/prepare.log"; data=""; }
  fi
  if [ -n "$data" ]; then
    start=$(date +%s)
    timeout "$((total - ($(date +%s) - began) - 5))" python -m attrrob train --dataset mnist --method ig_norm --data "$data" \
      --out "$work/ig_norm" --config config/mnist_cpu.yaml --steps "$steps" --device "$curve_device" --no-progress \
      >"$work/train.log" 2>&1
    echo "curve: ig_norm on mnist_cpu.yaml, $steps steps on $curve_device, exit $?, $(($(date +%s) - start)) s"
    [ -f "$work/ig_norm/train_log.csv" ] && cp "$work/ig_norm/train_log.csv" "$out/train_log-mnist_cpu-ig_norm-$mode.csv"
    [ -f "$work/ig_norm/train_metrics.json" ] && cp "$work/ig_norm/train_metrics.json" "$out/train_metrics-mnist_cpu-ig_norm-$mode.json"
    tail -2 "$work/train.log"
  fi
  rm -rf "$work"
fi
exit "$rc"
