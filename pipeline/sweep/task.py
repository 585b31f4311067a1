"""The one task function the runner calls, plus `simulate` and the per-cell stream keys.

This is the seam between orchestration and physics: the runner hands `run_task` a `Task`
(cells and walker range) and gets back small additive counts; it knows nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..model import backends
from ..model.axes import samples, solves
from ..model.kernels import DIVERGED
from ..model.simulate import cell_key


# The additive counts a task returns per cell: summing them over walker blocks gives the cell's
# counts (n_walkers, n_diverged per cell; n_escaped, exposure per budget; hist per bin).
COUNTS = ("n_walkers", "n_diverged", "n_escaped", "exposure", "hist")


def walker_steps(esc: np.ndarray, steps: int) -> int:
    """Walker-steps actually simulated: sum of min(escape step, budget) (censored count the budget)."""
    esc = np.asarray(esc)
    return int(np.where(esc > 0, np.minimum(esc, steps), steps).sum())


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



def summarize(esc: np.ndarray, budgets, edges) -> dict:
    """Additive statistics of one cell's walkers at each budget (sums over walker blocks add up).

    n_escaped[s] = #(1 <= esc <= s); exposure[s] = sum min(esc, s) over non-diverged walkers;
    hist[i] = #(edges[i] <= esc < edges[i+1]).
    """
    budgets = np.asarray(budgets, np.int64)
    ok = esc != DIVERGED
    escaped = np.sort(esc[esc > 0])
    n_ok = int(ok.sum())
    n_esc = np.searchsorted(escaped, budgets, side="right")
    csum = np.concatenate([[0], np.cumsum(escaped)])
    exposure = csum[n_esc] + (n_ok - n_esc) * budgets
    hist = np.histogram(escaped, bins=np.asarray(edges))[0] if len(edges) > 1 else np.zeros(0, np.int64)
    return dict(n_walkers=esc.size, n_diverged=esc.size - n_ok, n_escaped=n_esc.astype(np.int64),
                exposure=exposure.astype(np.int64), hist=hist.astype(np.int64))


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
        escape_steps = backends.get_kernel(out["backend"])
        for c in task.cells:
            key = cell_key(task.seed, c.T, c.batch_size, c.depth, c.width)
            t0 = time.perf_counter()
            esc = escape_steps(c.T, smax, c.batch_size, c.depth, c.width, c.w_start, c.w_barrier,
                               key, task.walker_start, task.walker_count)
            out["kernel_seconds"] += time.perf_counter() - t0
            s = summarize(esc, task.budgets, task.edges)
            for name in COUNTS:
                out[name][c.index] = s[name]
            out["walker_steps"] += walker_steps(esc, smax)
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


def task_done(result) -> None:
    """A chunk task's marker: runs once the task is back and holds nothing (the runner keeps it so
    the dashboard counts the sweep's finished chunks against all of them)."""
    return None
