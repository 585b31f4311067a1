"""The `escape-sweep` command line (argparse). Exit codes: 0 done, 2 bad input, 1 run-time failure,
130 interrupted (finished chunks are kept; the same `run` resumes).

Bad input is one line on stderr (file, key, value, what is allowed) and exit 2 before any compute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

from .errors import InputError, RunError


# ---------------------------------------------------------------- run / validate
def _load(args):
    from .sweep.spec import load_spec

    return load_spec(args.spec, output=getattr(args, "output", None), yes=getattr(args, "yes", False))


def _cluster_options(args):
    from .deploy import ClusterOptions, make_security

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be >= 1")
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: must be >= 1")
    if args.scheduler is not None and not re.match(r"^[a-z][a-z0-9+.-]*://[^\s/]+", args.scheduler):
        raise InputError(f"--scheduler {args.scheduler!r}: must be an address with a scheme, "
                         "like tcp://host:8786 or tls://host:8786")
    if args.scheduler and args.cluster != "local":
        raise InputError(f"--scheduler {args.scheduler} and --cluster {args.cluster}: give one or the other")
    security = make_security(args.tls_ca_file, args.tls_cert, args.tls_key)
    if args.jobqueue_config and args.cluster in ("local", "local-cuda"):
        raise InputError(f"--jobqueue-config {args.jobqueue_config}: only with --cluster slurm or pbs")
    return ClusterOptions(scheduler=args.scheduler, cluster=args.cluster, n_workers=args.workers,
                          jobs=args.jobs, security=security, jobqueue_config=args.jobqueue_config)


def _run(args) -> int:
    spec = _load(args)
    _check_task_seconds(args.task_seconds)
    if args.retries < 0:
        raise InputError(f"--retries {args.retries}: must be >= 0")
    if args.repair and args.overwrite:
        raise InputError("--repair and --overwrite: give one or the other")
    from .sweep.runner import RunOptions, run_sweep  # numba, dask: only once the input is good

    opts = RunOptions(cluster=_cluster_options(args), overwrite=args.overwrite, task_seconds=args.task_seconds,
                      retries=args.retries, progress=not args.quiet, backend=args.backend,
                      repair=args.repair, library_log=_library_log(args, args.output or spec.output, spec.name))
    try:
        summary = run_sweep(spec, opts, output=args.output)
    except KeyboardInterrupt:
        path = args.output or spec.output
        if _is_cube(path):
            print(f"\nescape-sweep: interrupted; finished chunks are kept in {path}: "
                  f"`escape-sweep status {path}` shows them, the same `run` resumes", file=sys.stderr)
        else:
            print("\nescape-sweep: interrupted before the store was created; nothing was written", file=sys.stderr)
        return 130
    except (InputError, RunError):
        raise
    except Exception as e:  # a failure at run time: one line, the store keeps what was finished
        path = args.output or spec.output
        kept = (f"; finished chunks are kept in {path} and the same `run` resumes" if _is_cube(path)
                else "; nothing was written")
        print(f"escape-sweep: run failed: {type(e).__name__}: {e}{kept}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


def _check_task_seconds(value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"--task-seconds {value}: must be a finite number of seconds > 0")


def _is_cube(path) -> bool:
    from .sweep.store import is_cube

    return is_cube(path)


def _validate(args) -> int:
    """Check each spec; print grid, chunking, tasks and a work bound. Exit 2 at the first bad one."""
    from .sweep.spec import load_spec

    _check_task_seconds(args.task_seconds)
    specs = [(path, load_spec(path, output=args.output, yes=args.yes)) for path in args.spec]
    from .sweep import partition  # numba: only once every spec is good

    reports = []
    from .model.axes import samples

    for path, spec in specs:
        solver_seconds = float(partition.solver_seconds(spec).sum())
        chunks = partition.chunk_shape(spec, args.task_seconds)
        n_chunks = math.prod(partition.chunk_grid(spec, chunks))
        blocks = len(partition.walker_blocks(spec, chunks, args.task_seconds))
        reports.append(dict(
            spec=path, name=spec.name, output=args.output or spec.output, method=spec.method,
            axes={a: len(v) for a, v in spec.axes.items()}, cells=spec.n_cells, walkers_per_cell=spec.walkers,
            chunk_shape=list(chunks), chunks=n_chunks, tasks=n_chunks * blocks,
            walker_steps_upper_bound=spec.walker_steps_bound,
            work_upper_bound=spec.work_bound,  # max(steps) in rounds of 64, x ceil(batch_size / 64) words
            estimated_core_seconds_upper_bound=(spec.work_bound if samples(spec.method) else 0) / partition.KERNEL_RATE
            + solver_seconds,  # the kernel's bound plus the exact solver's estimate (markov.solve_seconds)
            estimated_solver_core_seconds=solver_seconds,
            walkers_per_task_max=min(spec.walkers, partition.walker_blocks(spec, chunks, args.task_seconds)[0][1]),
            spec_hash=spec.content_hash))
        if args.store:
            from .sweep import grow, store

            plan = grow.dry_run(store.Store(args.store), spec)
            reports[-1]["store"] = args.store
            reports[-1].update({f"store_{k}": v for k, v in plan.items()})
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        print("\n\n".join(_validate_text(info) for info in reports))
    return 0


def _count(n) -> str:
    """A count as a person writes it: 12,000 (never 12000.0); big ones also as 1.2e+13."""
    n = float(n)
    if n.is_integer() and abs(n) < 1e12:
        return f"{int(n):,}"
    return f"{n:.3g}"


def _validate_text(info: dict) -> str:
    """validate's report of one spec as lines a person reads (`--json` gives the raw numbers)."""
    axes = " x ".join(f"{a} {n}" for a, n in info["axes"].items())
    solver = info["method"] == "markov"
    secs = info["estimated_core_seconds_upper_bound"]
    lines = [f"{info['spec']}: spec '{info['name']}' is valid (method {info['method']}, spec hash {info['spec_hash'][:12]})",
             f"  output:  {info['output']}",
             f"  grid:    {axes} = {_count(info['cells'])} cells, "
             + ("solved by the exact solver (no walkers)" if solver else f"{_count(info['walkers_per_cell'])} walkers each"),
             f"  chunks:  {_count(info['chunks'])} of shape {' x '.join(map(str, info['chunk_shape']))} "
             f"(T x batch_size x depth x width); {_count(info['tasks'])} tasks"
             + ("" if solver else f" of at most {_count(info['walkers_per_task_max'])} walkers")]
    if not solver:
        lines.append(f"  work:    at most {_count(info['walker_steps_upper_bound'])} walker-steps "
                     f"({_count(info['work_upper_bound'])} kernel steps in rounds of 64), at most "
                     + (f"{secs:.2g}" if secs < 10 else _count(round(secs))) + " core-seconds")
    solve = info.get("estimated_solver_core_seconds") or 0
    if solve:
        lines.append(f"  solver:  about {solve:.2g} core-seconds for the exact solver's {_count(info['cells'])} cells "
                     "(markov.solve_seconds, calibrated against measured solves; wall = this / workers)")
    if "store" in info:
        plan = {k.removeprefix("store_"): v for k, v in info.items() if k.startswith("store_")}
        action = plan.pop("action", "?")
        words = []
        for k, v in plan.items():
            if k == "added" and isinstance(v, dict):
                v = "; ".join(f"{a} += {', '.join(f'{x:g}' for x in vals)}" for a, vals in v.items()) or "nothing"
            elif k == "walkers" and isinstance(v, (list, tuple)):
                v = f"{_count(v[0])} -> {_count(v[1])}"
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                v = _count(v)
            words.append(f"{k.replace('_', ' ')} {v}")
        act = {"nothing (complete)": "is complete: nothing to compute", "create": "would be created",
               "resume": "would be resumed", "grow": "would grow"}.get(action, f"would {action}")
        lines.append(f"  store:   {info['store']} {act}" + (f" ({', '.join(words)})" if words else ""))
    return "\n".join(lines)


