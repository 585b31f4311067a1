"""Grow a cube in place: `run` with a bigger spec on a store made from a smaller one.

A cell's numbers depend only on (seed, coordinates, walker index), so every count already in a
store is valid in a bigger sweep: new cells get walkers 0..W-1, old cells walkers W_old..W-1, and
nothing already computed is computed again. The grown cube is built beside the old one -- in the
new grid's layout (coordinates sorted, the new spec's chunks) -- from the old counts plus the new
walker blocks, and then swapped in. The old store is read-only meanwhile, so an interrupted grow
resumes by computing only the chunks of the new store that are not done, and no walker block is
ever counted twice. Refinement (`refine.py`) is a grow with per-cell walker targets.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StoreMismatch
from ..model.axes import CELL_AXES, samples, solves
from . import partition
from .planner import ChunkDone
from .spec import Spec, parse_spec
from .store import Store, now
from .task import COUNTS, Task

SOLVED = ("mfpt", "mfpt_rel_error", "markov_p_escape")  # per-cell solver values: one source per cell
GROWING_INTO = "growing_into"  # old store attr: the directory the grown cube is being built in
MAX_BLOCK_WALKERS = 4_000_000  # walkers of one task (an int64 each, plus the kernel's lanes)


def old_spec(st: Store) -> Spec | None:
    """The spec a cube was made from (None for a store without a readable spec)."""
    attrs = st.attrs()
    try:
        return parse_spec(attrs["spec"], attrs.get("spec_file", "<store>"), output=str(st.where), yes=True)
    except Exception:
        return None


def compare(old: Spec, new: Spec, where) -> dict:
    """What a grow from `old` to `new` adds: {"added": {axis: [values]}, "walkers": [old, new]}.
    Any other difference raises StoreMismatch naming it (one line, exit 2)."""

    def refuse(what: str):
        raise StoreMismatch(
            f"{where}: store was made from a different spec ({what}); a store grows only by added T, "
            "batch_size, depth or width values and more walkers: use --overwrite to replace it, or "
            "[output] path / --output to write elsewhere")

    if old.seed != new.seed:
        refuse(f"seed {old.seed} -> {new.seed}")
    if old.method != new.method:
        refuse(f"method {old.method!r} -> {new.method!r}")
    if tuple(old.steps) != tuple(new.steps):
        refuse(f"steps {list(old.steps)} -> {list(new.steps)}")
    for a in CELL_AXES:
        removed = sorted(set(getattr(old, a)) - set(getattr(new, a)))
        if removed:
            refuse(f"{a} value(s) {', '.join(map(str, removed))} removed")
    if new.walkers < old.walkers:
        refuse(f"walkers {old.walkers} -> {new.walkers} (fewer)")
    added = {a: sorted(set(getattr(new, a)) - set(getattr(old, a))) for a in CELL_AXES}
    return dict(added={a: v for a, v in added.items() if v}, walkers=[old.walkers, new.walkers])


def dry_run(st: Store, spec: Spec) -> dict:
    """What `run SPEC` would do to the store, computing nothing: create, resume, grow (with the new
    cells, the cells gaining walkers and a bound of the walker-steps), or a StoreMismatch."""
    if not st.exists() or not st.is_cube():
        return dict(action="create", walker_steps_upper_bound=spec.walker_steps_bound)
    attrs = st.attrs()
    done, total = st.chunk_count()
    if attrs.get("spec_hash") == spec.content_hash:
        return dict(action="resume" if done < total else "nothing (complete)", chunks_done=done, chunks_total=total)
    old = old_spec(st)
    if old is None:
        raise StoreMismatch(f"{st.where}: store was made from a different spec and holds no readable spec")
    diff = compare(old, spec, st.where)
    ok = _cell_mask(st.done_mask(), tuple(attrs["chunk_shape"]), old.cell_shape)
    n_old = int(ok.sum())
    new_cells = spec.n_cells - n_old
    extra = spec.walkers - old.walkers
    bound = float(new_cells * spec.walkers + n_old * extra) * spec.max_steps
    return dict(action="grow", added=diff["added"], walkers=diff["walkers"], new_cells=new_cells,
                cells_gaining_walkers=n_old if extra > 0 else 0, cells_kept=n_old,
                walker_steps_upper_bound=bound)


def _cell_mask(done: np.ndarray, chunks, shape) -> np.ndarray:
    """Per-cell bool: the cell lies in a done chunk (its data are complete)."""
    m = done
    for axis, c in enumerate(chunks):
        m = np.repeat(m, c, axis=axis)
    return m[tuple(slice(0, n) for n in shape)]


class Base:
    """The complete cells of an existing cube, looked up by coordinate values: their additive
    counts and solver values (a cube is small: it is held in memory)."""

    def __init__(self, st: Store, spec: Spec):
        ds = st.open_dataset().load()
        attrs = st.attrs()
        ok = _cell_mask(st.done_mask(), tuple(attrs["chunk_shape"]), spec.cell_shape)
        self.index = {a: {v: i for i, v in enumerate(getattr(spec, a))} for a in CELL_AXES}

        def cells(name, extra=()):
            arr = ds[name].transpose(*CELL_AXES, *extra).values
            return np.where(ok.reshape(ok.shape + (1,) * len(extra)), arr, 0)

        self.arrays = dict(n_walkers=cells("n_walkers", ("steps",))[..., 0], n_diverged=cells("n_diverged", ("steps",))[..., 0],
                           n_escaped=cells("n_escaped", ("steps",)), exposure=cells("exposure", ("steps",)),
                           hist=cells("escape_hist", ("escape_step_bin",)))
        self.solved = ok if solves(spec.method) else np.zeros_like(ok)
        if solves(spec.method):
            self.arrays["mfpt"] = cells("mfpt")
            self.arrays["mfpt_rel_error"] = cells("mfpt_rel_error")
            mp = "markov_p_escape" if "markov_p_escape" in ds else "p_escape"  # method markov: p_escape is it
            self.arrays["markov_p_escape"] = cells(mp, ("steps",))

    def take(self, spec: Spec, slices) -> tuple[dict, np.ndarray]:
        """(counts, solved) for the chunk of `spec` at `slices`: the old cells' values, zeros (and
        solved False) for cells the old cube lacks."""
        idx = [np.array([self.index[a].get(v, -1) for v in getattr(spec, a)[s]]) for a, s in zip(CELL_AXES, slices)]
        present = np.ones([len(i) for i in idx], bool)
        for axis, i in enumerate(idx):
            shape = [1] * 4
            shape[axis] = len(i)
            present = present & (i >= 0).reshape(shape)
        grid = np.ix_(*[np.maximum(i, 0) for i in idx])
        out = {}
        for name, arr in self.arrays.items():
            got = arr[grid]
            out[name] = np.where(present.reshape(present.shape + (1,) * (got.ndim - 4)), got, 0)
        return out, self.solved[grid] & present


def sum_parts(parts: list[dict]) -> dict:
    """A chunk's counts from its parts (old counts and new walker blocks): COUNTS add, and each
    cell's solver values come from exactly one part (the others hold zeros there)."""
    out = {}
    for k in COUNTS + SOLVED:
        have = [p[k] for p in parts if k in p]
        if have:
            out[k] = np.sum(have, axis=0)
    return out


