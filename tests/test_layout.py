"""The package's architecture holds: the arrow rule, pure kernels, one gradient, light imports,
the store and planner seams, and cubes bit-identical to the ones made before the layout change."""

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from pipeline.model import kernels, landscape, reference
from pipeline.sweep import partition
from pipeline.sweep.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent

PINNED_SPEC = """name = "pin"
seed = 4242
walkers = 700
method = "montecarlo"
[axes]
T = [0.012, 0.016, 0.02, 0.03]
steps = [10, 100, 1000]
batch_size = [1, 3, 100]
depth = [1.0, 1.5]
width = [0.1]
"""
# sha256[:16] of (dtype, shape, bytes) of every variable of PINNED_SPEC's cube, computed on main
# before the layout change (commit 3e5be20): the move must not change a single bit.
PINNED = {
    "T": "abc8dc1512249bd2", "batch_size": "919c70dbb969ecd9", "depth": "0eca01bded252878",
    "escape_hist": "d7cf1a366e19c36b", "escape_rate": "dcf60e1880b24ee2", "escape_step_bin": "ecaef92ae728db6d",
    "escape_step_hi": "1472a1754e29751c", "escape_step_lo": "0530247e6e4741b5", "exposure": "29c1f4c89c5b7a87",
    "log10_escape_time": "f9824cedcc7c3bdc", "log10_escape_time_high": "90df06fc3e4dd276",
    "log10_escape_time_low": "736ab863a9bd8e5a", "median_escape_time": "4bd14958706b73b8",
    "n_diverged": "b53b0883ec2bc2c4", "n_escaped": "68e294bc3f978257", "n_walkers": "110be959cf0c47d9",
    "p_escape": "0c5eb225030bad93", "p_escape_high": "bb653cf469e16f1d", "p_escape_low": "1a50756378c49dd4",
    "steps": "4066feea41ce0f2d", "w_barrier": "cee49ca7df006728", "w_start": "25b37b9f58aa4508",
    "width": "4a77429d9a3350cd",
}


def _hashes(ds) -> dict:
    out = {}
    for v in sorted(ds.variables):
        a = np.ascontiguousarray(ds[v].values)
        out[v] = hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:16]
    return out


