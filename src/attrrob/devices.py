"""Run-time device choice, with one exclusive lock file per GPU so concurrent jobs never share one.

`select_device("auto")` takes CUDA when available. With several GPUs visible it tries them in
order of free memory and keeps the first whose lock it can take (fcntl.flock, non-blocking).
Locks are named by the GPU's physical identity (UUID, else its `CUDA_VISIBLE_DEVICES` entry),
never by the process-local index, so jobs with different `CUDA_VISIBLE_DEVICES` still agree.
The kernel drops a flock when its file descriptor closes, so a lock is released at process exit
even after a crash. Lock directory: `$ATTRROB_GPU_LOCK_DIR`, else `<tempdir>/attrrob-gpu-locks`.
`auto` takes a lock even on a single GPU; when every visible GPU is held it waits for one
(`$ATTRROB_GPU_WAIT_S` seconds, default without limit; 0 = fail at once).

Float32 precision: the spec's tolerances are those of IEEE float32, but PyTorch lets cuDNN run
float32 convolutions in TF32 by default. The device chosen here is set to IEEE float32 for
matmuls and convolutions unless `$ATTRROB_FLOAT32_PRECISION` asks for `tf32` (CUDA) or `bf16`
(oneDNN on a CPU: within the golden tolerances, but only 1.00-1.13x faster where measured,
docs/gpu/README.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import AttrrobError
from .locks import try_flock

LOCK_DIR_ENV = "ATTRROB_GPU_LOCK_DIR"
WAIT_ENV = "ATTRROB_GPU_WAIT_S"
PRECISION_ENV = "ATTRROB_FLOAT32_PRECISION"
FLOAT32_PRECISIONS = {"cpu": ("ieee", "bf16"), "cuda": ("ieee", "tf32")}
_POLL_S = 1.0


@dataclass(frozen=True)
class GpuInfo:
    index: int          # process-local CUDA index
    physical_id: str    # UUID or CUDA_VISIBLE_DEVICES entry: stable across processes
    free_bytes: int


class GpuLock:
    """An exclusive flock on one GPU's lock file, held until `release()` or process exit."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "GpuLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"GpuLock({str(self.path)!r}, held={self.held})"


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "attrrob-gpu-locks")


def try_lock(physical_id: str) -> GpuLock | None:
    """Take the lock of one GPU without waiting; None when another process holds it."""
    directory = lock_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttrrobError(f"cannot create GPU lock directory {directory} ({exc.strerror}); "
                           f"set {LOCK_DIR_ENV} to a writable directory") from None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", physical_id)
    path = directory / f"gpu-{safe}.lock"
    fd = try_flock(path)  # records the holder's PID for whoever inspects a busy GPU
    return None if fd is None else GpuLock(path, fd)


def _physical_id(index: int) -> str:
    try:
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except Exception:  # noqa: BLE001 - an exotic driver only costs us the UUID
        uuid = None
    if uuid:
        return f"uuid-{uuid}"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"id-{visible[index]}" if index < len(visible) else f"id-{index}"


def _normalised_uuid(text: str) -> str:
    return text.strip().lower().removeprefix("gpu-")


