"""The (T, batch_size, depth, width) cell grid -> chunk-aligned tasks of a few seconds each.

Task size: the bound of a cell's work is lanes x max(steps) walker-steps (every walker censored,
walkers rounded up to the kernel's 64 lanes; escaping walkers only make it cheaper), times the
step cost of its batch size, plus CELL_OVERHEAD seconds. A chunk holds as many cells as fit in
`task_seconds` at KERNEL_RATE walker-steps/s -- at most `max_chunk_cells` (its counts stay under
~16 MB, so huge grids make more chunks, not bigger ones) -- filling T first, then batch_size,
depth, width; small grids are cut into at least two chunks per worker thread.
A cell bigger than that is a chunk of its own, split into walker blocks whose additive counts
the client sums. The steps axis is never split: every budget is read off one simulation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ..model.axes import samples, solves
from ..model.kernels import LANES
from .spec import Spec
from .task import Cell, Task, grid_of

KERNEL_RATE = 4e8  # walker-steps/s of one core (escape-sweep bench: ~5e8 at batch <= 64)
DEFAULT_TASK_SECONDS = 2.0
MIN_CHUNKS = 8  # even a small grid keeps a few workers busy


MAX_BLOCK_WALKERS = 4_000_000  # the kernel returns an int64 per walker: <= 32 MB per task
GPU_KERNEL_RATE = 2e11  # walker-steps/s of one GPU worker (cuda backend, H100-class, float64)


def kernel_rate(backend: str = "cpu") -> float:
    """Walker-steps/s one task's worker computes with `backend` ("auto" may land on a CPU: CPU rate)."""
    return GPU_KERNEL_RATE if backend == "cuda" else KERNEL_RATE


def solver_seconds(spec: Spec) -> np.ndarray:
    """Estimated one-core seconds of the exact solver per cell, shape spec.cell_shape
    (markov.solve_seconds, calibrated by timing); zeros where the method does not solve."""
    from ..model.markov import solve_seconds

    if not solves(spec.method):
        return np.zeros(spec.cell_shape)
    g = np.meshgrid(spec.T, spec.batch_size, spec.depth, spec.width, indexing="ij")
    return np.broadcast_to(solve_seconds(*g), spec.cell_shape)


def markov_cell_cost(spec: Spec) -> float:
    """The exact solve of the costliest cell in walker-step units (solver seconds x KERNEL_RATE)."""
    return float(solver_seconds(spec).max(initial=0.0)) * KERNEL_RATE


CELL_OVERHEAD = 2e-6  # s per cell beyond its kernel work: stream key, summary, result (measured ~1-2 us)
MAX_RESULT_BYTES = 16e6  # a task's returned counts stay under ~16 MB: caps the cells of a chunk


def batch_cost(batch_size: int) -> float:
    """Cost of one step at batch size B relative to B <= 64 (measured: B = 65 and 128 ~2x, 256 ~2.2x,
    1024 ~4.2x: above 64 the kernel leaves its vector loop and draws ceil(B / 64) words per step)."""
    words = Spec.batch_words(batch_size)
    return 1.0 if words == 1 else 1.75 + 0.15 * words