def test_import_contracts_hold():
    """lint-imports checks the layers and the pure-kernel contract of pyproject.toml."""
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_cli_help_and_worker_imports_stay_light():
    """`escape-sweep --help` imports no numpy; a worker unpickling a task imports no xarray,
    pandas, matplotlib or zarr (numba itself imports scipy)."""
    code = ("import sys, pipeline.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'xarray', 'scipy', 'dask')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    spec = parse_spec(PINNED_SPEC)
    chunks = partition.chunk_shape(spec)
    task = partition.tasks_for_chunk(spec, chunks, (0, 0, 0, 0), spec.pits())[0]
    import pickle

    blob = pickle.dumps(task)
    code = ("import pickle, sys\n"
            f"t = pickle.loads({blob!r})\n"
            "from pipeline.sweep.task import run_task\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'xarray', 'pandas', 'matplotlib', 'zarr', 'bokeh'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


@njit
def _kernel_gradient(x, k, B, depth, width):
    return kernels.gradient(x, k, 2.0 * depth / (width * B), 1.0 / width)


@settings(max_examples=200, deadline=None)
@given(x=st.floats(0.5, 2.5), k=st.integers(0, 100), B=st.integers(1, 100), depth=st.floats(0.2, 5.0),
       width=st.floats(0.03, 0.3))
def test_every_gradient_is_the_landscapes(x, k, B, depth, width):
    """The kernel's and the references' inline gradients equal landscape.g0 + (k/B) gpit."""
    k = min(k, B)
    want = landscape.g0(x) + (k / B) * landscape.gpit(x, depth, width)
    scale = abs(landscape.g0(x)) + (k / B) * abs(landscape.gpit(x, depth, width)) + 1e-300
    for got in (_kernel_gradient(x, float(k), B, depth, width), reference.gradient(x, k / B, depth, width)):
        assert abs(got - want) <= 1e-13 * scale + 1e-280  # the kernel's exp clamps at exp(-700) ~ 1e-304


def test_cube_is_bit_identical_to_before_the_layout_change(tmp_path):
    from pipeline import run_sweep
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep.runner import RunOptions
    from pipeline.sweep.store import open_cube

    spec = tmp_path / "pin.toml"
    spec.write_text(PINNED_SPEC)
    run_sweep(str(spec), RunOptions(cluster=ClusterOptions(n_workers=2), progress=False, task_seconds=0.001),
              output=str(tmp_path / "pin.zarr"))
    got = _hashes(open_cube(tmp_path / "pin.zarr"))
    assert got == PINNED


def test_in_memory_store_gives_the_same_cube(tmp_path):
    """The store seam: a zarr MemoryStore holds the same cube as a directory."""
    import zarr

    from helpers import assert_cubes_equal
    from pipeline import run_sweep
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep.runner import RunOptions
    from pipeline.sweep.store import Store, open_cube

    spec = parse_spec(PINNED_SPEC.replace("walkers = 700", "walkers = 130").replace("[1, 3, 100]", "[2]"))
    opts = RunOptions(cluster=ClusterOptions(n_workers=1), progress=False, task_seconds=0.001)
    mem = zarr.storage.MemoryStore()
    s = run_sweep(spec, opts, output=mem)
    assert s.complete and Store(mem).chunk_count()[0] == s.chunks_total
    run_sweep(spec, opts, output=str(tmp_path / "disk.zarr"))
    assert_cubes_equal(open_cube(mem), open_cube(tmp_path / "disk.zarr"))


def _spec(nT, nB, nD, walkers, steps, method="montecarlo"):
    T = [round(0.01 + 0.001 * i, 6) for i in range(nT)]
    B = list(range(1, nB + 1))
    D = [1.0 + 0.25 * i for i in range(nD)]
    return parse_spec(f'walkers = {walkers}\nmethod = "{method}"\n[axes]\nT = {T}\nsteps = {steps}\n'
                      f'batch_size = {B}\ndepth = {D}\nwidth = [0.1]\n')


@settings(max_examples=40, deadline=None)
@given(nT=st.integers(1, 9), nB=st.integers(1, 4), nD=st.integers(1, 3), walkers=st.integers(1, 5000),
       steps=st.sampled_from([[10], [100, 1000], [100000]]), task_seconds=st.sampled_from([1e-4, 0.01, 2.0]))
def test_chunks_tile_the_grid_exactly(nT, nB, nD, walkers, steps, task_seconds):
    """Every cell is in exactly one chunk; walker blocks are lane multiples (but the last) summing to walkers."""
    spec = _spec(nT, nB, nD, walkers, steps)
    chunks = partition.chunk_shape(spec, task_seconds)
    grid = partition.chunk_grid(spec, chunks)
    seen = np.zeros(spec.cell_shape, int)
    for idx in np.ndindex(*grid):
        sl = partition.chunk_slices(spec, chunks, idx)
        seen[sl] += 1
    assert (seen == 1).all()
    blocks = partition.walker_blocks(spec, chunks, task_seconds)
    assert sum(c for _, c in blocks) == walkers
    assert [s for s, _ in blocks] == [sum(c for _, c in blocks[:i]) for i in range(len(blocks))]
    assert all(c % kernels.LANES == 0 for _, c in blocks[:-1])
    if math.prod(chunks) > 1:
        assert len(blocks) == 1


def test_static_planner_sums_walker_blocks_into_chunks():
    """ask/tell: the planner hands out every block of every pending chunk once and returns a chunk
    only when all its blocks are in, with the COUNTS summed."""
    from pipeline.sweep.planner import StaticPlanner
    from pipeline.sweep.task import run_task

    spec = _spec(1, 1, 1, 1000, [200])
    chunks = partition.chunk_shape(spec, 1e-4)
    planner = StaticPlanner(spec, chunks, [(0, 0, 0, 0)], task_seconds=1e-4)
    tasks = planner.ask(100)
    assert len(tasks) > 1 and planner.ask(5) == []
    results = [run_task(t) for t in tasks]
    done = [planner.tell(r) for r in results]
    assert all(d is None for d in done[:-1]) and done[-1] is not None
    whole = run_task(partition.tasks_for_chunk(spec, chunks, (0, 0, 0, 0), spec.pits(), task_seconds=1e9)[0])
    for k in ("n_walkers", "n_escaped", "exposure", "hist"):
        np.testing.assert_array_equal(done[-1].counts[k], whole[k])
    assert done[-1].walkers == 1000


@pytest.mark.parametrize("method", ["markov"])
def test_markov_chunks_are_one_block(method):
    spec = _spec(3, 1, 1, 5000, [100000], method=method)
    chunks = partition.chunk_shape(spec)
    assert partition.walker_blocks(spec, chunks) == [(0, 5000)]
