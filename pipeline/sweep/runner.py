"""Dask orchestration: connect, submit only unfinished chunks, gather, write, resume, progress.

Knows nothing of the physics: it submits `task.run_task` on `Task`s from `partition` and hands
the additive counts that come back to `cube`. The client alone touches the store; workers get
no path. At most `window` tasks are in the scheduler at once, so client memory and scheduler
state stay bounded however large the grid.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import partition, store
from ..deploy import ClusterOptions, open_client
from ..deploy.clusters import dashboard_link, job_counts
from ..errors import StoreMismatch
from .spec import Spec, load_spec
from .task import run_task


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep (none of it changes the numbers)."""

    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    overwrite: bool = False
    task_seconds: float = partition.DEFAULT_TASK_SECONDS
    retries: int = 2
    progress: bool = True


@dataclass
class Summary:
    """What a run did: its numbers and where they are."""

    path: str
    cells: int
    walkers: int
    chunks_total: int
    chunks_done_before: int
    chunks_computed: int
    tasks_submitted: int
    walker_steps: int
    wall_seconds: float
    complete: bool
    dashboard: str | None = None
    compute_seconds: float = 0.0  # first submit to last write
    kernel_seconds: float = 0.0  # summed over tasks, as timed inside them
    workers: int = 0
    window: int = 0
    method: str = "montecarlo"
    jobs: tuple[int, int, int] | None = None  # batch jobs (requested, running, pending) when computing ended
    jobs_running_max: int = 0  # most batch jobs with a connected worker at once

    @property
    def rate(self) -> float:
        return self.walker_steps / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def line(self) -> str:
        compute = (f", computing {self.compute_seconds:.1f} s at "
                   f"{self.walker_steps / self.compute_seconds:.3g} walker-steps/s on {self.workers} workers"
                   if self.compute_seconds > 0 else "")
        if self.method == "markov":
            return (f"{'done' if self.complete else 'stopped'}: {self.path}: {self.cells} cells solved by the "
                    f"exact solver in {self.wall_seconds:.1f} s wall ({self.compute_seconds:.1f} s computing on "
                    f"{self.workers} workers); chunks computed {self.chunks_computed}, already done "
                    f"{self.chunks_done_before}, total {self.chunks_total}; tasks submitted {self.tasks_submitted}"
                    f"{self.jobs_text()}")
        return (f"{'done' if self.complete else 'stopped'}: {self.path}: {self.cells} cells, "
                f"{self.walkers} walkers, {self.walker_steps:.4g} walker-steps in {self.wall_seconds:.1f} s "
                f"wall ({self.rate:.3g} walker-steps/s with start-up{compute}); chunks computed {self.chunks_computed}, "
                f"already done {self.chunks_done_before}, total {self.chunks_total}; "
                f"tasks submitted {self.tasks_submitted}{self.jobs_text()}")

    def jobs_text(self) -> str:
        """'; jobs requested R, running N, pending P (...)' for dask-jobqueue runs, else ''."""
        if self.jobs is None:
            return ""
        requested, running, pending = self.jobs
        return (f"; jobs requested {requested}, running {running}, pending {pending} when computing ended "
                f"(at most {self.jobs_running_max} running at once)")


def check_store(spec: Spec, path: str, opts: RunOptions) -> tuple[int, int, int, int] | None:
    """Chunk shape of an existing store of this spec (resume), or None if one must be created.

    A store from another spec (or a non-cube directory) is refused unless overwrite is set.
    Nothing is written here, so a refusal leaves the disk as it was."""
    p = Path(path)
    if p.exists():
        if store.is_cube(p):
            attrs = store.read_attrs(p)
            if attrs.get("spec_hash") == spec.content_hash and not opts.overwrite:
                return tuple(attrs["chunk_shape"])
            if not opts.overwrite:
                raise StoreMismatch(
                    f"{path}: store was made from a different spec (name {attrs.get('name')!r}, hash "
                    f"{str(attrs.get('spec_hash'))[:12]} != {spec.content_hash[:12]}); use --overwrite to replace it "
                    "or [output] path / --output to write elsewhere")
        elif not p.is_dir() or any(p.iterdir()):
            if not opts.overwrite:
                raise StoreMismatch(f"{path}: exists and is not an escape-sweep cube; use --overwrite to replace it")
    return None