def _refine(args) -> int:
    """Refine a complete cube in rounds; one line per round on stderr, a summary on stdout."""
    import numpy as np

    from .analysis.commands import parse_range
    from .model.axes import CELL_AXES
    from .sweep.refine import RefineOptions, check_targets

    targets = {}
    for item in args.target or ["log10_escape_time=0.03"]:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--target {item}: expected VAR=HALF_WIDTH (e.g. log10_escape_time=0.03)")
        targets[name] = value
    targets = check_targets(targets)
    if args.max_walkers < 1:
        raise InputError(f"--max-walkers {args.max_walkers}: must be >= 1")
    if not args.max_walker_steps > 0:
        raise InputError(f"--max-walker-steps {args.max_walker_steps}: must be > 0")
    if args.add_T < 0 or args.rounds < 1:
        raise InputError(f"--add-T {args.add_T} / --rounds {args.rounds}: need --add-T >= 0 and --rounds >= 1")
    _check_task_seconds(args.task_seconds)
    t_range = parse_range(args.t_range) if args.t_range else None
    allowed = None
    if args.sel or args.range:
        from .analysis.select import apply_range, apply_sel, parse_sel

        ds = _open(args.store)
        sub = apply_range(apply_sel(ds[["n_walkers"]], parse_sel(args.sel)), args.range)
        allowed = {a: [v.item() for v in np.atleast_1d(sub[a].values)] for a in CELL_AXES}
    ropts = RefineOptions(targets=targets, budget=args.budget, allowed=allowed, max_walkers=args.max_walkers,
                          max_walker_steps=args.max_walker_steps, add_T=args.add_T, t_range=t_range,
                          rounds=args.rounds)
    from .sweep.runner import RunOptions, refine_store

    opts = RunOptions(cluster=_cluster_options(args), task_seconds=args.task_seconds, retries=args.retries,
                      progress=not args.quiet, backend=args.backend,
                      library_log=_library_log(args, args.store,
                                               os.path.splitext(os.path.basename(str(args.store).rstrip("/")))[0]))
    try:
        rounds = refine_store(args.store, ropts, opts)
    except KeyboardInterrupt:
        print("\nescape-sweep: interrupted; the store is as the last finished round left it, and the same "
              "`refine` resumes the round in progress", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(rounds, indent=1))
    else:
        spent = sum(r["walker_steps"] for r in rounds)
        done = [r for r in rounds if "stopped" not in r]
        last = rounds[-1] if rounds else {"cells_above_target": 0}
        why = last.get("stopped") or f"{len(done)} rounds (--rounds)"
        state = ("targets met" if last["cells_above_target"] == 0 else
                 f"{last['cells_above_target']} cells still above target; stopped by {why}")
        print(f"refined {args.store}: {len(done)} rounds, {spent:.4g} walker-steps; {state}")
    return 0


