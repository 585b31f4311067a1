"""Where a sweep's Dask workers come from: the embedded LocalCluster, an existing scheduler,
or a deployment from the registry (`--cluster NAME`). Only this module creates clusters.

Adding a deployment is one entry in `CLUSTERS`: a function `factory(opts) -> cluster`
whose result is a context manager (every `distributed` cluster is) that tears the
cluster down on exit, Ctrl-C included. `cluster_names()` feeds the CLI's choices.

Security defaults: nothing created here listens beyond 127.0.0.1 unless a deployment
needs it (dask-jobqueue's scheduler must be reachable from the compute nodes; its
dashboard still binds 127.0.0.1). TLS end to end comes from `make_security`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConnectError, DeployError, InputError
from .security import make_security, uses_tls  # noqa: F401  (re-exported)

LOOPBACK = "127.0.0.1"
DEFAULT_DASHBOARD = f"{LOOPBACK}:8787"
JOBQUEUE_ENV = "ESCAPE_SWEEP_JOBQUEUE"


@dataclass(frozen=True)
class ClusterOptions:
    """How to get workers: scheduler address, or a registered cluster kind, and its settings.

    scheduler        address of a running scheduler (tcp://host:8786, tls://host:8786); wins over `cluster`
    cluster          a name from `cluster_names()` ("local", "slurm", "pbs")
    n_workers        worker processes of the local cluster (default: one per core)
    jobs             batch jobs for slurm/pbs (default 1); each job runs one worker
    security         a `distributed.Security` (see `make_security`) or None
    jobqueue_config  path of the dask-jobqueue yaml for slurm/pbs (default: $ESCAPE_SWEEP_JOBQUEUE,
                     else cluster/<kind>/jobqueue.yaml if it exists, else dask config)
    connect_timeout  how long to keep trying to reach `scheduler` before ConnectError
    """

    scheduler: str | None = None
    cluster: str = "local"
    n_workers: int | None = None
    jobs: int | None = None
    security: object | None = None  # distributed.Security or None
    jobqueue_config: str | None = None
    connect_timeout: str = "20s"
    processes: bool | None = None  # local: worker processes (True), threads in this process (False), None: auto
    work_seconds: float | None = None  # the runner's estimate of the sweep's work on one core (auto's input)


# --------------------------------------------------------------------------- local


LOCAL_ENV = "ESCAPE_SWEEP_LOCAL"  # "threads" or "processes": force the local cluster's kind
THREADS_BELOW_SECONDS = 60.0  # auto: a sweep under this much estimated one-core work runs on threads


def local_processes(opts: ClusterOptions) -> bool:
    """Whether the local cluster runs worker processes: `opts.processes` if set, else $ESCAPE_SWEEP_LOCAL,
    else processes only for sweeps estimated at THREADS_BELOW_SECONDS or more of one-core work (or of
    unknown size). The kernels release the GIL, so threads in this process compute as fast, and skip
    1-2 s of worker start-up and imports; processes keep long sweeps isolated (a worker's memory, a
    crash) and are what fault tests kill (they pass --scheduler or ESCAPE_SWEEP_LOCAL=processes)."""
    if opts.processes is not None:
        return bool(opts.processes)
    kind = os.environ.get(LOCAL_ENV, "").strip().lower()
    if kind in ("threads", "processes"):
        return kind == "processes"
    if kind:
        raise InputError(f"{LOCAL_ENV}={kind!r}: expected 'threads' or 'processes'")
    return opts.work_seconds is None or opts.work_seconds >= THREADS_BELOW_SECONDS


def local_cluster(opts: ClusterOptions):
    """One worker process per core, one thread each -- or, for small sweeps (`local_processes`), one
    worker of one thread per core inside this process; scheduler, workers and dashboard on 127.0.0.1
    only (workers have no dashboard); tls:// addresses when `opts.security` asks."""
    from distributed import LocalCluster

    n = opts.n_workers or os.cpu_count() or 1
    protocol = "tls://" if uses_tls(opts.security) else "tcp://"
    if local_processes(opts):
        kw = dict(n_workers=n, threads_per_worker=1, processes=True, protocol=protocol, host=LOOPBACK,
                  scheduler_port=0)
    elif uses_tls(opts.security):
        kw = dict(n_workers=1, threads_per_worker=n, processes=False, protocol=protocol, host=LOOPBACK,
                  scheduler_port=0)
    else:  # in-process transport: no socket at all (results are handed over, not serialized)
        kw = dict(n_workers=1, threads_per_worker=n, processes=False, protocol="inproc://")
    with _workers_ignore_sigint(), warnings.catch_warnings():
        # "Port 8787 is already in use ... instead": the link printed at start is the real one
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        return LocalCluster(dashboard_address=DEFAULT_DASHBOARD, security=opts.security,
                            worker_dashboard_address=None, **kw)


def local_cuda_cluster(opts: ClusterOptions):
    """dask-cuda's LocalCUDACluster: one worker process per GPU of this host (CUDA_VISIBLE_DEVICES
    pinned), one thread each, advertising resource GPU=1; 127.0.0.1 only, like `local`."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise InputError("--cluster local-cuda needs dask-cuda: pip install 'escape-sweep[cuda]'") from None
    protocol = "tls://" if uses_tls(opts.security) else "tcp://"
    kw = {"n_workers": opts.n_workers} if opts.n_workers else {}
    with _workers_ignore_sigint(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        return LocalCUDACluster(
            threads_per_worker=1, host=LOOPBACK, protocol=protocol, dashboard_address=DEFAULT_DASHBOARD,
            scheduler_port=0, security=opts.security, worker_dashboard_address=None, resources={"GPU": 1}, **kw,
        )


@contextlib.contextmanager
def _workers_ignore_sigint():
    """Start worker processes with SIGINT ignored (they inherit it): Ctrl-C in the terminal
    reaches the whole process group, and only the client should act on it -- it stops
    submitting and closes the cluster -- instead of every worker printing a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------- dask-jobqueue


_JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}
_JOBQUEUE_KWARG = {"name": "job_name"}  # config key -> keyword where they differ


