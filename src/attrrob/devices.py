"""Run-time device choice, with one exclusive lock file per GPU so concurrent jobs never share one.

`select_device("auto")` takes CUDA when available. With several GPUs visible it tries them in
order of free memory and keeps the first whose lock it can take (fcntl.flock, non-blocking).
Locks are named by the GPU's physical identity (UUID, else its `CUDA_VISIBLE_DEVICES` entry),
never by the process-local index, so jobs with different `CUDA_VISIBLE_DEVICES` still agree.
The kernel drops a flock when its file descriptor closes, so a lock is released at process exit
even after a crash. Lock directory: `$ATTRROB_GPU_LOCK_DIR`, else `<tempdir>/attrrob-gpu-locks`.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import AttrrobError

LOCK_DIR_ENV = "ATTRROB_GPU_LOCK_DIR"


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
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # Record the holder for whoever inspects a busy GPU; the flock itself is what counts.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return GpuLock(path, fd)


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


def select_device(spec: str = "auto") -> tuple[torch.device, GpuLock | None]:
    """Resolve `auto`, `cpu`, `cuda` or `cuda:i` to a device, and the GPU lock held for it (or None).

    `auto` on one visible GPU uses it without a lock; on several it picks a free one and holds
    its lock. An explicit `cuda:i` takes that GPU's lock when free (so `auto` jobs avoid it) and
    still runs, with a warning, when another job holds it.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return torch.device("cpu"), None
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if spec != "auto" and match is None:
        raise AttrrobError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        if spec == "auto":
            return torch.device("cpu"), None
        raise AttrrobError(f"--device {spec}: CUDA is not available here; use --device cpu or auto")
    gpus = gpu_inventory()
    if spec == "auto":
        if len(gpus) == 1:
            return torch.device("cuda", gpus[0].index), None
        index, lock = choose_gpu(gpus)
        return torch.device("cuda", index), lock
    index = int(match.group(1) or 0)
    if index >= len(gpus):
        raise AttrrobError(f"--device {spec}: only {len(gpus)} GPU(s) visible "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    lock = try_lock(gpus[index].physical_id)
    if lock is None:
        warnings.warn(f"GPU {spec} is locked by another attrrob job; sharing it as requested", stacklevel=2)
    return torch.device("cuda", index), lock
