"""The one task function the runner calls, plus `simulate` and the per-cell stream keys.

This is the seam between orchestration and physics: the runner hands `run_task` a `Task`
(cells and walker range) and gets back small additive counts; it knows nothing else.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..model import backends
from ..model.axes import samples, solves
from ..model.kernels import DIVERGED, run_cells, summarize_into  # noqa: F401  (DIVERGED re-exported)
from ..model.simulate import cell_key, grid_keys


# The additive counts a task returns per cell: summing them over walker blocks gives the cell's
# counts (n_walkers, n_diverged per cell; n_escaped, exposure per budget; hist per bin).
COUNTS = ("n_walkers", "n_diverged", "n_escaped", "exposure", "hist")


def walker_steps(esc: np.ndarray, steps: int) -> int:
    """Walker-steps actually simulated: sum of min(escape step, budget) (censored count the budget)."""
    esc = np.asarray(esc)
    return int(np.minimum(np.where(esc > 0, esc, steps), steps).sum())


@dataclass(frozen=True)
class Cell:
    """One (T, batch_size, depth, width) point with its index in the task's chunk."""

    index: tuple[int, int, int, int]
    T: float
    batch_size: int
    depth: float
    width: float
    w_start: float
    w_barrier: float


@dataclass(frozen=True)
class Task:
    """A chunk (or one walker block of a one-cell chunk): cells, walker range, budgets, seed."""

    chunk: tuple[int, int, int, int]
    shape: tuple[int, int, int, int]
    cells: tuple[Cell, ...]
    walker_start: int
    walker_count: int
    budgets: tuple[int, ...]
    edges: tuple[int, ...]
    seed: int
    block: int = 0
    n_blocks: int = 1
    method: str = "montecarlo"  # one of axes.METHODS
    backend: str = "cpu"  # a name from model.backends (or "auto": cuda where the worker has a GPU); never changes the numbers
    # the chunk's cells as axis values instead of Cell objects (cells == ()): (T, batch_size, depth,
    # width, w_start, w_barrier), the last two over (depth, width) in C order. A chunk of 1e5 cells
    # pickles as a few arrays, and the worker makes the cells itself.
    grid: tuple | None = None


def grid_of(T, batch_size, depth, width, pits) -> tuple:
    """Task.grid for the cells T x batch_size x depth x width; pits maps (depth, width) -> Pit."""
    ps = [pits[(d, w)] for d in depth for w in width]
    return (np.asarray(T, np.float64), np.asarray(batch_size, np.int64), np.asarray(depth, np.float64),
            np.asarray(width, np.float64), np.array([p.w_start for p in ps]), np.array([p.w_barrier for p in ps]))


def cell_arrays(task: Task) -> dict:
    """The task's cells as arrays (C order over the chunk): T, batch_size, depth, width, w_start,
    w_barrier, key (the cell's stream, simulate.cell_key) and flat (its index in the chunk, raveled)."""
    if task.grid is not None:
        T, B, D, W, ws, wb = task.grid
        nT, nB, nD, nW = len(T), len(B), len(D), len(W)
        iT, iB, iD, iW = (i.ravel() for i in np.indices((nT, nB, nD, nW)))
        pit = iD * nW + iW
        return dict(T=T[iT], batch_size=B[iB], depth=D[iD], width=W[iW], w_start=ws[pit], w_barrier=wb[pit],
                    key=grid_keys(task.seed, T, B, D, W), flat=np.ravel_multi_index((iT, iB, iD, iW), task.shape))
    cs = task.cells
    return dict(T=np.array([c.T for c in cs], np.float64), batch_size=np.array([c.batch_size for c in cs], np.int64),
                depth=np.array([c.depth for c in cs], np.float64), width=np.array([c.width for c in cs], np.float64),
                w_start=np.array([c.w_start for c in cs], np.float64),
                w_barrier=np.array([c.w_barrier for c in cs], np.float64),
                key=np.array([cell_key(task.seed, c.T, c.batch_size, c.depth, c.width) for c in cs], np.uint64),
                flat=np.array([np.ravel_multi_index(c.index, task.shape) for c in cs], np.int64).reshape(-1))



def summarize(esc: np.ndarray, budgets, edges) -> dict:
    """Additive statistics of one cell's walkers at each budget (sums over walker blocks add up).

    n_escaped[s] = #(1 <= esc <= s); exposure[s] = sum min(esc, s) over non-diverged walkers;
    hist[i] = #(edges[i] <= esc < edges[i+1]).
    """
    budgets = np.asarray(budgets, np.int64)
    edges = np.asarray(edges, np.int64)
    esc = np.ascontiguousarray(esc, np.int64)
    nb, nh = budgets.size, max(edges.size - 1, 0)
    n_div, n_esc, exposure, hist = (np.zeros(1, np.int64), np.zeros((1, nb), np.int64),
                                    np.zeros((1, nb), np.int64), np.zeros((1, nh), np.int64))
    summarize_into(esc, budgets, edges, 0, n_div, n_esc, exposure, hist)
    return dict(n_walkers=esc.size, n_diverged=int(n_div[0]), n_escaped=n_esc[0], exposure=exposure[0], hist=hist[0])