# ---------------------------------------------------------------- status / query
def _open(path):
    """Open a store for query / status / verify, or one line saying which failure it was (exit 2)."""
    from .analysis.load import check_store, not_a_cube, unreadable
    from .sweep import store

    check_store(path)
    try:
        ok = store.is_cube(path)
    except Exception as e:  # noqa: BLE001 - a store whose metadata cannot be read
        raise unreadable(path, e) from None
    if not ok:
        raise not_a_cube(path, "a Zarr store without the escape-sweep format attribute")
    try:
        return store.open_cube(path)
    except Exception as e:  # noqa: BLE001
        raise unreadable(path, e) from None


def _status(args) -> int:
    from .model.axes import CELL_AXES
    from .sweep import store

    ds = _open(args.store)
    st = store.Store(args.store)
    problems = st.record_problems()
    try:
        done = st.done_mask()
    except Exception:
        raise InputError(f"{args.store}: escape-sweep cube without a readable completion record "
                         f"({store.PROGRESS}/done): damaged; `escape-sweep run SPEC --overwrite` rebuilds it") from None
    chunks = tuple(ds.attrs["chunk_shape"])
    total, n_done = done.size, int(done.sum())
    missing = [tuple(int(i) for i in idx) for idx in zip(*(~done).nonzero())]
    lines = [f"store: {args.store}", f"name: {ds.attrs.get('name')}  method: {ds.attrs.get('method')}  "
             f"seed: {ds.attrs.get('seed')}  spec hash: {str(ds.attrs.get('spec_hash'))[:12]}",
             f"created: {ds.attrs.get('created')}  completed: {ds.attrs.get('completed') or '-'}",
             "grid: " + ", ".join(f"{d}={ds.sizes[d]}" for d in ds["n_walkers"].dims),
             f"chunks: {n_done}/{total} done ({100.0 * n_done / total:.1f}%), chunk shape {list(chunks)} over "
             f"{', '.join(CELL_AXES)}"]
    cells_done = 0
    for idx in zip(*done.nonzero()):
        n = 1
        for i, c, size in zip(idx, chunks, (ds.sizes[d] for d in CELL_AXES)):
            n *= min(c, size - i * c)
        cells_done += n
    n_cells = 1
    for d in CELL_AXES:
        n_cells *= ds.sizes[d]
    names = [v for v in ds.data_vars if set(CELL_AXES) <= set(ds[v].dims)]
    lines.append(f"variables: {len(names)} ({', '.join(names)}), each {cells_done}/{n_cells} cells written "
                 f"({100.0 * cells_done / n_cells:.1f}%)")
    if missing:
        show = missing[: args.max_missing]
        lines.append(f"missing chunks ({len(missing)}):")
        for idx in show:
            sl = dict(zip(CELL_AXES, (slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))))
            rng = ", ".join(f"{d}={_fmt_range(ds[d].values[s])}" for d, s in sl.items())
            lines.append(f"  {list(idx)}: {rng}")
        if len(missing) > len(show):
            lines.append(f"  ... {len(missing) - len(show)} more")
        lines.append("state: incomplete -- run the same spec again to resume")
    elif not problems:
        lines.append("state: complete (record checked; `escape-sweep verify` re-reads the data)")
    for p in problems:
        lines.append(f"damaged: {p}")
    if problems:
        lines.append("state: damaged -- `escape-sweep verify` lists the chunks, `run SPEC --repair` recomputes them")
    from .sweep.grow import history

    for h in history(ds.attrs):
        what = "; ".join(f"{a} += {', '.join(f'{v:g}' for v in vals)}" for a, vals in (h.get("added") or {}).items())
        w = h.get("walkers") or [None, None]
        more = f"; walkers {w[0]} -> {w[1]}" if w[0] != w[1] else ""
        extra = f"; {h['summary']}" if h.get("summary") else ""
        lines.append(f"history: {h.get('at', '?')} {h.get('op', '?')}: {what or 'no new values'}{more}{extra}")
    computed_by = st.backend_counts()
    if computed_by:
        lines.append("computed by: " + ", ".join(f"{k} {v} chunks" for k, v in computed_by.items()))
    print("\n".join(lines))
    return 1 if problems else 0


