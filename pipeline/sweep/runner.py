"""Dask orchestration: connect, submit only unfinished chunks, gather, write, resume, progress.

Knows nothing of the physics: it submits `task.run_task` on `Task`s from `partition` and hands
the additive counts that come back to `cube`. The client alone touches the store; workers get
no path. At most `window` tasks are in the scheduler at once, so client memory and scheduler
state stay bounded however large the grid.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import grow, partition, store
from ..deploy import ClusterOptions, open_client
from ..deploy.clusters import dashboard_link, job_counts
from ..deploy.logs import route_library_output, routed
from ..errors import InputError, StoreMismatch
from ..model import backends
from .spec import Spec, load_spec
from .planner import StaticPlanner
from .task import run_task, task_done


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep (none of it changes the numbers)."""

    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    overwrite: bool = False
    task_seconds: float = partition.DEFAULT_TASK_SECONDS
    retries: int = 2
    progress: bool = True
    backend: str = "cpu"  # kernel backend: "cpu", "cuda" (GPU workers) or "auto" (cuda where a worker has one)
    repair: bool = False  # verify the store first; recompute the damaged chunks
    library_log: object = None  # a path: Dask's own messages go there once the cluster starts (deploy/logs.py)


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


def _check_parent(where) -> None:
    """A local store's nearest existing ancestor must be a directory (not a regular file)."""
    from ..locations import is_path, local_path

    if not is_path(where):
        return
    p = local_path(where).expanduser().absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise StoreMismatch(f"{where}: cannot create the store: {p} is not a directory")


def check_store(spec: Spec, st: store.Store, opts: RunOptions) -> tuple[int, int, int, int] | None:
    """Chunk shape of an existing store of this spec (resume), or None if one must be created.

    A store from another spec is refused unless overwrite is set; anything that is not an
    escape-sweep cube (a non-empty directory, a file) is refused always.
    Nothing is written here, so a refusal leaves the disk as it was."""
    if not st.exists():
        return None
    if st.is_cube():
        attrs = st.attrs()
        if attrs.get("spec_hash") == spec.content_hash and not opts.overwrite:
            return tuple(attrs["chunk_shape"])
        if not opts.overwrite:
            raise StoreMismatch(
                f"{st.where}: store was made from a different spec (name {attrs.get('name')!r}, hash "
                f"{str(attrs.get('spec_hash'))[:12]} != {spec.content_hash[:12]}); use --overwrite to replace it "
                "or [output] path / --output to write elsewhere")
    elif st.local and (not st.path.is_dir() or st.path.is_symlink() or any(st.path.iterdir())):
        # --overwrite replaces only an escape-sweep cube, never some other directory or file
        raise StoreMismatch(f"{st.where}: exists and is not an escape-sweep cube; refusing to write there "
                            "(even with --overwrite); choose another [output] path / --output")
    return None


