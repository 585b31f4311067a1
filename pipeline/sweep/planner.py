"""Planners decide what to compute next; the runner only executes (ask/tell, as python-adaptive
separates learners from runners). A planner never sees Dask or the store.

    tasks = planner.ask(n)          # up to n more tasks (fewer, or none, when nothing is left)
    chunk = planner.tell(result)    # a finished chunk (index, summed counts, walkers) or None

`StaticPlanner` is today's sweep: every pending chunk of a fixed grid, each computed once, its
walker blocks summed. Growing and refining cubes are other planners over the same interface;
the completion record keeps, per chunk, how many walkers of each cell it counts (`walkers`), so
a later planner can add walker blocks `walkers .. new-1` to a cell and add their counts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from . import partition
from .spec import Spec
from .task import COUNTS, Task


@dataclass(frozen=True)
class ChunkDone:
    """A chunk whose every walker block came back: where it goes and what to write."""

    index: tuple[int, int, int, int]
    slices: tuple[slice, slice, slice, slice]
    counts: dict
    walkers: int  # walkers 0 .. walkers-1 of each cell are counted
    backends: tuple[str, ...] = ("cpu",)  # the kernel backends its blocks ran on (provenance)


class StaticPlanner:
    """Every pending chunk of a spec's grid, in C order; tasks are made lazily, as asked for."""

    def __init__(self, spec: Spec, chunks, pending, task_seconds: float = partition.DEFAULT_TASK_SECONDS,
                 backend: str = "cpu"):
        self.spec, self.chunks = spec, tuple(chunks)
        self.pending = [tuple(int(i) for i in idx) for idx in pending]
        self.backend, self.task_seconds = backend, task_seconds
        pits = spec.pits()
        self._todo = itertools.chain.from_iterable(
            partition.tasks_for_chunk(spec, self.chunks, idx, pits, task_seconds, backend=backend)
            for idx in self.pending)
        self._blocks: dict[tuple, list] = {}  # chunk -> [blocks still out, summed counts, block 0's extras]

    @property
    def total(self) -> int:
        """Chunks this planner will complete."""
        return len(self.pending)

    @property
    def n_tasks(self) -> int:
        """Tasks this planner will hand out: one per walker block of each pending chunk."""
        blocks = partition.walker_blocks(self.spec, self.chunks, self.task_seconds, partition.kernel_rate(self.backend))
        return len(blocks) * len(self.pending)  # every chunk of a grid has the same walker blocks

    def ask(self, n: int) -> list[Task]:
        out = list(itertools.islice(self._todo, max(0, n)))
        for t in out:
            self._blocks.setdefault(t.chunk, [t.n_blocks, None, None, []])
        return out

    def tell(self, result: dict) -> ChunkDone | None:
        """Add a block's counts to its chunk's running sums (a cell may have very many blocks, so
        none is kept); the chunk once every block is in."""
        index = tuple(result["chunk"])
        state = self._blocks[index]
        state[0] -= 1
        if state[1] is None:
            state[1] = {k: result[k].copy() for k in COUNTS}
        else:
            for k in COUNTS:
                state[1][k] += result[k]
        state[3].append(result.get("backend", "cpu"))
        if result["block"] == 0:
            state[2] = {k: v for k, v in result.items() if k not in COUNTS and k != "backend"}
        if state[0] > 0:
            return None
        del self._blocks[index]
        counts = dict(state[2])
        counts.update(state[1])
        return ChunkDone(index=index, slices=partition.chunk_slices(self.spec, self.chunks, index), counts=counts,
                         walkers=int(np.max(counts["n_walkers"], initial=0)),
                         backends=tuple(state[3]))