class _Progress:
    """One status line on stderr: chunks, walker-steps, rate, ETA."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled and total > 0
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, steps: int, force: bool = False):
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < 0.5):
            return
        self.last = now
        el = now - self.t0
        rate = steps / el if el > 0 else 0.0
        eta = el / done * (self.total - done) if done else float("nan")
        bar = "#" * int(30 * done / self.total)
        eta_s = f"{eta:.0f}s" if math.isfinite(eta) else "?"
        print(f"\r[{bar:<30}] {done}/{self.total} chunks  {steps:.3g} walker-steps  {rate:.3g}/s  ETA {eta_s}   ",
              end="", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled:
            print(file=sys.stderr, flush=True)


ADDITIVE = ("n_walkers", "n_diverged", "n_escaped", "exposure", "hist")


def _sum_blocks(parts: list[dict]) -> dict:
    """Counts of a chunk from its walker blocks (they add); per-cell extras come from block 0."""
    out = {k: v for k, v in parts[0].items() if k not in ADDITIVE}
    out.update({k: parts[0][k].copy() for k in ADDITIVE})
    for p in parts[1:]:
        for k in ADDITIVE:
            out[k] += p[k]
    return out


def run_sweep(spec_or_path, opts: RunOptions | None = None, *, output: str | None = None, yes: bool = False) -> Summary:
    """Run (or resume) a sweep and return its Summary. The store is `output` or the spec's path.

    Order: take the store lock (a second run on the store is refused), check the store against
    the spec, connect to the workers, and only then create the store -- so a refused spec or
    an unreachable scheduler writes nothing."""
    from .lock import StoreLock

    opts = opts or RunOptions()
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path, output=output, yes=yes)
    path = str(output or spec.output)
    t0 = time.perf_counter()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with StoreLock(path):
        chunks = check_store(spec, path, opts)
        if chunks is not None:
            done = store.done_mask(store.open_group(path, mode="r"))
        else:
            chunks = partition.chunk_shape(spec, opts.task_seconds)
            done = np.zeros(partition.chunk_grid(spec, chunks), bool)
        pending = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~done))]
        summary = Summary(path=path, cells=spec.n_cells, walkers=spec.n_cells * spec.walkers,
                          chunks_total=int(done.size), chunks_done_before=int(done.sum()), chunks_computed=0,
                          tasks_submitted=0, walker_steps=0, wall_seconds=0.0, complete=False, method=spec.method)
        if pending:
            with open_client(opts.cluster) as client:
                if needs_new_store(spec, path, opts):
                    store.create(path, spec, chunks, partition.spec_edges(spec), partition.chunk_grid(spec, chunks))
                _compute(client, spec, path, store.open_group(path), chunks, pending, opts, summary)
        summary.complete = bool(store.done_mask(store.open_group(path, mode="r")).all())
        if summary.complete:
            attrs = store.read_attrs(path)
            if pending or not attrs.get("completed"):
                store.set_attrs(path, completed=store.now())
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def needs_new_store(spec: Spec, path: str, opts: RunOptions) -> bool:
    """A new store is needed: none there, or a different spec's (or a non-cube) with overwrite."""
    p = Path(path)
    if not store.is_cube(p):
        return True
    return store.read_attrs(p).get("spec_hash") != spec.content_hash or opts.overwrite


def _compute(client, spec, path, group, chunks, pending, opts, summary):
    from distributed import as_completed

    pits = spec.pits()
    edges = partition.spec_edges(spec)

    def tasks():
        for idx in pending:
            yield from partition.tasks_for_chunk(spec, chunks, idx, pits, opts.task_seconds)

    todo = tasks()
    progress = _Progress(len(pending), opts.progress)
    summary.dashboard = dashboard_link(client)
    if opts.progress:
        print(f"escape-sweep: {spec.name}: {len(pending)} chunks to compute "
              f"({summary.chunks_done_before} already done) on {client.scheduler.address}", file=sys.stderr)
        print(f"escape-sweep: dashboard {summary.dashboard}", file=sys.stderr, flush=True)
    nthreads = sum(client.nthreads().values()) or 1
    window = 2 * nthreads + 2
    summary.workers, summary.window = nthreads, window
    t_start = time.perf_counter()
    tag = spec.content_hash[:10]
    ac = as_completed()
    blocks: dict[tuple, list] = {}

    def submit_next() -> bool:
        t = next(todo, None)
        if t is None:
            return False
        key = f"escape-sweep-chunk-{tag}-{'.'.join(map(str, t.chunk))}-b{t.block}"
        ac.add(client.submit(run_task, t, key=key, retries=opts.retries, pure=False))
        summary.tasks_submitted += 1
        blocks.setdefault(t.chunk, [None] * t.n_blocks)
        return True

    for _ in range(window):
        if not submit_next():
            break
    try:
        for fut in ac:
            res = fut.result()
            fut.release()
            parts = blocks[res["chunk"]]
            parts[res["block"]] = res
            summary.walker_steps += res["walker_steps"]
            summary.kernel_seconds += res["kernel_seconds"]
            if all(p is not None for p in parts):
                del blocks[res["chunk"]]
                sl = partition.chunk_slices(spec, chunks, res["chunk"])
                store.write_chunk(group, sl, _sum_blocks(parts), edges, spec.method)
                store.mark_done(group, res["chunk"])
                summary.chunks_computed += 1
            submit_next()
            _note_jobs(client, summary)
            progress.update(summary.chunks_computed, summary.walker_steps)
        progress.update(summary.chunks_computed, summary.walker_steps, force=True)
        summary.compute_seconds = time.perf_counter() - t_start
    finally:
        _note_jobs(client, summary)
        progress.close()


def _note_jobs(client, summary):
    """Batch jobs requested / running / pending now (dask-jobqueue clusters only)."""
    summary.jobs = job_counts(client)
    if summary.jobs:
        summary.jobs_running_max = max(summary.jobs_running_max, summary.jobs[1])