def _verify(args) -> int:
    """Re-read every done chunk against its digest and check its counts. Exit 1 if anything is damaged."""
    from .sweep import store

    _open(args.store)
    st = store.Store(args.store)
    rep = st.verify()
    lines = [f"store: {args.store}"]
    lines += [f"damaged: {p}" for p in rep["record"]]
    lines.append(f"chunks checked: {rep['checked']}, damaged: {len(rep['damaged'])}"
                 + ("" if rep["digests"] else " (a store made before digests: counts checked, values not)"))
    for idx, why in rep["damaged"][: args.max_damaged]:
        lines.append(f"  {list(idx)}: {why}")
    if len(rep["damaged"]) > args.max_damaged:
        lines.append(f"  ... {len(rep['damaged']) - args.max_damaged} more")
    bad = rep["damaged"] or rep["record"]
    lines.append("state: damaged -- `escape-sweep run SPEC --repair` recomputes the damaged chunks" if bad
                 else "state: ok")
    print("\n".join(lines))
    return 1 if bad else 0


def _fmt_range(vals) -> str:
    vals = list(vals)
    return f"{vals[0]:g}" if len(vals) == 1 else f"{vals[0]:g}..{vals[-1]:g}"


def _query(args) -> int:
    from .model.axes import AXES

    ds = _open(args.store)
    names = args.var or ["p_escape", "log10_escape_time"]
    for v in names:
        if v not in ds.data_vars:
            raise InputError(f"--var {v}: no such variable; the cube has {', '.join(sorted(ds.data_vars))}")
    from .analysis.select import apply_range, apply_sel, parse_sel

    sub = apply_range(apply_sel(ds[names], parse_sel(args.sel)), args.range)
    try:
        sub = sub.compute()
    except Exception as e:
        raise RunError(f"{args.store}: cannot read the cube ({type(e).__name__}: {str(e)[:100]}): damaged? "
                       "`escape-sweep verify` checks it") from None

    df = sub.to_dataframe().reset_index()
    cols = [d for d in AXES if d in df.columns] + [c for c in df.columns if c not in AXES and c in sub.dims]
    df = df[cols + names]
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        print(df.to_string(index=False))
    return 0


