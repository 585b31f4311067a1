"""Issue 16's fast paths give the same numbers as the plain ones: the kernel's last round cut at
the budget, the numba summary, per-task stream keys, cells made on the worker from axis values,
the cached pit; plus the sizing rules (chunks capped, threads or processes for the local cluster)."""

import hashlib
import itertools
import pickle

import numpy as np
import pytest

from pipeline.deploy.clusters import ClusterOptions, local_processes
from pipeline.errors import InputError
from pipeline.model import kernels
from pipeline.model.landscape import find_pit
from pipeline.model.simulate import cell_key, grid_keys
from pipeline.sweep import partition
from pipeline.sweep.spec import parse_spec
from pipeline.sweep.task import Task, run_task, summarize

# 225 cells: budgets not multiples of 64, batch sizes over 64, counts over 64 lanes
CASES = list(itertools.product([0.006, 0.02, 0.08], [1, 3, 64, 65, 130], [1, 37, 100, 129, 1000], [1, 64, 150]))
# blake2b-128 of their escape steps from the kernel before the last round was cut to the budget
MAIN_KERNEL_DIGEST = "30d901ee6856711cbc5957e993732fc7"


def test_kernel_walkers_equal_the_kernel_before_the_budget_cut():
    h = hashlib.blake2b(digest_size=16)
    for i, (T, B, steps, count) in enumerate(CASES):
        d, w = [(1.0, 0.1), (0.5, 0.1), (2.0, 0.05)][i % 3]
        p = find_pit(d, w)
        h.update(kernels.escape_steps(T, steps, B, d, w, p.w_start, p.w_barrier, np.uint64(1000003 * i + 7),
                                      5 * i, count).tobytes())
    assert h.hexdigest() == MAIN_KERNEL_DIGEST


def test_diverging_walkers_keep_the_whole_round_rule():
    """T = 1e300 in a deep narrow pit overflows W: there rounds are never cut, and a walker not escaped
    is DIVERGED when W is not finite at the end of its last whole round, as before (and as on cuda)."""
    h = hashlib.blake2b(digest_size=16)
    diverged = 0
    for T, B, d, w, steps, first, count in [(1e300, 1, 20.0, 0.01, 1, 7, 64), (1e300, 3, 20.0, 0.01, 1, 0, 64),
                                            (1e300, 1, 20.0, 0.01, 5, 11, 64), (1e300, 1, 20.0, 0.01, 100, 0, 130)]:
        p = find_pit(d, w)
        e = kernels.escape_steps(T, steps, B, d, w, p.w_start, p.w_barrier, cell_key(3, T, B, d, w), first, count)
        diverged += int((e == kernels.DIVERGED).sum())
        h.update(e.tobytes())
    assert diverged > 0 and h.hexdigest() == "1674d5dfb0f2829cc5c32c29eefe1d6a"


@pytest.mark.parametrize("B, T", [(1, 0.02), (5, 0.03), (100, 0.05)])
def test_a_budget_reads_the_same_walkers_as_a_longer_one(B, T):
    """The walk does not depend on the budget: a budget's escape steps are a longer run's, censored."""
    p = find_pit(1.0, 0.1)
    long = kernels.escape_steps(T, 640, B, 1.0, 0.1, p.w_start, p.w_barrier, np.uint64(9), 3, 200)
    for steps in (1, 36, 63, 65, 100, 300):
        short = kernels.escape_steps(T, steps, B, 1.0, 0.1, p.w_start, p.w_barrier, np.uint64(9), 3, 200)
        want = np.where((long > 0) & (long <= steps), long, -1)
        np.testing.assert_array_equal(short, want)
    assert ((long > 36) & (long <= 100)).any() and ((long > 0) & (long <= 36)).any()  # budgets cut walkers


def _summarize_numpy(esc, budgets, edges):
    """The summary as it was computed with sort, cumsum and np.histogram."""
    budgets = np.asarray(budgets, np.int64)
    ok = esc != kernels.DIVERGED
    escaped = np.sort(esc[esc > 0])
    n_ok = int(ok.sum())
    n_esc = np.searchsorted(escaped, budgets, side="right")
    csum = np.concatenate([[0], np.cumsum(escaped)])
    exposure = csum[n_esc] + (n_ok - n_esc) * budgets
    hist = np.histogram(escaped, bins=np.asarray(edges))[0]
    return dict(n_walkers=esc.size, n_diverged=esc.size - n_ok, n_escaped=n_esc, exposure=exposure, hist=hist)


def test_numba_summary_equals_the_numpy_one():
    rng = np.random.default_rng(3)
    budgets = (7, 100, 1000)
    edges = partition.histogram_edges(1000, budgets)
    for n in (0, 1, 64, 1000):
        esc = rng.integers(1, 1001, n)
        esc[rng.random(n) < 0.3] = kernels.NOT_ESCAPED
        esc[rng.random(n) < 0.05] = kernels.DIVERGED
        a, b = summarize(esc, budgets, edges), _summarize_numpy(esc, budgets, edges)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_grid_keys_are_the_cell_keys():
    T, B, D, W = (0.005, 0.015, 1 / 3), (1, 64), (1.0, 0.5), (0.1, 0.05, 0.15)
    keys = grid_keys(42, T, B, D, W)
    want = [cell_key(42, *c) for c in itertools.product(T, B, D, W)]
    np.testing.assert_array_equal(keys, np.array(want, np.uint64))