def cell_cost(spec: Spec) -> float:
    """Work of the costliest cell in walker-step units: walkers rounded up to the kernel's LANES
    (a one-walker cell steps 64 lanes) x max(steps) (the last round stops at the budget) x the step
    cost of the largest batch, plus the exact solve."""
    lanes = -(-spec.walkers // LANES) * LANES
    mc = lanes * spec.max_steps * batch_cost(max(spec.batch_size)) if samples(spec.method) else 0
    return mc + (markov_cell_cost(spec) if solves(spec.method) else 0)


def cell_seconds(spec: Spec, rate: float = KERNEL_RATE) -> float:
    """Estimated seconds of the costliest cell on one worker thread: kernel work plus CELL_OVERHEAD."""
    return cell_cost(spec) / rate + CELL_OVERHEAD


def max_chunk_cells(spec: Spec) -> int:
    """Most cells in one chunk: its counts (int64 per cell: n_walkers, n_diverged, n_escaped and
    exposure per budget, hist per bin) stay under MAX_RESULT_BYTES, so chunks grow in number, not
    in size, with the grid and every task's memory is bounded."""
    per_cell = 8 * (2 + 2 * len(spec.steps) + len(spec_edges(spec)))
    return max(1, int(MAX_RESULT_BYTES // per_cell))


def chunk_shape(spec: Spec, task_seconds: float = DEFAULT_TASK_SECONDS,
                min_chunks: int = MIN_CHUNKS, rate: float = KERNEL_RATE,
                threads: int | None = None) -> tuple[int, int, int, int]:
    """Cells per chunk along (T, batch_size, depth, width): about `task_seconds` of work (kernel
    plus per-cell overhead), at most `max_chunk_cells`, but small grids are still cut into about
    max(`min_chunks`, 2 x `threads`) chunks so every worker thread gets some."""
    budget = max(1, int(task_seconds / cell_seconds(spec, rate)))
    budget = min(budget, max_chunk_cells(spec))
    min_chunks = max(min_chunks, 2 * (threads or 0))
    budget = min(budget, max(1, math.ceil(spec.n_cells / min_chunks)))
    if samples(spec.method) and spec.walkers > MAX_BLOCK_WALKERS:
        budget = 1  # a cell too big for one task's memory: a chunk of its own, split into walker blocks
    shape = []
    for n in spec.cell_shape:
        take = max(1, min(n, budget))
        shape.append(take)
        budget = max(1, budget // take)
    return tuple(shape)


class WalkerBlocks(Sequence):
    """The (start, count) walker ranges of a cell, computed on demand (a cell may have very many)."""

    def __init__(self, walkers: int, size: int):
        self.walkers, self.size = int(walkers), int(size)

    def __len__(self) -> int:
        return -(-self.walkers // self.size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        start = i * self.size
        return (start, min(self.size, self.walkers - start))

    def __eq__(self, other):
        if not isinstance(other, (Sequence, WalkerBlocks)) or len(self) != len(other):
            return False
        return all(tuple(a) == tuple(b) for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"WalkerBlocks(walkers={self.walkers}, size={self.size}, n={len(self)})"


def walker_blocks(spec: Spec, chunk: tuple[int, int, int, int], task_seconds: float = DEFAULT_TASK_SECONDS,
                  rate: float = KERNEL_RATE) -> WalkerBlocks:
    """(start, count) walker ranges of one cell: one range unless a cell alone is over the task size
    or over MAX_BLOCK_WALKERS walkers (the memory of a task).

    Blocks are multiples of the kernel's lane count so no lanes are padded except in the last."""
    if math.prod(chunk) > 1 or not samples(spec.method):
        return WalkerBlocks(spec.walkers, spec.walkers)
    per_walker = spec.max_steps * batch_cost(max(spec.batch_size))
    n = max(1, math.ceil(spec.walkers * per_walker / (task_seconds * rate)),
            math.ceil(spec.walkers / MAX_BLOCK_WALKERS))
    size = max(LANES, math.ceil(spec.walkers / n / LANES) * LANES)
    size = min(size, MAX_BLOCK_WALKERS)
    return WalkerBlocks(spec.walkers, size)


def histogram_edges(max_steps: int, budgets=(), per_decade: int = 32) -> np.ndarray:
    """Integer bin edges for escape steps 1..max_steps: width-1 bins up to 16, then ~`per_decade`
    log-spaced bins per decade; every budget is an edge (bins never straddle a budget).

    Bin i holds escape steps in [edges[i], edges[i+1]); the last edge is max_steps + 1.
    """
    top = int(max_steps) + 1
    n_dec = math.log10(top) if top > 1 else 0.0
    logs = np.round(np.logspace(0, n_dec, max(2, int(math.ceil(n_dec * per_decade)) + 1))).astype(np.int64)
    extra = [int(b) + 1 for b in budgets]
    edges = np.unique(np.concatenate([np.arange(1, min(17, top + 1)), logs, extra, [top]]))
    return edges[(edges >= 1) & (edges <= top)]


def spec_edges(spec: Spec) -> np.ndarray:
    """The cube's escape-step histogram edges for a spec (every budget an edge)."""
    return histogram_edges(spec.max_steps, spec.steps)


def chunk_grid(spec: Spec, chunks: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Number of chunks along each cell dim."""
    return tuple(math.ceil(n / c) for n, c in zip(spec.cell_shape, chunks))


def chunk_slices(spec: Spec, chunks, index) -> tuple[slice, slice, slice, slice]:
    """Index slices of chunk `index` along (T, batch_size, depth, width)."""
    return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, spec.cell_shape))


class ChunkTasks(Sequence):
    """The task(s) of one chunk, one per walker block, made on demand."""

    def __init__(self, common: dict, blocks: WalkerBlocks):
        self.common, self.blocks = common, blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[j] for j in range(*b.indices(len(self)))]
        if b < 0:
            b += len(self)
        s, c = self.blocks[b]
        return Task(walker_start=s, walker_count=c, block=b, n_blocks=len(self.blocks), **self.common)


def chunk_cells(spec: Spec, slices, pits) -> list[Cell]:
    """The cells of the chunk at `slices` (along T, batch_size, depth, width), in C order, each with
    its index inside the chunk and its pit geometry."""
    cells = []
    for iT, iB, iD, iW in itertools.product(*(range(s.start, s.stop) for s in slices)):
        d, w = spec.depth[iD], spec.width[iW]
        pit = pits[(d, w)]
        cells.append(Cell(index=(iT - slices[0].start, iB - slices[1].start, iD - slices[2].start,
                                 iW - slices[3].start),
                          T=spec.T[iT], batch_size=spec.batch_size[iB], depth=d, width=w,
                          w_start=pit.w_start, w_barrier=pit.w_barrier))
    return cells


def tasks_for_chunk(spec: Spec, chunks, index, pits, task_seconds=DEFAULT_TASK_SECONDS,
                    backend: str = "cpu") -> ChunkTasks:
    """The task(s) computing one chunk: one, or one per walker block for a one-cell chunk."""
    sl = chunk_slices(spec, chunks, index)
    shape = tuple(s.stop - s.start for s in sl)
    edges = tuple(int(e) for e in spec_edges(spec))
    blocks = walker_blocks(spec, chunks, task_seconds, kernel_rate(backend))
    if solves(spec.method):  # the exact solver reads Cell objects (and its chunks are small)
        cells, grid = tuple(chunk_cells(spec, sl, pits)), None
    else:  # axis values only: the worker makes the cells (a chunk may hold 1e5 of them)
        cells = ()
        grid = grid_of(*(getattr(spec, a)[s] for a, s in zip(("T", "batch_size", "depth", "width"), sl)), pits)
    common = dict(chunk=tuple(index), shape=shape, cells=cells, grid=grid, budgets=spec.steps, edges=edges,
                  seed=spec.seed, method=spec.method, backend=backend)
    return ChunkTasks(common, blocks)
