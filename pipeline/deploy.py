"""Where a sweep's Dask workers come from: the embedded LocalCluster, an existing scheduler,
or a deployment from the registry (`--cluster NAME`). Only this module creates clusters.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterOptions:
    """How to get workers: scheduler address, or a registered cluster kind, and its settings."""

    scheduler: str | None = None
    cluster: str = "local"
    n_workers: int | None = None
    jobs: int | None = None
    security: object | None = None  # distributed.Security or None


def local_cluster(opts: ClusterOptions):
    """One worker process per core, one thread each; scheduler and dashboard on 127.0.0.1 only."""
    from distributed import LocalCluster

    n = opts.n_workers or os.cpu_count() or 1
    return LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:8787", scheduler_port=0, security=opts.security,
    )


CLUSTERS = {"local": local_cluster}


@contextlib.contextmanager
def open_client(opts: ClusterOptions):
    """Yield a connected `distributed.Client`; clusters created here are closed on exit (Ctrl-C too)."""
    from distributed import Client

    if opts.scheduler:
        client = Client(opts.scheduler, security=opts.security, timeout="20s")
        try:
            yield client
        finally:
            client.close()
        return
    factory = CLUSTERS[opts.cluster]
    with factory(opts) as cluster:
        with Client(cluster, security=opts.security) as client:
            yield client


def cluster_names() -> list[str]:
    """The `--cluster` choices: the registry's keys."""
    return sorted(CLUSTERS)


def make_security(tls_ca_file=None, tls_cert=None, tls_key=None):
    """distributed.Security for TLS when certificate files are given, else None (dask config applies)."""
    if not (tls_ca_file or tls_cert or tls_key):
        return None
    from pathlib import Path

    from distributed.security import Security

    from .cli import UsageError

    for flag, path in (("--tls-ca-file", tls_ca_file), ("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if not path:
            raise UsageError(f"{flag} is missing: TLS needs --tls-ca-file, --tls-cert and --tls-key together")
        if not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    return Security(tls_ca_file=tls_ca_file, tls_client_cert=tls_cert, tls_client_key=tls_key,
                    tls_scheduler_cert=tls_cert, tls_scheduler_key=tls_key,
                    tls_worker_cert=tls_cert, tls_worker_key=tls_key, require_encryption=True)