@dataclass
class _Chunk:
    index: tuple
    slices: tuple
    parts: list
    expected: int
    got: int = 0
    backends: list = field(default_factory=list)


class GrowPlanner:
    """Chunks of `spec`'s grid built from a base (old counts) plus new walker blocks.

    target: walkers each cell must end with -- an int (the spec's walkers) or an int array over
    spec.cell_shape (refinement). Chunks that need no new work are complete at once (`pop_ready`)."""

    def __init__(self, spec: Spec, chunks, pending, base: Base | None, *, target=None,
                 task_seconds: float = partition.DEFAULT_TASK_SECONDS, backend: str = "cpu"):
        self.spec, self.chunks, self.base = spec, tuple(chunks), base
        self.pending = [tuple(int(i) for i in idx) for idx in pending]
        self.target = spec.walkers if target is None else target
        self.task_seconds, self.backend = task_seconds, backend
        self.rate = partition.kernel_rate(backend)
        self.pits = spec.pits()
        self.edges = tuple(int(e) for e in partition.spec_edges(spec))
        self._open: dict[tuple, _Chunk] = {}
        self._ready: list[ChunkDone] = []
        self._todo = self._tasks()

    @property
    def total(self) -> int:
        return len(self.pending)

    def _want(self, slices) -> np.ndarray:
        shape = tuple(s.stop - s.start for s in slices)
        if np.isscalar(self.target):
            return np.full(shape, int(self.target), np.int64)
        return np.asarray(self.target)[tuple(slices)].astype(np.int64)

    def _chunk_tasks(self, index, slices) -> tuple[dict, list[Task]]:
        spec = self.spec
        shape = tuple(s.stop - s.start for s in slices)
        if self.base is not None:
            base, solved = self.base.take(spec, slices)
        else:
            base, solved = {}, np.zeros(shape, bool)
        have = base["n_walkers"] if base else np.zeros(shape, np.int64)
        want = np.maximum(self._want(slices), have)
        cells = partition.chunk_cells(spec, slices, self.pits)
        common = dict(chunk=tuple(index), shape=shape, budgets=spec.steps, edges=self.edges, seed=spec.seed,
                      backend=self.backend)
        specs = []  # (cells, walker_start, walker_count, method)
        unsolved = [c for c in cells if not solved[c.index]]
        if solves(spec.method) and unsolved:
            specs.append((unsolved, 0, 0, "markov"))
        if samples(spec.method):
            groups: dict[tuple[int, int], list] = {}
            for c in cells:
                h, w = int(have[c.index]), int(want[c.index])
                if w > h:
                    groups.setdefault((h, w), []).append(c)
            for (h, w), group in sorted(groups.items()):
                for start, count in self._blocks(len(group), h, w):
                    specs.append((group, start, count, "montecarlo"))
        tasks = [Task(cells=tuple(cs), walker_start=s, walker_count=n, block=b, n_blocks=len(specs), method=m,
                      **common)
                 for b, (cs, s, n, m) in enumerate(specs)]
        return base, tasks

    def _blocks(self, n_cells: int, start: int, stop: int) -> list[tuple[int, int]]:
        """Walker ranges [start, stop) for a group of cells, each about task_seconds of work."""
        count = stop - start
        work = n_cells * count * self.spec.max_steps
        n = max(1, int(np.ceil(work / (self.task_seconds * self.rate))), int(np.ceil(count / MAX_BLOCK_WALKERS)))
        size = max(partition.LANES, int(np.ceil(count / n / partition.LANES)) * partition.LANES)
        return [(s, min(size, stop - s)) for s in range(start, stop, size)]

    def _tasks(self):
        for index in self.pending:
            slices = partition.chunk_slices(self.spec, self.chunks, index)
            base, tasks = self._chunk_tasks(index, slices)
            parts = [base] if base else []
            if not tasks:
                counts = sum_parts(parts) if parts else _zero_counts(self.spec, slices, len(self.edges) - 1)
                self._ready.append(ChunkDone(index=index, slices=slices, counts=counts,
                                             walkers=int(np.max(counts["n_walkers"], initial=0)), backends=()))
                continue
            self._open[index] = _Chunk(index=index, slices=slices, parts=parts, expected=len(tasks))
            yield from tasks

    def ask(self, n: int) -> list[Task]:
        out = []
        while len(out) < n:
            t = next(self._todo, None)
            if t is None:
                break
            out.append(t)
        return out

    def pop_ready(self) -> list[ChunkDone]:
        """Chunks complete without new work (every cell already has its walkers)."""
        ready, self._ready = self._ready, []
        return ready

    def tell(self, result: dict) -> ChunkDone | None:
        ch = self._open[tuple(result["chunk"])]
        ch.parts.append({k: v for k, v in result.items() if k in COUNTS + SOLVED})
        ch.got += 1
        ch.backends.append(result.get("backend", "cpu"))
        if ch.got < ch.expected:
            return None
        del self._open[ch.index]
        counts = sum_parts(ch.parts)
        return ChunkDone(index=ch.index, slices=ch.slices, counts=counts,
                         walkers=int(np.max(counts["n_walkers"], initial=0)), backends=tuple(ch.backends))