def _bench(args) -> int:
    if getattr(args, "scale", False):
        from . import scale

        return scale.main(args)
    from . import bench

    return bench.main(args)


# ---------------------------------------------------------------- parser
def _add_run_options(r):
    r.add_argument("spec", help="sweep spec (TOML)")
    r.add_argument("--output", "-o", help="store path (default: the spec's [output] path)")
    r.add_argument("--task-seconds", type=float, default=2.0, help="target kernel seconds per task (default 2)")
    r.add_argument("--yes", action="store_true", help="accept a grid beyond the sanity limits")


def _add_worker_options(r, clusters, backend_names) -> None:
    """Where workers come from and how tasks run: shared by run and refine."""
    r.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://host:8786, tls://...)")
    r.add_argument("--cluster", default="local", choices=clusters,
                   help="where workers come from when no --scheduler is given (default: local)")
    r.add_argument("--workers", type=int, help="local cluster: worker processes (default: one per core)")
    r.add_argument("--jobs", type=int, help="batch clusters: number of jobs to scale to")
    r.add_argument("--jobqueue-config", metavar="YAML",
                   help="batch clusters: dask-jobqueue settings (default: $ESCAPE_SWEEP_JOBQUEUE, then "
                        "cluster/<kind>/jobqueue.yaml)")
    r.add_argument("--retries", type=int, default=2, help="re-runs of a task that raised (default 2)")
    r.add_argument("--tls-ca-file", help="CA certificate (PEM) for TLS to the scheduler")
    r.add_argument("--tls-cert", help="client certificate (PEM)")
    r.add_argument("--tls-key", help="client private key (PEM)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    r.add_argument("--backend", default="cpu", choices=backend_names,
                   help="kernel backend: cpu, cuda (NVIDIA GPUs; workers with a GPU resource), auto (cuda on "
                        "workers that have a GPU, else cpu); the numbers are the same (default: cpu)")