def run_task(task: Task) -> dict:
    """Simulate a task's cells and return their additive statistics as arrays over the chunk.

    Keys: chunk, block, n_walkers/n_diverged (shape = chunk shape), n_escaped/exposure
    (chunk shape + budgets), hist (chunk shape + bins), walker_steps (int), kernel_seconds.
    With method "markov" or "both", block 0 also carries the exact solver's mfpt and
    mfpt_rel_error, ln_mfpt (chunk shape) and markov_p_escape (chunk shape + budgets).
    `backend` names the kernel backend that computed the walkers (provenance).
    """
    shape = task.shape
    nb, nh = len(task.budgets), len(task.edges) - 1
    out = dict(
        chunk=task.chunk, block=task.block,
        n_walkers=np.zeros(shape, np.int64), n_diverged=np.zeros(shape, np.int64),
        n_escaped=np.zeros(shape + (nb,), np.int64), exposure=np.zeros(shape + (nb,), np.int64),
        hist=np.zeros(shape + (nh,), np.int64), walker_steps=0, kernel_seconds=0.0,
        backend=backends.resolve(task.backend),
    )
    smax = max(task.budgets)
    if samples(task.method):
        t0 = time.perf_counter()
        _sample(task, out, smax)
        out["kernel_seconds"] += time.perf_counter() - t0
    if solves(task.method) and task.block == 0:
        from ..model.markov import markov_cell

        out["mfpt"] = np.zeros(shape)
        out["mfpt_rel_error"] = np.zeros(shape)
        out["ln_mfpt"] = np.zeros(shape)
        out["markov_p_escape"] = np.zeros(shape + (nb,))
        t0 = time.perf_counter()
        for c in task.cells:
            r = markov_cell(c.T, c.batch_size, c.depth, c.width, task.budgets, start=c.w_start)
            out["mfpt"][c.index] = r.mfpt
            out["mfpt_rel_error"][c.index] = r.mfpt_rel_error
            out["ln_mfpt"][c.index] = r.ln_mfpt
            out["markov_p_escape"][c.index] = r.p_escape
        out["kernel_seconds"] += time.perf_counter() - t0
    return out


def _sample(task: Task, out: dict, smax: int) -> None:
    """Monte Carlo counts of every cell of the task into `out` (flat over the chunk). The cpu
    backend runs all cells in one nogil numba call (kernels.run_cells: no Python per cell); other
    backends call their kernel per cell and summarize in numba."""
    a = cell_arrays(task)
    n = a["T"].size
    if n == 0:
        return
    budgets = np.asarray(task.budgets, np.int64)
    edges = np.asarray(task.edges, np.int64)
    nb, nh = budgets.size, max(edges.size - 1, 0)
    if out["backend"] == "cpu":
        n_div, n_esc, exposure, hist, ws = run_cells(a["T"], a["batch_size"], a["depth"], a["width"], a["w_start"],
                                                     a["w_barrier"], a["key"], task.walker_start, task.walker_count,
                                                     budgets, edges)
    else:
        escape_steps = backends.get_kernel(out["backend"])
        n_div, n_esc, exposure, hist = (np.zeros(n, np.int64), np.zeros((n, nb), np.int64),
                                        np.zeros((n, nb), np.int64), np.zeros((n, nh), np.int64))
        ws = 0
        for c in range(n):
            esc = escape_steps(float(a["T"][c]), smax, int(a["batch_size"][c]), float(a["depth"][c]),
                               float(a["width"][c]), float(a["w_start"][c]), float(a["w_barrier"][c]), a["key"][c],
                               task.walker_start, task.walker_count)
            ws += summarize_into(np.ascontiguousarray(esc, np.int64), budgets, edges, c, n_div, n_esc, exposure, hist)
    flat, ncell = a["flat"], math.prod(task.shape)
    out["n_walkers"].reshape(ncell)[flat] = task.walker_count
    out["n_diverged"].reshape(ncell)[flat] = n_div
    out["n_escaped"].reshape(ncell, nb)[flat] = n_esc
    out["exposure"].reshape(ncell, nb)[flat] = exposure
    out["hist"].reshape(ncell, nh)[flat] = hist
    out["walker_steps"] += int(ws)


def task_done(result) -> None:
    """A chunk task's marker: runs once the task is back and holds nothing (the runner keeps it so
    the dashboard counts the sweep's finished chunks against all of them)."""
    return None