class _Progress:
    """Progress on stderr: chunks, walker-steps, rate and an ETA from work, not from chunk counts.

    The ETA divides the work left by the rate learned so far, work being each chunk's cost bound
    (cells x walkers x steps, as the partition sizes tasks), so unequal chunks do not mislead it.
    On a terminal one line is redrawn (carriage return); elsewhere (a batch job's log) a plain line
    is printed every ESCAPE_SWEEP_PROGRESS_SECONDS seconds (default 30) and at the end."""

    def __init__(self, total: int, work: float, enabled: bool, sampled: bool = True):
        self.total, self.work, self.enabled = total, float(work), enabled and total > 0
        self.sampled = sampled  # exact-solver-only sweeps have no walker-steps to count
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else _progress_seconds()
        self.t0 = time.perf_counter()
        self.last = 0.0 if self.tty else self.t0

    def update(self, done: int, steps: int, done_work: float, force: bool = False):
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < self.every):
            return
        self.last = now
        el = now - self.t0
        rate = steps / el if el > 0 else 0.0
        eta = el / done_work * (self.work - done_work) if done_work > 0 else float("nan")
        eta_s = f"{eta:.0f}s" if math.isfinite(eta) else "?"
        text = (f"{done}/{self.total} chunks  {steps:.3g} walker-steps  {rate:.3g}/s  ETA {eta_s}" if self.sampled
                else f"{done}/{self.total} chunks solved  ETA {eta_s}")
        if self.tty:
            bar = "#" * int(30 * done / self.total)
            print(f"\r[{bar:<30}] {text}   ", end="", file=sys.stderr, flush=True)
        else:
            print(f"escape-sweep: progress {text} ({el:.0f} s)", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


def _progress_seconds() -> float:
    """ESCAPE_SWEEP_PROGRESS_SECONDS: seconds between progress lines when stderr is not a terminal."""
    try:
        v = float(os.environ.get("ESCAPE_SWEEP_PROGRESS_SECONDS", "30"))
    except ValueError:
        v = 30.0
    return v if math.isfinite(v) and v > 0 else 30.0


def run_sweep(spec_or_path, opts: RunOptions | None = None, *, output=None, yes: bool = False) -> Summary:
    """Run (or resume) a sweep and return its Summary. The store is `output` (a path, or a zarr
    store object) or the spec's path.

    Order: take the store lock (a second run on the store is refused), check the store against
    the spec, connect to the workers, and only then create the store -- so a refused spec or
    an unreachable scheduler writes nothing. Every write checks the lock first."""
    from .lock import StoreLock, timeout_from_env

    opts = opts or RunOptions()
    check_backend(opts)
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path, output=output, yes=yes)
    where = output if output is not None else spec.output
    _check_parent(where)
    t0 = time.perf_counter()
    with StoreLock(where, timeout=timeout_from_env()) as lock:
        st = store.Store(where, guard=lock.check)
        note = grow.recover(st)
        if note:
            print(f"escape-sweep: {note}", file=sys.stderr)
        growth = growth_of(spec, st, opts)
        if growth is not None:
            summary = _grow(spec, st, growth, opts)
            summary.wall_seconds = time.perf_counter() - t0
            return summary
        chunks = check_store(spec, st, opts)
        fresh = chunks is None
        if fresh:
            chunks = partition.chunk_shape(spec, opts.task_seconds, rate=partition.kernel_rate(opts.backend),
                                           threads=local_threads(opts))
            done = np.zeros(partition.chunk_grid(spec, chunks), bool)
        else:
            if opts.repair:
                repair(st, opts.progress)
            done = st.done_mask()
        pending = list(zip(*np.nonzero(~done)))
        summary = Summary(path=str(where), cells=spec.n_cells, walkers=spec.n_cells * spec.walkers,
                          chunks_total=int(done.size), chunks_done_before=int(done.sum()), chunks_computed=0,
                          tasks_submitted=0, walker_steps=0, wall_seconds=0.0, complete=False, method=spec.method)
        if pending:
            planner = StaticPlanner(spec, chunks, pending, opts.task_seconds, backend=opts.backend)
            route_library_output(opts.library_log)
            with open_client(sized_cluster(spec, opts)) as client:
                submit_kw = backend_submit_options(client, opts)
                create = (lambda: st.create(spec, chunks, partition.spec_edges(spec),
                                            partition.chunk_grid(spec, chunks))) if fresh else None
                _compute(client, spec, st, planner, opts, summary, submit_kw, prepare=create)
        summary.complete = bool(st.done_mask().all())
        if summary.complete and (pending or not st.attrs().get("completed")):
            st.set_attrs(completed=store.now())
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def growth_of(spec: Spec, st: store.Store, opts: RunOptions) -> dict | None:
    """How `spec` grows the cube in `st` ({"old": Spec, "added": ..., "walkers": [old, new]}), or None
    when the store is not another spec's cube (or --overwrite). A difference that is not growth
    raises StoreMismatch naming it."""
    if opts.overwrite or not st.local or not st.is_cube():
        return None
    if st.attrs().get("spec_hash") == spec.content_hash:
        return None
    old = grow.old_spec(st)
    if old is None:
        return None  # check_store refuses it with the generic line
    return dict(grow.compare(old, spec, st.where), old=old)


