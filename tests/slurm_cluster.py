"""A throwaway one-node Slurm cluster: munged, slurmctld and slurmd started by hand, no systemd.

Everything but slurm.conf lives in one folder (munge key and socket, state, spool, logs, PIDs) and
the daemons listen on free ports of 127.0.0.1, so a system munge is left alone. slurm.conf goes
where Slurm looks by default, /etc/slurm/slurm.conf, and is removed again on stop: the job step
of snakemake-executor-plugin-slurm 2.8.0 (jobstep 0.6.1) drops SLURM_CONF from the environment
of its inner `srun`, so a cluster that clients find only through SLURM_CONF cannot run its jobs.
A slurm.conf that this module did not write is never touched (the cluster is then unavailable).

The node is this machine (`hostname -s`, `nproc` CPUs, `free -m` memory) in two partitions, `cpu`
and `gpu`; `gpu` is the default one, so a job that forgets its partition is visible as one that
ran there. No GRES: no GPU job can run. No accounting (no slurmdbd, so `sacct` fails), as on
many small clusters.

Needs root (slurmd starts jobs as their user) and Debian's `slurm-wlm` and `munge`.

    python tests/slurm_cluster.py up DIR     # start (state in DIR)
    python tests/slurm_cluster.py down DIR   # cancel its jobs, stop the daemons `up` started
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# one-node test cluster of attrrob (tests/slurm_cluster.py), state in "
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol")
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be started here (missing packages, not root, a daemon that would not start)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    """Total memory as `free -m` reports it."""
    out = subprocess.run(["free", "-m"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Mem:"):
            return int(line.split()[1])
    raise ClusterUnavailable(f"cannot read the memory size from `free -m`:\n{out}")


def _alive(pid: int, name: str) -> bool:
    """Whether `pid` is still the daemon `name` (not exited, not a zombie, not a reused PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
    return comm == name[:15] and state != "Z"


class OneNodeCluster:
    def __init__(self, root: Path, conf: Path = SYSTEM_CONF):
        self.root = Path(root).resolve()
        self.conf = Path(conf)
        self.pid_file = self.root / "pids.json"
        self.node = socket.gethostname().split(".")[0]  # hostname -s
        self._procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, the Slurm executor): this cluster, not another."""
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PATH": SBIN, **self.env()})

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 90) -> None:
        missing = [tool for tool in DAEMONS + CLIENTS + ("munge", "free") if _which(tool) is None]
        if missing:
            raise ClusterUnavailable(f"not installed: {', '.join(missing)} "
                                     "(apt-get install slurm-wlm munge procps)")
        if os.geteuid() != 0:
            raise ClusterUnavailable("slurmd must run as root to start jobs")
        self._claim_conf()
        self._write_files()
        try:
            self._spawn("munged", [_which("munged"), "--foreground", "--force",
                                   f"--socket={self._munge_socket}",
                                   f"--key-file={self.root / 'munge/munge.key'}",
                                   f"--log-file={self.root / 'log/munged.log'}",
                                   f"--pid-file={self.root / 'munge/munged.pid'}",
                                   f"--seed-file={self.root / 'munge/munged.seed'}"])
            self._wait(lambda: self._munge_socket.exists(), timeout, "munged to open its socket")
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
            self._wait(lambda: "UP" in self.command("scontrol", "ping").stdout, timeout,
                       "slurmctld to answer")
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
            self._wait(self._node_idle, timeout, f"node {self.node} to become idle")
        except BaseException:
            self.stop()
            raise

    def _owner(self) -> Path | None:
        """The state folder of the test cluster whose slurm.conf is in place, if this module wrote it."""
        try:
            first = self.conf.read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return Path(first[len(MARKER):]) if first.startswith(MARKER) else None

    def _claim_conf(self) -> None:
        if not self.conf.exists():
            return
        owner = self._owner()
        if owner is None:
            raise ClusterUnavailable(f"{self.conf} exists (a real Slurm installation?); "
                                     "the test cluster is only started where none is configured")
        pids = owner / "pids.json"
        if owner != self.root and pids.exists():
            live = [name for name, pid in json.loads(pids.read_text()).items() if _alive(pid, name)]
            if live:
                raise ClusterUnavailable(f"another test cluster ({owner}) is running: {', '.join(live)}")
        # Otherwise a leftover of a test cluster that was not stopped: replaced below.

    @property
    def _munge_socket(self) -> Path:
        return self.root / "munge/munge.socket"

    def _write_files(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket folder others cannot enter and a key others can read.
        (self.root / "munge").chmod(0o755)
        key = self.root / "munge/munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        (self.root / "plugstack.conf").write_text("")  # not the system's SPANK plugins
        cpus = os.cpu_count() if not hasattr(os, "sched_getaffinity") else len(os.sched_getaffinity(0))
        # slurmd drains a node that has less memory than configured: leave a margin of 2%.
        memory = int(_memory_mb() * 0.98)
        root = self.root
        lines = [
            f"{MARKER}{root}",
            "ClusterName=attrrob-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self._munge_socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log/slurmctld.log'}",
            f"SlurmdLogFile={root / 'log/slurmd.log'}",
            f"PlugStackConfig={root / 'plugstack.conf'}",
            "MailProg=/bin/true",
            # No cgroups: works in containers and without systemd.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",  # memory requests are scheduled, as on clusters
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            # MinJobAge stays at Slurm's default (300 s): finished jobs stay visible to squeue.
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName=gpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=cpu Nodes={self.node} MaxTime=INFINITE State=UP",
        ]
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.root / f"log/{name}.out", "ab") as out:
            # A session of its own: survives the `up` command and the test's terminal signals.
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **self.env()})
        self._procs[name] = proc
        pids = json.loads(self.pid_file.read_text()) if self.pid_file.exists() else {}
        pids[name] = proc.pid
        self.pid_file.write_text(json.dumps(pids))

    def _node_idle(self) -> bool:
        state = self.command("sinfo", "-h", "-N", "-o", "%t").stdout.split()
        return bool(state) and all(s == "idle" for s in state)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ClusterUnavailable(f"{name} exited with status {proc.returncode}:\n"
                                             f"{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.3)
        raise ClusterUnavailable(f"timed out waiting for {what}:\n"
                                 + "\n".join(self.log_tail(name) for name in self._procs))

    def log_tail(self, name: str, lines: int = 20) -> str:
        text = ""
        for path in (self.root / f"log/{name}.out", self.root / f"log/{name}.log"):
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
        return f"--- {name}\n{text}"

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 30) -> None:
        """Cancel the cluster's jobs, then stop the daemons this cluster started, by PID."""
        pids = json.loads(self.pid_file.read_text()) if self.pid_file.exists() else {}
        if pids.get("slurmctld") and _alive(pids["slurmctld"], "slurmctld"):
            jobs = self.command("squeue", "-h", "-o", "%i").stdout.split()
            if jobs:
                self.command("scancel", *jobs)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self.command(
                        "squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING,SUSPENDED", "-o", "%i").stdout.split():
                    time.sleep(0.5)
        for name in reversed(DAEMONS):
            pid = pids.get(name)
            if pid is None or not _alive(pid, name):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid, name) and time.monotonic() < deadline:
                if name in self._procs:
                    self._procs[name].poll()  # reap our own child
                time.sleep(0.2)
            if _alive(pid, name):
                os.kill(pid, signal.SIGKILL)
            if name in self._procs:
                self._procs[name].wait(timeout)
        self.pid_file.unlink(missing_ok=True)
        if self._owner() == self.root:
            self.conf.unlink()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    cluster = OneNodeCluster(Path(argv[1]))
    if argv[0] == "down":
        cluster.stop()
        return 0
    try:
        cluster.start()
    except ClusterUnavailable as error:
        print(f"slurm_cluster: {error}", file=sys.stderr)
        return 1
    print(f"one-node Slurm cluster up: {cluster.conf} (state in {cluster.root}); "
          f"stop it with: python tests/slurm_cluster.py down {cluster.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
