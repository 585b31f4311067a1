"""A real one-node SLURM cluster on 127.0.0.1 for the tests (Debian's munge, slurmctld, slurmd).

`SlurmCluster(root)` writes a munge key and a slurm.conf into `root` (state, spool, logs and pid
files there too, nothing in /etc or /var), starts munged, slurmctld and slurmd in the foreground
as child processes, and waits until `sinfo` shows the node idle. `stop()` cancels the jobs
still queued, then stops exactly the daemons it started, by pid. Clients (`sbatch`, `squeue`,
`scancel`, dask-jobqueue) find the cluster through `SLURM_CONF` (`cluster.env`).

`unavailable()` says why no such cluster can run here (binaries missing, not root), or None.
Install: `apt-get install munge slurmctld slurmd slurm-client` (.ci/run does it).
cluster/slurm/README.md shows the same setup by hand.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel")
APT_PACKAGES = "munge slurmctld slurmd slurm-client"
NODE = "esnode"
PARTITION = "debug"
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def unavailable() -> str | None:
    """Why a real SLURM cluster cannot be started on this machine, or None if it can."""
    missing = [n for n in DAEMONS + CLIENTS if which(n) is None]
    if missing:
        return (f"real SLURM not installed ({', '.join(missing)} not found): "
                f"apt-get install {APT_PACKAGES} (.ci/run installs them when apt works)")
    if os.geteuid() != 0:
        return "real SLURM: slurmd must run as root to start jobs (run the slow tests as root, as .ci/run does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, cpus: int, memory_mb: int, ctld_port: int, slurmd_port: int) -> str:
    """The slurm.conf of a one-node cluster whose files all live under `root`."""
    return f"""\
# one-node SLURM cluster on 127.0.0.1 (escape-sweep tests; see cluster/slurm/README.md)
ClusterName=escsweep{ctld_port}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.socket
MailProg=/bin/true
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# no cgroups: track job processes by parentage, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=5
MinJobAge=5
NodeName={NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ start / stop
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        root = self.root
        for d in ("state", "spool", "log", "run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        sock = root / "run" / "munge.socket"
        if len(str(sock)) > 100:
            raise RuntimeError(f"{sock}: path too long for a unix socket")
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        cpus = os.cpu_count() or 1
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 9 // 10
        self.conf.write_text(slurm_conf(root, cpus, memory_mb, _free_port(), _free_port()))
        self._spawn("munged", [which("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--log-file={root}/log/munged.log", f"--pid-file={root}/run/munged.pid",
                               f"--seed-file={root}/state/munged.seed"])
        self._until(lambda: sock.exists(), timeout, "munged did not create its socket")
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        self._spawn("slurmd", [which("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._until(lambda: self.node_state() == "idle", timeout, "the node did not become idle in sinfo")

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True, cwd=self.root)
        out.close()

    def _until(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"SLURM test cluster: {dead} exited early\n{self.logs()}")
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"SLURM test cluster: {what} within {timeout:.0f} s\n{self.logs()}")

    def logs(self, tail: int = 20) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every job, then stop the daemons this object started (by pid), slurmd first."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.cancel_all(timeout=timeout)
            except Exception:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)

    # ------------------------------------------------------------------ client commands
    def cmd(self, *argv: str, timeout: float = 30.0, check: bool = True) -> str:
        r = subprocess.run([which(argv[0]) or argv[0], *argv[1:]], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def node_state(self) -> str:
        try:
            return self.cmd("sinfo", "-h", "-N", "-n", NODE, "-o", "%T", check=False).strip()
        except subprocess.TimeoutExpired:
            return ""

    def jobs(self) -> dict[str, str]:
        """{job id: state} of every job the controller still lists (PENDING, RUNNING, COMPLETING...)."""
        out = self.cmd("squeue", "-h", "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_no_jobs(self, timeout: float = 60.0) -> dict[str, str]:
        """Wait until squeue lists no job; return what it still lists after `timeout` (empty if none)."""
        deadline = time.monotonic() + timeout
        while (left := self.jobs()) and time.monotonic() < deadline:
            time.sleep(0.25)
        return left

    def cancel_all(self, timeout: float = 60.0) -> None:
        ids = list(self.jobs())
        if ids:
            self.cmd("scancel", *ids, check=False)
        left = self.wait_no_jobs(timeout)
        if left:
            raise RuntimeError(f"jobs still listed {timeout:.0f} s after scancel: {left}")