def _grow(spec: Spec, st: store.Store, growth: dict, opts: RunOptions, target=None, op: str = "grow") -> Summary:
    """Build the grown cube beside the store from its counts plus the new walker blocks, then swap
    it in. Resumable: the directory is recorded in the old store, which stays read-only."""
    plan = grow.plan_id(spec, target)
    built = grow.build_dir(st, plan)
    bst = store.Store(built, guard=st.guard)
    made = bst.is_cube()
    if made:
        chunks, done = tuple(bst.attrs()["chunk_shape"]), bst.done_mask()
    else:
        chunks = partition.chunk_shape(spec, opts.task_seconds, rate=partition.kernel_rate(opts.backend),
                                       threads=local_threads(opts))
        done = np.zeros(partition.chunk_grid(spec, chunks), bool)
    pending = list(zip(*np.nonzero(~done)))
    summary = Summary(path=str(st.where), cells=spec.n_cells, walkers=spec.n_cells * spec.walkers,
                      chunks_total=int(done.size), chunks_done_before=int(done.sum()), chunks_computed=0,
                      tasks_submitted=0, walker_steps=0, wall_seconds=0.0, complete=False, method=spec.method)
    if opts.progress:
        added = "; ".join(f"{a} += {', '.join(f'{v:g}' for v in vals)}" for a, vals in growth["added"].items())
        w0, w1 = growth["walkers"]
        print(f"escape-sweep: growing {st.where} in place: {added or 'no new values'}"
              f"{f'; walkers {w0} -> {w1}' if w1 != w0 else ''}{'; refining' if target is not None else ''}",
              file=sys.stderr)
    base = grow.Base(st, growth["old"])
    planner = grow.GrowPlanner(spec, chunks, pending, base, target=target, task_seconds=opts.task_seconds,
                               backend=opts.backend)
    if pending:
        route_library_output(opts.library_log)
        with open_client(sized_cluster(spec, opts)) as client:
            submit_kw = backend_submit_options(client, opts)
            def create():
                bst.create(spec, chunks, partition.spec_edges(spec), partition.chunk_grid(spec, chunks))
                bst.set_attrs(plan=plan)

            _compute(client, spec, bst, planner, opts, summary, submit_kw, prepare=None if made else create)
    summary.complete = bool(bst.done_mask().all())
    if summary.complete:
        old_attrs = st.attrs()
        entry = dict(op=op, from_spec_hash=old_attrs.get("spec_hash"), added=growth["added"],
                     walkers=growth["walkers"], **(growth.get("extra") or {}))
        bst.set_attrs(completed=store.now(), created=old_attrs.get("created", store.now()),
                      history=grow.record(old_attrs, entry), grow_complete=True)
        grow.swap(st, built)
    return summary


def refine(store_path, *, targets: dict | None = None, budget: int | None = None, allowed: dict | None = None,
           max_walkers: int = 10_000_000, max_walker_steps: float = float("inf"), add_T: int = 0,
           t_range: tuple[float, float] | None = None, rounds: int = 8, opts: RunOptions | None = None) -> list[dict]:
    """`escape-sweep refine` from Python: see `refine_store`; targets default to
    {"log10_escape_time": 0.03} (95% half-width in decades); allowed maps an axis to its eligible values."""
    from .refine import RefineOptions, check_targets

    ropts = RefineOptions(targets=check_targets(targets or {"log10_escape_time": 0.03}), budget=budget,
                          allowed=allowed, max_walkers=max_walkers, max_walker_steps=max_walker_steps,
                          add_T=add_T, t_range=t_range, rounds=rounds)
    return refine_store(store_path, ropts, opts)


