"""Fixtures (helpers live in helpers.py)."""

import pytest

from helpers import dask_on_loopback


@pytest.fixture
def dask_processes(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1; yields (address, procs)."""
    with dask_on_loopback(tmp_path) as got:
        yield got


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real one-node SLURM cluster (munged, slurmctld, slurmd) on 127.0.0.1 for the session, with
    SLURM_CONF pointing at it; skips with the reason when the binaries are missing or not root.
    A cluster that is installed but fails to come up is an error, not a skip."""
    from slurm_cluster import SlurmCluster, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster, pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster


@pytest.fixture
def slurm_queue(slurm):
    """The session's SLURM cluster with an empty queue; every job left when the test ends is cancelled
    (and the test then fails: a test must not leave jobs behind)."""
    assert slurm.wait_no_jobs(60) == {}, "jobs left from an earlier test"
    yield slurm
    left = slurm.wait_no_jobs(30)
    slurm.cancel_all()
    assert not left, f"the test left SLURM jobs behind: {left}"


@pytest.fixture(scope="module")
def cluster2():
    """A LocalCluster with two single-thread worker processes on 127.0.0.1 (its scheduler address)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def cluster1():
    """A LocalCluster with one worker process on 127.0.0.1 (its scheduler address)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as c:
        yield c.scheduler_address