def _repo_default(kind: str) -> Path:
    return Path("cluster") / kind / "jobqueue.yaml"


def jobqueue_config_path(kind: str, path: str | None = None) -> Path | None:
    """The yaml that configures `kind`: `path`, else $ESCAPE_SWEEP_JOBQUEUE, else
    cluster/<kind>/jobqueue.yaml (relative to the working directory) if it exists, else None
    (dask config alone: ~/.config/dask/jobqueue.yaml, DASK_JOBQUEUE__SLURM__... variables)."""
    for origin, value in (("--jobqueue-config", path), (JOBQUEUE_ENV, os.environ.get(JOBQUEUE_ENV))):
        if value:
            p = Path(os.path.expanduser(value))
            if not p.is_file():
                raise InputError(f"{origin} {value}: no such file")
            return p
    default = _repo_default(kind)
    return default if default.is_file() else None


def jobqueue_settings(kind: str, path: str | None = None) -> tuple[dict, Path | None]:
    """The merged `jobqueue.<kind>` settings: dask config, overlaid by the yaml file's
    `jobqueue.<kind>` section (a file may also hold the section's keys at top level)."""
    import dask.config
    import yaml

    base = dict(dask.config.get(f"jobqueue.{kind}", {}) or {})
    p = jobqueue_config_path(kind, path)
    if p is None:
        return base, None
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{p}: not readable YAML ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{p}: expected a mapping with a 'jobqueue: {kind}:' section")
    if "jobqueue" in doc:
        section = (doc.get("jobqueue") or {}).get(kind)
        if not isinstance(section, dict):
            raise InputError(f"{p}: no 'jobqueue: {kind}:' section")
    else:
        section = doc
    return dask.config.merge(base, section), p