SPEC = """
name = "g"
seed = 5
walkers = 70
[axes]
T = {{ start = 0.01, stop = 0.05, num = {nT} }}
steps = [37, 100]
batch_size = [1, 65]
depth = [1.0, 2.0]
width = [0.1, 0.05]
"""


def test_cells_made_on_the_worker_equal_cell_objects():
    spec = parse_spec(SPEC.format(nT=5), output="unused.zarr")
    chunks = (3, 2, 2, 1)
    for index in [(0, 0, 0, 0), (1, 0, 0, 1)]:
        grid_task = partition.tasks_for_chunk(spec, chunks, index, spec.pits())[0]
        assert grid_task.cells == () and grid_task.grid is not None
        sl = partition.chunk_slices(spec, chunks, index)
        cells = tuple(partition.chunk_cells(spec, sl, spec.pits()))
        cell_task = Task(**{**grid_task.__dict__, "cells": cells, "grid": None})
        a, b = run_task(grid_task), run_task(cell_task)
        for k in ("n_walkers", "n_diverged", "n_escaped", "exposure", "hist", "walker_steps"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a["n_escaped"][..., 1].sum() > 0


def test_huge_grids_make_more_chunks_not_bigger_ones():
    big = parse_spec(SPEC.format(nT=250_000).replace("walkers = 70", "walkers = 1"), output="u.zarr", yes=True)
    shape = partition.chunk_shape(big, task_seconds=1e9)
    cells = int(np.prod(shape))
    assert cells <= partition.max_chunk_cells(big)
    assert np.prod(partition.chunk_grid(big, shape)) >= big.n_cells / partition.max_chunk_cells(big)
    task = partition.tasks_for_chunk(big, shape, (0, 0, 0, 0), big.pits())[0]
    assert len(pickle.dumps(task)) < 64 * cells  # axis values, not one object per cell


def test_small_grids_give_every_local_thread_two_tasks():
    spec = parse_spec(SPEC.format(nT=40), output="unused.zarr")  # 320 cells
    shape = partition.chunk_shape(spec, task_seconds=1e9, threads=16)
    assert np.prod(partition.chunk_grid(spec, shape)) >= 32


def test_one_walker_cells_cost_a_full_lane_block():
    one = parse_spec(SPEC.format(nT=5).replace("walkers = 70", "walkers = 1"), output="u.zarr")
    assert partition.cell_cost(one) == 64 * 100 * partition.batch_cost(65)
    assert partition.batch_cost(1) == partition.batch_cost(64) == 1.0 < partition.batch_cost(65)


def test_pit_is_found_once():
    assert find_pit(1.0, 0.1) is find_pit(1, 0.1)
    with pytest.raises(ValueError, match="no pit"):
        find_pit(0.01, 1.0)


def test_local_cluster_kind(monkeypatch):
    monkeypatch.delenv("ESCAPE_SWEEP_LOCAL", raising=False)
    assert local_processes(ClusterOptions()) is True  # size unknown: processes, as before
    assert local_processes(ClusterOptions(work_seconds=1.0)) is False
    assert local_processes(ClusterOptions(work_seconds=1e4)) is True
    assert local_processes(ClusterOptions(work_seconds=1.0, processes=True)) is True
    monkeypatch.setenv("ESCAPE_SWEEP_LOCAL", "processes")
    assert local_processes(ClusterOptions(work_seconds=1.0)) is True
    monkeypatch.setenv("ESCAPE_SWEEP_LOCAL", "threads")
    assert local_processes(ClusterOptions(work_seconds=1e4)) is False
    monkeypatch.setenv("ESCAPE_SWEEP_LOCAL", "fibres")
    with pytest.raises(InputError, match="ESCAPE_SWEEP_LOCAL"):
        local_processes(ClusterOptions())


def test_bench_table_lists_every_contender_per_workload():
    import os

    from pipeline import bench

    assert bench._vm_hwm_mb(os.getpid()) > 10  # this interpreter's peak RSS, from /proc
    rows = [dict(workload="w", contender="escape-sweep run", wall_seconds=1.5, cpu_seconds=2.0, client_rss_mb=300.0,
                 worker_rss_mb=0.0),
            dict(workload="w", contender="joblib + pipeline.simulate", wall_seconds=2.5, cpu_seconds=4.0,
                 client_rss_mb=80.0, worker_rss_mb=180.0),
            dict(workload="w", contender="psweep + numpy", error="over 60 s (stopped)")]
    text = bench.format_contenders(dict(machine=dict(cores=2, load_average=(1.0, 1.0, 1.0)), rows=rows))
    line = text.splitlines()[-1]
    assert line.startswith("w ") and "1.5s 2cpu 300/-MB" in line and "2.5s 4cpu 80/180MB" in line
    assert "over 60 s" in line and line.rstrip().endswith("--")  # joblib + numpy was not run