def _nvidia_smi_free_bytes() -> dict[str, int]:
    """Free memory per GPU UUID from nvidia-smi ({} when unavailable). Unlike torch.cuda.mem_get_info,
    this does not create a CUDA context (hundreds of MB) on every GPU just to look at it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    free = {}
    for line in out.splitlines():
        uuid, _, mib = line.partition(",")
        if mib.strip().isdigit():
            free[_normalised_uuid(uuid)] = int(mib) * 2**20
    return free


def gpu_inventory() -> list[GpuInfo]:
    """The GPUs this process sees (after CUDA_VISIBLE_DEVICES), with their free memory."""
    smi = _nvidia_smi_free_bytes()
    gpus = []
    for index in range(torch.cuda.device_count()):
        physical = _physical_id(index)
        free = smi.get(_normalised_uuid(physical.removeprefix("uuid-"))) if physical.startswith("uuid-") else None
        if free is None:
            try:
                free, _total = torch.cuda.mem_get_info(index)
            except Exception:  # noqa: BLE001 - unknown free memory ranks last, still usable
                free = 0
        gpus.append(GpuInfo(index, physical, int(free)))
    return gpus


def choose_gpu(gpus: list[GpuInfo]) -> tuple[int, GpuLock]:
    """The GPU with the most free memory whose lock is free (ties: lowest index), with its lock."""
    for gpu in sorted(gpus, key=lambda g: (-g.free_bytes, g.index)):
        lock = try_lock(gpu.physical_id)
        if lock is not None:
            return gpu.index, lock
    raise AttrrobError(f"all {len(gpus)} visible GPUs are held by other attrrob jobs (locks in {lock_dir()}); "
                       "run fewer jobs at once, or pass --device cuda:i to share one deliberately")


def _holders(gpus: list[GpuInfo]) -> str:
    pids = []
    for gpu in gpus:
        path = lock_dir() / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu.physical_id)}.lock"
        try:
            pids.append(path.read_text().strip() or "?")
        except OSError:
            pids.append("?")
    return ", ".join(pids)


def wait_seconds(value: float | None = None) -> float:
    """How long `acquire_gpu` waits: `value`, else `$ATTRROB_GPU_WAIT_S`, else without limit."""
    if value is not None:
        return float(value)
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return math.inf
    try:
        seconds = float(text)
    except ValueError:
        raise AttrrobError(f"{WAIT_ENV}={text!r}: expected a number of seconds (0 = do not wait)") from None
    return seconds if seconds >= 0 else math.inf


def acquire_gpu(gpus: list[GpuInfo], wait_s: float | None = None) -> tuple[int, GpuLock]:
    """`choose_gpu`, waiting (polling once a second) while every GPU is held, for at most
    `wait_seconds(wait_s)`; says once on stderr whom it waits for. Raises AttrrobError on timeout."""
    limit = wait_seconds(wait_s)
    deadline = time.monotonic() + limit
    announced = False
    while True:
        try:
            return choose_gpu(gpus)
        except AttrrobError:
            if time.monotonic() >= deadline:
                if limit > 0:
                    raise AttrrobError(f"no GPU lock became free within {limit:g} s (held by pid {_holders(gpus)}, "
                                       f"locks in {lock_dir()}); raise {WAIT_ENV}, run fewer jobs at once, or "
                                       "pass --device cuda:i to share one deliberately") from None
                raise
            if not announced:
                print(f"attrrob: all {len(gpus)} visible GPU(s) are held by other attrrob jobs (pid "
                      f"{_holders(gpus)}); waiting for one (limit: {WAIT_ENV}={limit:g} s)",
                      file=sys.stderr, flush=True)
                announced = True
            time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))


# ----------------------------------------------------------------------------- float32 precision


def _precision_slots(device_type: str) -> list[tuple[object, str]]:
    """(backend object, attribute) pairs of the new `fp32_precision` API for a device type."""
    backends = torch.backends
    if device_type == "cpu":
        owners = [getattr(getattr(backends, "mkldnn", None), n, None) for n in ("matmul", "conv")]
    else:
        owners = [getattr(getattr(backends, "cuda", None), "matmul", None),
                  getattr(getattr(backends, "cudnn", None), "conv", None)]
    return [(o, "fp32_precision") for o in owners if o is not None and hasattr(o, "fp32_precision")]


def get_float32_precision(device_type: str) -> dict:
    """The float32 precision settings of matmuls and convolutions on `device_type` (restorable)."""
    slots = _precision_slots(device_type)
    if slots:
        return {"api": "fp32_precision", "values": [getattr(o, a) for o, a in slots]}
    if device_type == "cuda":  # PyTorch < 2.9: the allow_tf32 flags
        return {"api": "allow_tf32", "values": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]}
    return {"api": None, "values": []}


def set_float32_precision(device_type: str, mode: str | dict) -> dict:
    """Set matmul and convolution float32 precision on `device_type` ("cpu" or "cuda") to `mode`:
    "ieee" (exact float32), "tf32" (CUDA) or "bf16" (oneDNN, CPU), or a dict from
    `get_float32_precision` to restore. Returns the previous settings. On a CPU PyTorch without
    the fp32_precision API, bf16 is unavailable (AttrrobError) and ieee is what it does anyway."""
    previous = get_float32_precision(device_type)
    if isinstance(mode, dict):
        if mode["api"] == "fp32_precision":
            for (owner, attr), value in zip(_precision_slots(device_type), mode["values"]):
                setattr(owner, attr, value)
        elif mode["api"] == "allow_tf32":
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mode["values"]
        return previous
    allowed = FLOAT32_PRECISIONS.get(device_type)
    if allowed is None or mode not in allowed:
        raise AttrrobError(f"float32 precision {mode!r} on {device_type}: expected one of "
                           f"{', '.join(allowed or ('ieee',))} ({PRECISION_ENV})")
    slots = _precision_slots(device_type)
    if slots:
        for owner, attr in slots:
            setattr(owner, attr, mode)
    elif device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = (mode == "tf32")
    elif mode != "ieee":
        raise AttrrobError(f"float32 precision {mode!r} needs PyTorch's fp32_precision API (2.9 or later); "
                           f"this is torch {torch.__version__}: unset {PRECISION_ENV}")
    return previous


@contextlib.contextmanager
def float32_precision(device_type: str, mode: str):
    """Run a block with `set_float32_precision(device_type, mode)`, restoring the settings after."""
    previous = set_float32_precision(device_type, mode)
    try:
        yield
    finally:
        set_float32_precision(device_type, previous)


def apply_precision_policy(device: torch.device) -> str:
    """Set `device`'s float32 precision from `$ATTRROB_FLOAT32_PRECISION` (default ieee); return it."""
    mode = (os.environ.get(PRECISION_ENV) or "ieee").strip().lower()
    set_float32_precision(device.type, mode)
    return mode