class _Parser(argparse.ArgumentParser):
    """No prefix matching of long options (`--over` is not `--overwrite`), here and in every subcommand."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):
        """One line, exit code 2 (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .deploy import cluster_names
    from .model.backends import choices as backend_choices

    p = _Parser(prog="escape-sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run, resume or grow a sweep into a Zarr cube")
    _add_run_options(r)
    _add_worker_options(r, cluster_names(), backend_choices())
    r.add_argument("--overwrite", action="store_true",
                   help="replace an escape-sweep store made from a different spec (never anything else)")
    r.add_argument("--repair", action="store_true",
                   help="verify the store of this spec first and recompute the chunks found damaged")
    r.set_defaults(func=_run)

    f = sub.add_parser("refine", help="add walkers where intervals are wide, and T values where ln tau(1/T) "
                                      "is least resolved, in rounds",
                       description="Refine a complete cube in place (see DESIGN.md, grow and refine).")
    f.add_argument("store", metavar="STORE")
    f.add_argument("--target", nargs="+", action="extend", metavar="VAR=HALF_WIDTH",
                   help="95%% half-width to reach: log10_escape_time=DECADES and/or p_escape=P "
                        "(default log10_escape_time=0.03)")
    f.add_argument("--budget", type=int, help="step budget whose intervals count (default: the largest)")
    f.add_argument("--sel", nargs="+", action="extend", default=[], metavar="DIM=VALUE",
                   help="refine only these coordinate values (nearest within 1%%)")
    f.add_argument("--range", nargs="+", action="extend", default=[], metavar="DIM=LO:HI",
                   help="refine only LO <= DIM <= HI")
    f.add_argument("--max-walkers", type=int, default=10_000_000, help="walkers per cell at most (default 1e7)")
    f.add_argument("--max-walker-steps", type=float, default=float("inf"),
                   help="walker-steps this command may spend over all rounds (default: no cap)")
    f.add_argument("--add-T", dest="add_T", type=int, default=0, metavar="N",
                   help="T values to add per round where ln tau against 1/T is least resolved (default 0)")
    f.add_argument("--T-range", dest="t_range", metavar="LO:HI", help="refine and add T only in LO <= T <= HI")
    f.add_argument("--rounds", type=int, default=8, help="rounds at most (default 8)")
    f.add_argument("--task-seconds", type=float, default=2.0, help="target kernel seconds per task (default 2)")
    f.add_argument("--json", action="store_true", help="print the rounds as JSON")
    _add_worker_options(f, cluster_names(), backend_choices())
    f.set_defaults(func=_refine)

    v = sub.add_parser("validate", help="check specs; print grid size, tasks and work, compute nothing")
    v.add_argument("spec", nargs="+", help="sweep spec(s) (TOML)")
    v.add_argument("--output", "-o", help="store path (default: the spec's [output] path)")
    v.add_argument("--task-seconds", type=float, default=2.0, help="target kernel seconds per task (default 2)")
    v.add_argument("--yes", action="store_true", help="accept a grid beyond the sanity limits")
    v.add_argument("--json", action="store_true")
    v.add_argument("--store", metavar="STORE", help="also say what `run` would do to this store: create, resume, "
                                                     "or grow it (new cells, cells gaining walkers, work bound)")
    v.set_defaults(func=_validate)

    s = sub.add_parser("status", help="what a store holds: chunks done, missing, provenance")
    s.add_argument("store", metavar="STORE")
    s.add_argument("--max-missing", type=int, default=20, help="missing chunks to list (default 20)")
    s.set_defaults(func=_status)

    vf = sub.add_parser("verify", help="re-read every finished chunk: digests and count consistency (exit 1 if damaged)")
    vf.add_argument("store", metavar="STORE")
    vf.add_argument("--max-damaged", type=int, default=20, help="damaged chunks to list (default 20)")
    vf.set_defaults(func=_verify)

    q = sub.add_parser("query", help="print variables of a cube as a table, CSV or JSON")
    q.add_argument("store", metavar="STORE")
    q.add_argument("--var", nargs="+", action="extend", help="variables (default p_escape, log10_escape_time)")
    q.add_argument("--sel", nargs="+", action="extend", default=[], metavar="DIM=VALUE",
                   help="nearest coordinate value (within 1%% for floats, exact for integers); DIM=V1,V2 keeps several")
    q.add_argument("--range", nargs="+", action="extend", default=[], metavar="DIM=LO:HI",
                   help="keep LO <= DIM <= HI (either end may be empty)")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.set_defaults(func=_query)

    b = sub.add_parser("bench", help="kernel throughput (walker-steps/s) next to numpy and scalar numba")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--backend", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: the GPU kernel next to the CPU kernel on one core (default: cpu)")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes (default 1 8 64)")
    b.add_argument("--min-seconds", type=float, default=0.3, help="minimum time of one timed call")
    b.add_argument("--sweep", action="store_true",
                   help="sweeps end to end against joblib / psweep contenders: wall time and peak RSS")
    b.add_argument("--big", action="store_true", help="with --sweep: add the 1e6-cell grid")
    b.add_argument("--out", help="with --sweep: also write the result as JSON to this file")
    b.add_argument("--scaling", action="store_true",
                   help="with --sweep: scaling 1 vs 2 workers, steps-axis cost, start-up, large-grid client memory")
    b.add_argument("--sweep-seconds", type=float, default=24.0, help="kernel seconds of the scaling sweep")
    b.add_argument("--grid-cells", type=int, default=100_000, help="cells of the large-grid run (0: skip)")
    b.add_argument("--scale", action="store_true",
                   help="many workers: the client's chunk results/s and store file count on 10,000 task chunks "
                        "(vs one file per chunk), and simulated clusters of 4-32 sleeping workers "
                        "(python -m pipeline.scale --help for the sizes)")
    b.set_defaults(func=_bench)

    from .analysis.commands import add_parsers

    add_parsers(sub)
    for name, wrap in (("fit", _fit_locked), ("plot", _file_output), ("report", _file_output)):
        if name in sub.choices:
            sub.choices[name].set_defaults(func=wrap(sub.choices[name].get_default("func")))
    return p


