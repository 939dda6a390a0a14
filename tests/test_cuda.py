"""CUDA paths against the CPU on the same weights and inputs (marker `cuda`; skipped without a GPU).

The checks are those of `benchmarks/gpu_check.py` (one implementation, imported from there), at the
GPU run's sizes: IG saliency maps, one training step of each of the seven methods (MNIST, GTSRB),
the top-k attack on MNIST images, `--device auto`'s lock, and the evaluator's batch plan.
Run:  python -m pytest -m cuda tests/test_cuda.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_check"])
    module = sys.modules["gpu_check"]
    return module


@pytest.fixture(scope="module")
def cuda(gc):
    from attrrob import devices

    device = torch.device("cuda", 0)
    previous = devices.set_float32_precision("cuda", "ieee")  # the spec's float32, not cuDNN's TF32 default
    yield device
    devices.set_float32_precision("cuda", previous)


def budget(gc):
    return gc.Budget(3600.0, {})


def test_ig_saliency_matches_cpu(gc, cuda):
    rows = gc.check_ig(cuda, gc.GPU, budget(gc), gc.golden_weights())
    bad = [r for r in rows if not r["pass"]]
    assert not bad, bad


def test_one_training_step_of_each_method_matches_cpu(gc, cuda):
    rows = gc.check_train_steps(cuda, gc.GPU, budget(gc))
    assert {r["method"] for r in rows} == set(gc.config.METHODS)
    assert all(r["finite"] for r in rows)
    bad = [(r["dataset"], r["method"], r["rel_diff"], r.get("adversarial_pixels_differing")) for r in rows if not r["pass"]]
    assert not bad, bad


def test_topk_attack_keeps_the_same_iterate_or_tau(gc, cuda):
    result = gc.check_topk_attack(cuda, gc.GPU, budget(gc), gc.golden_weights())
    assert result["pass"], result["images"]


def test_device_auto_lock_makes_a_second_process_wait_or_move(gc, cuda):
    result = gc.check_lock(cuda, gc.GPU)
    assert result["pass"], result


def test_evaluator_plan_fits_its_memory_budget(gc, cuda):
    report = {"plan": []}
    gc.section_plan(cuda, gc.GPU, budget(gc), report)
    for row in report["plan"]:
        assert row["ok"], row
        assert row["peak_of_budget"] <= 1.0, row