def refine_store(where, ropts, opts: RunOptions | None = None) -> list[dict]:
    """Refine a complete cube in rounds (`refine.py`): each round adds walkers to the cells whose
    interval is wider than the target and, with add_T, T values where ln tau(1/T) is least resolved;
    rounds stop when every eligible cell meets its target or a cap is reached. Returns one dict per
    round (cells refined, walkers and T added, walker-steps spent, worst half-width / target left)."""
    from ..errors import NotACube
    from . import refine
    from .lock import StoreLock, timeout_from_env

    opts = opts or RunOptions()
    check_backend(opts)
    reports: list[dict] = []
    with StoreLock(where, timeout=timeout_from_env()) as lock:
        st = store.Store(where, guard=lock.check)
        note = grow.recover(st)
        if note:
            print(f"escape-sweep: {note}", file=sys.stderr)
        if not st.is_cube():
            raise NotACube(f"{where}: not an escape-sweep cube (no such store, or not made by escape-sweep)")
        spec = grow.old_spec(st)
        if spec is None or not st.done_mask().all():
            raise InputError(f"{where}: the store is not complete; finish it with `escape-sweep run` first")
        spent = 0.0
        for r in range(1, ropts.rounds + 1):
            ds = st.open_dataset().load()
            new, target, summ = refine.next_round(ds, spec, ropts, spent)
            if new is None:
                reports.append(dict(round=r, stopped=summ["stop"], worst_ratio=summ["worst"],
                                    cells_unbounded=summ["unbounded"], cells_above_target=summ["unmet"],
                                    walker_steps=0, cells_refined=0))
                break
            line = (f"round {r}: {summ['cells_refined']} cells refined, +{summ['walkers_added']} walkers"
                    f"{', T += ' + ', '.join(f'{t:g}' for t in summ['T_added']) if summ['T_added'] else ''}")
            growth = dict(old=spec, added={"T": summ["T_added"]} if summ["T_added"] else {},
                          walkers=[spec.walkers, spec.walkers], extra=dict(summary=line))
            s = _grow(new, st, growth, replace(opts, progress=False), target=target, op="refine")
            spent += s.walker_steps
            spec = new
            after, _ = refine.half_widths(st.open_dataset().load(), ropts)
            ok = refine.eligible(st.open_dataset(), ropts)
            worst = refine.worst_left(after, ok)
            report = dict(round=r, cells_refined=summ["cells_refined"], walkers_added=summ["walkers_added"],
                          T_added=summ["T_added"], walker_steps=int(s.walker_steps), worst_ratio=worst["worst"],
                          cells_unbounded=worst["unbounded"], cells_above_target=int((after[ok] > 1).sum()),
                          capped=summ["capped"], cells=int(spec.n_cells), finite_cells=worst["bounded"])
            reports.append(report)
            if opts.progress:
                w = "none bounded yet" if worst["worst"] is None else f"{worst['worst']:.3g}"
                k = worst["unbounded"]
                none = f" ({k} cell{'s' * (k != 1)} without escapes: no bounded interval yet)" if k else ""
                print(f"escape-sweep: {line}; {s.walker_steps:.3g} walker-steps; worst half-width / target left "
                      f"{w}{none}; {report['cells_above_target']} cells above target", file=sys.stderr)
            if spent >= ropts.max_walker_steps:
                break
    return reports


LOCAL_CLUSTERS = ("local", "local-cuda")  # embedded clusters: their workers run on this host


def local_threads(opts: RunOptions) -> int | None:
    """Worker threads of the embedded local cluster (chunk_shape cuts at least two tasks per thread);
    None for other clusters (their size is not known before connecting)."""
    if opts.cluster.scheduler or opts.cluster.cluster != "local":
        return None
    return opts.cluster.n_workers or os.cpu_count() or 1


def sized_cluster(spec: Spec, opts: RunOptions) -> ClusterOptions:
    """The cluster options with the sweep's estimated one-core work (seconds), from which the local
    cluster chooses threads (small sweeps) or processes (clusters.local_processes)."""
    return replace(opts.cluster, work_seconds=spec.n_cells * partition.cell_seconds(spec, partition.kernel_rate(opts.backend)))


def check_backend(opts: RunOptions) -> None:
    """InputError before anything starts: an unknown backend, or cuda on this host's workers
    without a usable GPU here."""
    backends.unavailable_reason(opts.backend)  # unknown name -> InputError
    if opts.backend == "cuda" and not opts.cluster.scheduler and opts.cluster.cluster in LOCAL_CLUSTERS:
        backends.require("cuda")


def backend_submit_options(client, opts: RunOptions) -> dict:
    """Extra `client.submit` keywords for the backend: cuda tasks ask for a worker's `GPU` resource
    where workers advertise one (local-cuda, GPU batch jobs, `dask worker --resources GPU=1`)."""
    if opts.backend != "cuda":
        return {}
    if not opts.cluster.scheduler and opts.cluster.cluster not in LOCAL_CLUSTERS:
        return {"resources": {"GPU": 1}}  # batch jobs start later; their GPU yaml gives --resources GPU=1
    workers = client.scheduler_info().get("workers", {}).values()
    if any((w.get("resources") or {}).get("GPU") for w in workers):
        return {"resources": {"GPU": 1}}
    if not opts.cluster.scheduler:
        return {}  # the embedded cluster's workers share this host's GPU (checked by check_backend)
    raise InputError(f"--backend cuda: no worker of {opts.cluster.scheduler} advertises a GPU resource "
                     "(start GPU workers with `dask worker ... --resources GPU=1`, or use --backend auto)")