def select_device(spec: str = "auto", wait_s: float | None = None) -> tuple[torch.device, GpuLock | None]:
    """Resolve `auto`, `cpu`, `cuda` or `cuda:i` to a device, and the GPU lock held for it (or None).

    `auto` picks the free GPU with the most free memory and holds its lock (one GPU or several);
    while all are held it waits (`acquire_gpu`, `wait_s` / `$ATTRROB_GPU_WAIT_S`). An explicit
    `cuda:i` takes that GPU's lock when free (so `auto` jobs avoid it) and still runs, with a
    warning, when another job holds it. The chosen device's float32 precision is set by
    `apply_precision_policy` (IEEE float32 unless `$ATTRROB_FLOAT32_PRECISION` says otherwise).
    """
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return _with_policy(torch.device("cpu")), None
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if spec != "auto" and match is None:
        raise AttrrobError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        if spec == "auto":
            return _with_policy(torch.device("cpu")), None
        raise AttrrobError(f"--device {spec}: CUDA is not available here; use --device cpu or auto")
    gpus = gpu_inventory()
    if spec == "auto":
        if not gpus:
            return _with_policy(torch.device("cpu")), None
        index, lock = acquire_gpu(gpus, wait_s)
        return _with_policy(torch.device("cuda", index)), lock
    index = int(match.group(1) or 0)
    if index >= len(gpus):
        raise AttrrobError(f"--device {spec}: only {len(gpus)} GPU(s) visible "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    lock = try_lock(gpus[index].physical_id)
    if lock is None:
        warnings.warn(f"GPU {spec} is locked by another attrrob job; sharing it as requested", stacklevel=2)
    return _with_policy(torch.device("cuda", index)), lock


def _with_policy(device: torch.device) -> torch.device:
    apply_precision_policy(device)
    return device
