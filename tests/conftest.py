"""Fixtures (helpers live in helpers.py)."""

import pytest

from helpers import dask_on_loopback


@pytest.fixture
def dask_processes(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1; yields (address, procs)."""
    with dask_on_loopback(tmp_path) as got:
        yield got