def repair(st: store.Store, verbose: bool = True) -> int:
    """Clear the completion record of every chunk `verify` finds damaged (the resume that follows
    recomputes exactly those); returns how many."""
    report = st.verify()
    bad = [idx for idx, _ in report["damaged"]]
    if bad:
        st.clear_done(bad)
    if verbose or bad:
        print(f"escape-sweep: repair: {len(bad)} damaged chunk(s) of {report['checked'] + len(bad)} "
              f"checked will be recomputed", file=sys.stderr)
    return len(bad)


def _compute(client, spec: Spec, st: store.Store, planner, opts: RunOptions, summary: Summary,
             submit_kw: dict | None = None, prepare=None) -> None:
    """Submit the sweep ahead (bounded); write each chunk the planner says is finished.

    `prepare` (creating the store) runs once the first batch of tasks is submitted, so the workers
    compute while the client builds the store; nothing is written to it before."""
    from distributed import as_completed

    edges = partition.spec_edges(spec)
    store.warm_up()  # what writing needs is imported in the background while the first tasks run
    cell_work = partition.cell_cost(spec)
    ncells = lambda slices: math.prod(sl.stop - sl.start for sl in slices)  # noqa: E731
    work = {tuple(i): ncells(partition.chunk_slices(spec, planner.chunks, i)) * cell_work for i in planner.pending}
    progress = _Progress(planner.total, sum(work.values()), opts.progress, sampled=spec.method != "markov")
    done_work = 0.0
    summary.dashboard = dashboard_link(client)
    if opts.progress:
        n_tasks = getattr(planner, "n_tasks", None)
        tasks = f" ({n_tasks} tasks: the dashboard's bar {TaskNames(spec, planner.chunks).prefix!r})" \
            if n_tasks is not None else ""
        print(f"escape-sweep: {spec.name}: {planner.total} chunks{tasks} to compute "
              f"({summary.chunks_done_before} already done) on {_where(client)}", file=sys.stderr)
        print(f"escape-sweep: dashboard {summary.dashboard}", file=sys.stderr, flush=True)
        if routed():
            print(f"escape-sweep: messages of Dask and its libraries go to {routed()}", file=sys.stderr, flush=True)
    nthreads = sum(client.nthreads().values()) or 1
    window = 2 * nthreads + 2
    summary.workers, summary.window = nthreads, window
    t_start = time.perf_counter()
    names = TaskNames(spec, planner.chunks)
    ac = as_completed()
    markers = []  # one tiny task per chunk task, kept to the end: the dashboard's bar for the sweep
    with_markers = nthreads <= MARKER_MAX_THREADS
    ahead = [0, 0]  # tasks, cells submitted and not yet returned

    def submit(n: int) -> None:
        for t in planner.ask(n):
            fut = client.submit(run_task, t, key=names.compute(t), retries=opts.retries, pure=False,
                                **(submit_kw or {}))
            if with_markers:  # no GPU slot needed
                markers.append(client.submit(task_done, fut, key=names.done(t), pure=False))
            ac.add(fut)
            summary.tasks_submitted += 1
            ahead[0] += 1
            ahead[1] += math.prod(t.shape)

    def top_up() -> None:
        """Submit the sweep ahead, in batches, so the scheduler (and its dashboard) knows all of it;
        bounded by LOOKAHEAD_TASKS tasks and LOOKAHEAD_CELLS cells so memory stays bounded."""
        room = min(SUBMIT_BATCH, LOOKAHEAD_TASKS - ahead[0])
        if room > 0 and ahead[1] < LOOKAHEAD_CELLS:
            submit(room)

    pop_ready = getattr(planner, "pop_ready", lambda: [])

    def write(chunk) -> None:
        nonlocal done_work
        writer.add(chunk.index, chunk.slices, chunk.counts, chunk.walkers, backends=chunk.backends or ("carried over",))
        summary.chunks_computed += 1
        done_work += work.get(tuple(chunk.index), 0.0)

    submit(window)
    top_up()  # the scheduler, and so the dashboard's bar, knows the sweep before anything else happens
    if prepare is not None:
        prepare()
    writer = st.writer(edges, spec.method)  # buffers chunks per storage block; closed (flushed) below
    for chunk in pop_ready():
        write(chunk)

    def idle() -> None:  # no result ready: buffered results still reach the disk, progress lines still come
        writer.flush_due()
        progress.update(summary.chunks_computed, summary.walker_steps, done_work)

    try:
        for fut in _as_ready(ac, idle):
            res = fut.result()
            fut.release()
            ahead[0] -= 1
            ahead[1] -= math.prod(res["n_walkers"].shape)
            summary.walker_steps += res["walker_steps"]
            summary.kernel_seconds += res["kernel_seconds"]
            chunk = planner.tell(res)
            if chunk is not None:
                write(chunk)
            top_up()
            for chunk in pop_ready():
                write(chunk)
            _note_jobs(client, summary)
            progress.update(summary.chunks_computed, summary.walker_steps, done_work)
        progress.update(summary.chunks_computed, summary.walker_steps, done_work, force=True)
        summary.compute_seconds = time.perf_counter() - t_start
    finally:
        writer.close()  # what is buffered is written and recorded, on an interrupt too
        _note_jobs(client, summary)
        progress.close()