def _import_jobqueue(kind: str):
    """Import dask_jobqueue, keeping this process's Ctrl-C handler: importing it replaces the
    SIGINT handler with `sys.exit()` (dask_jobqueue/runner.py), which would make an
    interrupted run exit 0 and skip the CLI's "interrupted" report."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(
            f"--cluster {kind} needs dask-jobqueue: pip install 'escape-sweep[{kind}]'"
        ) from None
    finally:
        if main and before is not None and signal.getsignal(signal.SIGINT) is not before:
            signal.signal(signal.SIGINT, before)
    return dask_jobqueue


def jobqueue_cluster(kind: str, opts: ClusterOptions, *, start_jobs: bool = True):
    """A dask-jobqueue cluster of `kind` ("slurm"/"pbs") from `jobqueue_settings`.

    The scheduler runs in this process (on the login node) and listens on the configured
    `interface` so compute nodes reach it; its dashboard defaults to 127.0.0.1:8787
    (tunnel it with ssh -L). With `start_jobs`, keeps `opts.jobs` jobs alive: workers that
    retire before walltime (--lifetime) are replaced by fresh jobs (adaptive min = max).
    """
    dask_jobqueue = _import_jobqueue(kind)

    settings, source = jobqueue_settings(kind, opts.jobqueue_config)
    sched = dict(settings.get("scheduler-options") or {})
    sched.setdefault("dashboard_address", DEFAULT_DASHBOARD)
    settings["scheduler-options"] = sched
    if settings.get("processes") is None:
        settings["processes"] = 1  # one worker per job, `cores` threads (the kernel releases the GIL)
    elif settings["processes"] > 1:
        # SpecCluster matches lost workers to jobs by name; a multi-process job's workers are
        # named <job>-0, <job>-1, so a job that ends is never replaced (dask-jobqueue#611).
        print(f"escape-sweep: warning: jobqueue.{kind}.processes = {settings['processes']}: jobs that "
              "reach walltime will not be replaced; use processes: 1", file=sys.stderr)
    cls = getattr(dask_jobqueue, _JOBQUEUE_CLASSES[kind])
    # dask-jobqueue reads dask config lazily (job_script(), scale()), so pass the settings
    # as keyword arguments rather than through a temporary dask.config.set
    kwargs = {_JOBQUEUE_KWARG.get(k, k.replace("-", "_")): v for k, v in settings.items() if v is not None}
    try:
        cluster = cls(security=opts.security, **kwargs)
    except (TypeError, ValueError) as e:
        where = f" (from {source})" if source else ""
        where = where or (f" (dask config only: no {JOBQUEUE_ENV} and no {_repo_default(kind)} "
                          f"in {os.getcwd()})")
        raise InputError(f"jobqueue.{kind} settings{where}: {' '.join(str(e).split())}") from None
    if start_jobs:
        jobs = opts.jobs or 1
        try:
            # submit the first jobs now, so that a failing sbatch/qsub (bad account, queue,
            # memory) is an error here rather than an endless retry in the background
            # (worker_spec + _correct_state rather than scale(), whose background call would
            # swallow the submission error)
            while len(cluster.worker_spec) < jobs:
                cluster.worker_spec.update(cluster.new_worker_spec())
            cluster.sync(cluster._correct_state)
            # then keep `jobs` jobs alive: a job whose worker retired (--lifetime) is replaced
            cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
        except Exception as e:
            _close_after_failed_submit(cluster)
            msg = " ".join(str(e).split())
            raise DeployError(f"--cluster {kind}: submitting worker jobs failed: {msg}") from e
        except BaseException:
            cluster.close()
            raise
    return cluster


def _close_after_failed_submit(cluster) -> None:
    """Close a jobqueue cluster some of whose jobs never started (SpecCluster.close asserts
    every job started): forget those, cancel the others."""
    for name, job in list(cluster.workers.items()):
        if getattr(getattr(job, "status", None), "name", "") != "running":
            cluster.workers.pop(name, None)
            cluster.worker_spec.pop(name, None)
    try:
        cluster.close()
    except Exception:
        pass


def slurm_cluster(opts: ClusterOptions):
    """SLURM jobs via dask-jobqueue (cluster/slurm/jobqueue.yaml)."""
    return jobqueue_cluster("slurm", opts)


def pbs_cluster(opts: ClusterOptions):
    """PBS/Torque jobs via dask-jobqueue (cluster/pbs/jobqueue.yaml)."""
    return jobqueue_cluster("pbs", opts)


def dashboard_link(client) -> str | None:
    """The dashboard URL where it really listens. `Client.dashboard_link` puts the dashboard's
    port on the scheduler's host, which for dask-jobqueue is the cluster-facing interface even
    though the dashboard binds 127.0.0.1 (`scheduler-options: dashboard_address`); when the
    scheduler runs in this process, take the host and port its HTTP server is bound to."""
    from urllib.parse import urlsplit, urlunsplit

    link = client.dashboard_link
    server = getattr(getattr(getattr(client, "cluster", None), "scheduler", None), "http_server", None)
    host, port = getattr(server, "address", None), getattr(server, "port", None)
    if not link or not host or not port or host in ("0.0.0.0", "::"):  # all interfaces: any host will do
        return link
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(urlsplit(link)._replace(netloc=f"{host}:{port}"))


def job_counts(client) -> tuple[int, int, int] | None:
    """(requested, running, pending) batch jobs of a dask-jobqueue cluster, None for other
    clusters. Requested: the jobs the cluster keeps alive (--jobs); running: jobs whose worker
    is connected to the scheduler; pending: requested but no worker connected (queued in the
    batch system, starting, or just ended and not yet replaced)."""
    cluster = getattr(client, "cluster", None)
    if "dask_jobqueue" not in sys.modules or cluster is None:
        return None
    import dask_jobqueue

    if not isinstance(cluster, dask_jobqueue.core.JobQueueCluster):
        return None
    names = list(cluster.worker_spec)  # list() and .values() copy at once: the event loop thread updates both
    joined = {w.get("name") for w in list(((cluster.scheduler_info or {}).get("workers") or {}).values())}
    requested, running = len(names), len([name for name in names if name in joined])
    return requested, running, requested - running


# --------------------------------------------------------------------------- registry


CLUSTERS = {"local": local_cluster, "slurm": slurm_cluster, "pbs": pbs_cluster, "local-cuda": local_cuda_cluster}


def cluster_names() -> list[str]:
    """Names accepted by `--cluster`, in registry order ("local" first)."""
    return list(CLUSTERS)


@contextlib.contextmanager
def open_client(opts: ClusterOptions):
    """Yield a connected `distributed.Client`; clusters created here are closed on exit (Ctrl-C too).

    Raises InputError for an unknown cluster name or a tls:// scheduler without TLS
    material, ConnectError when the scheduler cannot be reached (wrong address, or a
    plain client against a TLS scheduler, or a certificate the scheduler rejects).
    """
    from distributed import Client

    if opts.scheduler:
        if opts.scheduler.startswith("tls://") and not uses_tls(opts.security):
            raise InputError(
                f"--scheduler {opts.scheduler}: a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key"
            )
        try:
            client = Client(opts.scheduler, security=opts.security, timeout=opts.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            hint = "" if uses_tls(opts.security) else " (if the scheduler uses TLS, pass tls://... and --tls-*)"
            raise ConnectError(
                f"cannot connect to scheduler {opts.scheduler}: {type(e).__name__}: {e}{hint}"
            ) from e
        try:
            yield client
        finally:
            client.close()
        return
    try:
        factory = CLUSTERS[opts.cluster]
    except KeyError:
        raise InputError(
            f"--cluster {opts.cluster}: unknown (choose from {', '.join(cluster_names())})"
        ) from None
    with factory(opts) as cluster:
        with Client(cluster, security=opts.security) as client:
            yield client
