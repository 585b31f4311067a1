"""Helpers shared by the tests (imported as `from helpers import ...`; conftest holds only fixtures)."""

import math

import numpy as np


def prob_se(p1, n1, p2, n2):
    """Standard error of the difference of two independent binomial proportions (pooled p,
    floored at 1/n so that p = 0 or 1 on both sides still gives a non-zero tolerance)."""
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    p = min(max(p, 1.0 / (n1 + n2)), 1.0 - 1.0 / (n1 + n2))
    return math.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))


def escaped_within(esc, steps):
    esc = np.asarray(esc)
    return float(((esc > 0) & (esc <= steps)).mean())


import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


SPEC = """\
name = "{name}"
seed = {seed}
walkers = {walkers}
[axes]
T = {T}
steps = {steps}
batch_size = {batch_size}
depth = {depth}
width = {width}
[output]
path = "{path}"
"""


def write_spec(dirpath, name="t", seed=7, walkers=400, T="[0.012, 0.016, 0.02, 0.025]", steps="[100, 1000]",
               batch_size="[1, 2]", depth="[1.0]", width="[0.1]", path=None, method=None) -> Path:
    """Write a small spec into dirpath and return its path (store defaults to dirpath/<name>.zarr)."""
    dirpath = Path(dirpath)
    path = path or str(dirpath / f"{name}.zarr")
    f = dirpath / f"{name}.toml"
    f.write_text(SPEC.format(name=name, seed=seed, walkers=walkers, T=T, steps=steps, batch_size=batch_size,
                             depth=depth, width=width, path=path)
                 .replace("[axes]", f'method = "{method}"\n[axes]' if method else "[axes]"))
    return f


def assert_cubes_equal(a, b):
    """Every data variable and coordinate of two cubes equal (NaN == NaN); attrs (times) may differ."""
    import xarray as xr

    a = a if isinstance(a, xr.Dataset) else xr.open_zarr(str(a))
    b = b if isinstance(b, xr.Dataset) else xr.open_zarr(str(b))
    assert set(a.variables) == set(b.variables)
    for v in a.variables:
        x, y = a[v].values, b[v].values
        assert x.dtype == y.dtype, v
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), v


@contextlib.contextmanager
def dask_on_loopback(workdir, n_workers=2, scheduler_args=(), worker_args=(), security=None):
    """Real `dask scheduler` and `dask worker` processes on 127.0.0.1 (each in its own session,
    killed on exit); yields (address, processes). Extra CLI args e.g. for TLS."""
    bindir = Path(sys.executable).parent
    sched_file = Path(workdir) / "scheduler.json"
    procs = []
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    try:
        procs.append(subprocess.Popen(
            [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file), *scheduler_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True))
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        addr = json.loads(sched_file.read_text())["address"]
        for _ in range(n_workers):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", addr, "--nthreads", "1", "--host", "127.0.0.1",
                 "--no-dashboard", "--nworkers", "1", *worker_args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True))
        from distributed import Client

        with Client(addr, security=security, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=60)
        yield addr, procs
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def run_cli(argv):
    """Run one `escape-sweep` subcommand in-process the way `cli.main` does, but let InputError
    (and RunError) propagate so a test can match its one-line message; returns the exit code."""
    from pipeline.cli import build_parser

    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


def run_opts(address, **kw):
    """RunOptions for a sweep on the scheduler at `address`, without the progress line."""
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep.runner import RunOptions

    return RunOptions(cluster=ClusterOptions(scheduler=address), progress=False, **kw)


def kill_when_building(proc, parent, chunks=1, timeout=120):
    """SIGKILL the process group of `proc` once the cube a grow/refine builds beside its store (in
    `parent`) has `chunks` chunks done; returns that directory."""
    from pipeline.sweep.store import Store

    built = None
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            built = next((d for d in Path(parent).iterdir() if ".grow-" in d.name), None)
            try:
                if built is not None and Store(built).is_cube() and Store(built).chunk_count()[0] >= chunks:
                    break
            except Exception:  # being created
                pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return built