def _as_ready(ac, idle, poll: float = 0.02):
    """The futures of `ac` (a distributed.as_completed) as they finish; `idle()` runs every `poll`
    seconds while none is ready (as_completed itself blocks without a timeout)."""
    while not ac.is_empty():
        while not ac.has_ready() and not ac.is_empty():
            idle()
            time.sleep(poll)
        if ac.has_ready():
            yield next(ac)


LOOKAHEAD_TASKS = 20_000  # tasks the scheduler holds ahead (the dashboard shows the whole sweep up to this)
LOOKAHEAD_CELLS = 4_000_000  # ... and cells: a Task is small, but its result and state grow with its cells
SUBMIT_BATCH = 1_000  # tasks submitted between two results, so results keep flowing while submitting
MARKER_MAX_THREADS = 256  # above this many worker threads no markers: they would double the scheduler's work


class TaskNames:
    """Dask keys a user recognises on the dashboard: the sweep's name, then what the task computes.

    `{name}-compute-T=0.005..0.012,batch=1,depth=1,width=0.1-block=0-{hash}` computes a chunk;
    `{name}-T=...` is its marker, a task that returns None once the chunk is back and is kept
    until the run ends, so the dashboard's progress bar `{name}` reads "chunks done / chunks of
    the sweep" (Dask groups keys by `key_split`: the words before the first one with a digit)."""

    def __init__(self, spec: Spec, chunks):
        from dask.utils import key_split

        self.spec, self.chunks = spec, tuple(chunks)
        name = spec.name if key_split(f"{spec.name}-T=1") == spec.name else spec.name.replace("-", "_")
        # the spec's hash and a per-run token: a resumed or refined run never meets an old key
        self.prefix, self.tag = name, f"{spec.content_hash[:8]}{os.urandom(3).hex()}"

    def label(self, task) -> str:
        """The chunk's coordinate ranges, e.g. T=0.005..0.012,batch=1,depth=1,width=0.1-block=0."""
        sl = partition.chunk_slices(self.spec, self.chunks, task.chunk)
        parts = []
        for axis, s in zip(("T", "batch_size", "depth", "width"), sl):
            vals = self.spec.axes[axis]
            lo, hi = vals[s.start], vals[s.stop - 1]
            parts.append(f"{'batch' if axis == 'batch_size' else axis}={lo:g}" + (f"..{hi:g}" if hi != lo else ""))
        block = f"-block={task.block}" if task.n_blocks > 1 else ""
        return ",".join(parts) + block + f"-{self.tag}"

    def compute(self, task) -> str:
        return f"{self.prefix}-compute-{self.label(task)}"

    def done(self, task) -> str:
        return f"{self.prefix}-{self.label(task)}"


def _where(client) -> str:
    """Where the tasks run: the scheduler's address, or the in-process threads of this run."""
    addr = str(client.scheduler.address)
    if addr.startswith("inproc://"):
        return f"{sum(client.nthreads().values())} worker threads in this process"
    return addr


def _note_jobs(client, summary):
    """Batch jobs requested / running / pending now (dask-jobqueue clusters only)."""
    summary.jobs = job_counts(client)
    if summary.jobs:
        summary.jobs_running_max = max(summary.jobs_running_max, summary.jobs[1])