def _zero_counts(spec: Spec, slices, n_bins: int) -> dict:
    shape = tuple(s.stop - s.start for s in slices)
    nb = len(spec.steps)
    out = dict(n_walkers=np.zeros(shape, np.int64), n_diverged=np.zeros(shape, np.int64),
               n_escaped=np.zeros(shape + (nb,), np.int64), exposure=np.zeros(shape + (nb,), np.int64),
               hist=np.zeros(shape + (n_bins,), np.int64))
    if solves(spec.method):
        out.update(mfpt=np.zeros(shape), mfpt_rel_error=np.zeros(shape), markov_p_escape=np.zeros(shape + (nb,)))
    return out


# ---------------------------------------------------------------------------------------------
# The directory the grown cube is built in, and the swap
# ---------------------------------------------------------------------------------------------


def build_dir(st: Store, plan: str) -> Path:
    """Where the grown cube is built: the directory an interrupted run of the same plan (spec hash
    plus per-cell walker targets) recorded, if it still holds that plan's cube or nothing yet; else a
    new, unpredictable directory beside the store (recorded in the old store before anything is written)."""
    recorded = str(st.attrs().get(GROWING_INTO) or "")
    name, _, recorded_plan = recorded.partition("|")
    if name:
        d = st.path.parent / name
        if d.name == name and d.is_dir() and not d.is_symlink():
            s = Store(d)
            if recorded_plan == plan and ((s.is_cube() and s.attrs().get("plan") == plan) or not any(d.iterdir())):
                return d
            shutil.rmtree(d, ignore_errors=True)  # another plan's leftover: start again
    d = Path(tempfile.mkdtemp(prefix=f".{st.path.name}.grow-", dir=st.path.parent))
    st.set_attrs(**{GROWING_INTO: f"{d.name}|{plan}"})
    return d