def _fit_locked(func):
    """`fit` writes the store's fits/ group: under the store lock, like `run` (a live run refuses it)."""

    def fit(args) -> int:
        from .sweep import store
        from .sweep.lock import StoreLock, timeout_from_env

        if getattr(args, "no_save", False) or not store.Store(args.store).local or not store.is_cube(args.store):
            return func(args)  # nothing written (or not a cube: the command says so)
        with StoreLock(args.store, timeout=timeout_from_env()):
            return func(args)

    return fit


def _file_output(func):
    """plot / report write one file: -o must not name a directory."""

    def run(args) -> int:
        out = getattr(args, "output", None)
        if out is not None and os.path.isdir(out):
            raise InputError(f"-o {out}: is a directory; give a file name (e.g. {os.path.join(out, 'fig.png')})")
        if out is not None and "\0" in out:
            raise InputError(f"-o {out!r}: must not contain NUL")
        return func(args)

    return run


def _library_log(args, store, name):
    """The `escape-sweep` command (not a test or program calling `main`) sends Dask's messages to a
    log beside the store once the cluster starts, keeping the terminal to our lines (deploy/logs.py)."""
    if not getattr(args, "route_logs", False):
        return None
    from .deploy.logs import log_path

    return log_path(store, name)


def entry() -> int:
    """The console script: `main` with Dask's messages routed to a log beside the store."""
    return main(route_logs=True)


def main(argv=None, route_logs: bool = False) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.route_logs = route_logs
    try:
        return args.func(args)
    except BrokenPipeError:  # `escape-sweep query ... | head`: the reader has gone; so do we, quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except InputError as e:
        print(f"escape-sweep: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"escape-sweep: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("escape-sweep: interrupted", file=sys.stderr)
        return 130
