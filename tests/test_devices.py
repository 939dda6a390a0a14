"""Device selection: mocked GPU inventories, real lock files in a temporary directory."""

import multiprocessing
import os
import threading
import time

import pytest
import torch

from attrrob import devices
from attrrob.devices import GpuInfo, select_device
from attrrob.errors import AttrrobError


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv(devices.WAIT_ENV, "0")  # tests of waiting set their own limit
    monkeypatch.delenv(devices.PRECISION_ENV, raising=False)
    return tmp_path / "locks"


def fake_gpus(monkeypatch, gpus):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(gpus))
    monkeypatch.setattr(devices, "gpu_inventory", lambda: list(gpus))


def test_cpu_and_auto_without_cuda(monkeypatch):
    fake_gpus(monkeypatch, [])
    assert select_device("cpu") == (torch.device("cpu"), None)
    assert select_device("auto") == (torch.device("cpu"), None)
    with pytest.raises(AttrrobError, match="CUDA is not available"):
        select_device("cuda:0")
    with pytest.raises(AttrrobError, match="expected auto, cpu"):
        select_device("tpu")


def test_single_gpu_auto_takes_its_lock_and_a_second_job_waits(monkeypatch):
    fake_gpus(monkeypatch, [GpuInfo(0, "uuid-a", 10)])
    device, lock = select_device("auto")
    assert device == torch.device("cuda", 0) and lock.held
    with pytest.raises(AttrrobError, match="all 1 visible GPUs are held"):
        select_device("auto")  # WAIT_ENV=0: no waiting
    threading.Timer(0.3, lock.release).start()
    start = time.monotonic()
    device2, lock2 = select_device("auto", wait_s=20)  # waits until the first job lets go
    assert device2 == torch.device("cuda", 0) and lock2.held and 0.2 < time.monotonic() - start < 10
    with pytest.raises(AttrrobError, match="no GPU lock became free within 0.3 s"):
        select_device("auto", wait_s=0.3)
    lock2.release()


def test_wait_seconds_from_environment(monkeypatch):
    monkeypatch.setenv(devices.WAIT_ENV, "12.5")
    assert devices.wait_seconds() == 12.5 and devices.wait_seconds(3) == 3
    monkeypatch.setenv(devices.WAIT_ENV, "")
    assert devices.wait_seconds() == float("inf")
    monkeypatch.setenv(devices.WAIT_ENV, "soon")
    with pytest.raises(AttrrobError, match="ATTRROB_GPU_WAIT_S='soon'"):
        devices.wait_seconds()


def test_float32_precision_is_set_and_restored(monkeypatch):
    before = devices.get_float32_precision("cpu")
    with devices.float32_precision("cpu", "bf16"):
        assert set(devices.get_float32_precision("cpu")["values"]) == {"bf16"}
    assert devices.get_float32_precision("cpu") == before
    with pytest.raises(AttrrobError, match="expected one of ieee, bf16"):
        devices.set_float32_precision("cpu", "tf32")
    monkeypatch.setenv(devices.PRECISION_ENV, "bf16")
    try:
        select_device("cpu")
        assert set(devices.get_float32_precision("cpu")["values"]) == {"bf16"}
    finally:
        devices.set_float32_precision("cpu", before)
    monkeypatch.setenv(devices.PRECISION_ENV, "half")
    with pytest.raises(AttrrobError, match="'half' on cpu"):
        select_device("cpu")


def test_auto_prefers_most_free_memory_and_skips_locked(monkeypatch, lock_dir):
    gpus = [GpuInfo(0, "uuid-a", 5), GpuInfo(1, "uuid-b", 50), GpuInfo(2, "uuid-c", 20)]
    fake_gpus(monkeypatch, gpus)
    dev1, lock1 = select_device("auto")
    assert dev1 == torch.device("cuda", 1) and lock1.held
    assert (lock_dir / "gpu-uuid-b.lock").exists()
    dev2, lock2 = select_device("auto")  # same process, new fd: flock still excludes it
    assert dev2 == torch.device("cuda", 2)
    dev3, lock3 = select_device("auto")
    assert dev3 == torch.device("cuda", 0)
    with pytest.raises(AttrrobError, match="all 3 visible GPUs are held"):
        select_device("auto")
    lock2.release()
    assert select_device("auto")[0] == torch.device("cuda", 2)
    lock1.release(), lock3.release()


def _hold_then_report(lock_dir, ready, done):
    os.environ[devices.LOCK_DIR_ENV] = lock_dir
    lock = devices.try_lock("uuid-b")
    ready.put(lock is not None)
    done.get()


def test_lock_excludes_other_processes_and_is_released_at_exit(monkeypatch, lock_dir):
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_hold_then_report, args=(str(lock_dir), ready, done))
    proc.start()
    assert ready.get(timeout=30) is True
    fake_gpus(monkeypatch, [GpuInfo(0, "uuid-a", 5), GpuInfo(1, "uuid-b", 50)])
    dev, lock = select_device("auto")
    assert dev == torch.device("cuda", 0)  # most free GPU is held by the child
    lock.release()
    done.put(None)
    proc.join(30)
    dev, lock = select_device("auto")  # the child exited without releasing: the kernel did
    assert dev == torch.device("cuda", 1)
    lock.release()


def test_lock_names_use_physical_ids_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")

    class Props:
        uuid = None

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    assert devices._physical_id(0) == "id-3" and devices._physical_id(1) == "id-1"
    Props.uuid = "GPU-1234"
    assert devices._physical_id(0) == "uuid-GPU-1234"


def test_explicit_index_locks_when_free_and_warns_when_shared(monkeypatch):
    fake_gpus(monkeypatch, [GpuInfo(0, "uuid-a", 5), GpuInfo(1, "uuid-b", 50)])
    dev, lock = select_device("cuda:1")
    assert dev == torch.device("cuda", 1) and lock.held
    with pytest.warns(UserWarning, match="locked by another"):
        dev2, lock2 = select_device("cuda:1")
    assert dev2 == dev and lock2 is None
    assert select_device("auto")[0] == torch.device("cuda", 0)  # auto avoids the explicitly held one
    with pytest.raises(AttrrobError, match="only 2 GPU"):
        select_device("cuda:5")
    assert select_device("cuda")[0] == torch.device("cuda", 0)


def test_inventory_reads_free_memory_from_nvidia_smi_by_uuid(monkeypatch):
    class Props:
        def __init__(self, uuid):
            self.uuid = uuid

    uuids = ["aaaa-1", "bbbb-2"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props(uuids[i]))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: pytest.fail("must not create a CUDA context"))
    monkeypatch.setattr(devices, "_nvidia_smi_free_bytes", lambda: {"aaaa-1": 100, "bbbb-2": 300})
    assert devices.gpu_inventory() == [GpuInfo(0, "uuid-aaaa-1", 100), GpuInfo(1, "uuid-bbbb-2", 300)]
    monkeypatch.setattr(devices, "_nvidia_smi_free_bytes", lambda: {})
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (7 * (i + 1), 10))
    assert [g.free_bytes for g in devices.gpu_inventory()] == [7, 14]


def test_nvidia_smi_output_is_parsed(monkeypatch):
    class Done:
        stdout = "GPU-AAAA-1, 1024\nGPU-bbbb-2, [N/A]\n"

    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: Done())
    assert devices._nvidia_smi_free_bytes() == {"aaaa-1": 1024 * 2**20}

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(devices.subprocess, "run", missing)
    assert devices._nvidia_smi_free_bytes() == {}