def plan_id(spec: Spec, target) -> str:
    """Identity of a grow: the new spec's hash and, for refinement, the per-cell walker targets."""
    import hashlib

    h = hashlib.sha256(spec.content_hash.encode())
    if target is not None and not np.isscalar(target):
        h.update(np.ascontiguousarray(np.asarray(target, np.int64)).tobytes())
    return h.hexdigest()[:16]


def swap(st: Store, built: Path) -> None:
    """Put the grown cube at the store's path (two renames; `recover` finishes one interrupted
    between them) and delete the old cube."""
    st.guard()
    aside = Path(tempfile.mkdtemp(prefix=f".{st.path.name}.old-", dir=st.path.parent))
    os.replace(st.path, aside)  # a directory may replace an empty directory
    os.replace(built, st.path)
    shutil.rmtree(aside, ignore_errors=True)


def recover(st: Store) -> str | None:
    """Finish a swap a crash interrupted (the store's path missing, a complete grown cube and/or
    the old cube beside it); returns what was done, or None."""
    if not st.local or st.path.exists():
        return None
    parent, name = st.path.parent, st.path.name
    if not parent.is_dir():
        return None
    built = [p for p in parent.glob(f".{name}.grow-*") if p.is_dir() and not p.is_symlink()]
    olds = [p for p in parent.glob(f".{name}.old-*") if p.is_dir() and not p.is_symlink()]
    for b in built:
        s = Store(b)
        if s.is_cube() and s.attrs().get("grow_complete"):
            os.replace(b, st.path)
            for o in olds:
                shutil.rmtree(o, ignore_errors=True)
            return f"finished an interrupted grow: {b.name} -> {name}"
    for o in olds:
        if Store(o).is_cube():
            os.replace(o, st.path)
            return f"restored the store from {o.name} (a grow was interrupted before it finished)"
    return None


def history(attrs: dict) -> list[dict]:
    """The store's grow/refine operations, oldest first."""
    try:
        return list(json.loads(attrs.get("history") or "[]"))
    except ValueError:
        return []


def record(old_attrs: dict, entry: dict) -> str:
    """The history attr after one more operation (JSON text)."""
    return json.dumps(history(old_attrs) + [dict(entry, at=now())])
