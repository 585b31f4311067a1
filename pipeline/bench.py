"""`escape-sweep bench`: kernel throughput in walker-steps/s on one core, next to the baselines.

Counts only steps actually simulated (sum of min(escape step, budget)), never padded lanes or
steps after escape. Each figure is the best of `repeats` timed calls after a warm-up call.
"""

from __future__ import annotations

import json
import os
import platform
import time

IMPLEMENTATIONS = ("kernel", "scalar_numba", "numpy")


def _time_one(impl: str, T, steps, B, pit, walkers, seed):
    from .model.kernels import escape_steps
    from .model.reference import numpy_escape_steps, scalar_escape_steps
    from .model.simulate import cell_key
    from .sweep.task import walker_steps

    if impl == "cuda":
        from .model.cuda import escape_steps as cuda_escape_steps

        key = cell_key(seed, T, B, pit.depth, pit.width)
        fn = lambda: cuda_escape_steps(T, steps, B, pit.depth, pit.width, pit.w_start, pit.w_barrier, key, 0, walkers)  # noqa: E731
    elif impl == "kernel":
        key = cell_key(seed, T, B, pit.depth, pit.width)
        fn = lambda: escape_steps(T, steps, B, pit.depth, pit.width, pit.w_start, pit.w_barrier, key, 0, walkers)  # noqa: E731
    elif impl == "scalar_numba":
        fn = lambda: scalar_escape_steps(T, steps, B, pit.depth, pit.width, pit.w_start, pit.w_barrier, walkers, seed)  # noqa: E731
    else:
        fn = lambda: numpy_escape_steps(T, steps, B, pit.depth, pit.width, pit.w_start, pit.w_barrier, walkers, seed)  # noqa: E731
    t0 = time.perf_counter()
    esc = fn()
    return time.perf_counter() - t0, walker_steps(esc, steps)


def measure(impl: str, T=0.01, steps=1000, batch_size=1, depth=1.0, width=0.1,
            min_seconds=0.3, repeats=3, seed=0) -> dict:
    """Walker-steps/s of one implementation: grow the walker count until a call takes
    `min_seconds`, then keep the best of `repeats` calls."""
    from .model.landscape import find_pit

    pit = find_pit(depth, width)
    walkers = 256
    _time_one(impl, T, min(steps, 10), batch_size, pit, 64, seed)  # compile / warm up
    while True:
        dt, ws = _time_one(impl, T, steps, batch_size, pit, walkers, seed)
        if dt >= min_seconds or walkers >= 1 << 24:
            break
        walkers = int(walkers * min(16.0, max(2.0, 1.2 * min_seconds / max(dt, 1e-6))))
    best = ws / dt
    for _ in range(repeats - 1):
        dt, ws = _time_one(impl, T, steps, batch_size, pit, walkers, seed)
        best = max(best, ws / dt)
    return dict(impl=impl, T=T, steps=steps, batch_size=batch_size, depth=depth, width=width,
                walkers=walkers, walker_steps_per_s=best)


def kernel_bench(batch_sizes=(1, 8, 64), T=0.01, steps=1000, min_seconds=0.3, repeats=3) -> dict:
    """The kernel table: each implementation at each batch size, and the kernel's speed-up ratios."""
    rows = []
    for B in batch_sizes:
        r = {impl: measure(impl, T=T, steps=steps, batch_size=B, min_seconds=min_seconds, repeats=repeats)
             for impl in IMPLEMENTATIONS}
        k = r["kernel"]["walker_steps_per_s"]
        rows.append(dict(batch_size=B, T=T, steps=steps,
                         kernel=k, scalar_numba=r["scalar_numba"]["walker_steps_per_s"],
                         numpy=r["numpy"]["walker_steps_per_s"],
                         kernel_over_scalar_numba=k / r["scalar_numba"]["walker_steps_per_s"],
                         kernel_over_numpy=k / r["numpy"]["walker_steps_per_s"]))
    return dict(machine=dict(python=platform.python_version(), processor=platform.processor() or platform.machine()),
                units="walker-steps per second, one core", rows=rows)


def format_table(result: dict) -> str:
    head = f"{'batch':>5} {'kernel':>12} {'scalar numba':>13} {'numpy':>12} {'kernel/scalar':>14} {'kernel/numpy':>13}"
    lines = [f"kernel throughput ({result['units']}), seed pit, T={result['rows'][0]['T']}, "
             f"{result['rows'][0]['steps']}-step budget", head]
    for r in result["rows"]:
        lines.append(f"{r['batch_size']:>5} {r['kernel']:>12.3e} {r['scalar_numba']:>13.3e} {r['numpy']:>12.3e} "
                     f"{r['kernel_over_scalar_numba']:>13.1f}x {r['kernel_over_numpy']:>12.1f}x")
    return "\n".join(lines)


def cuda_bench(batch_sizes=(1, 64), T=0.01, steps=1000, min_seconds=0.3, repeats=3) -> dict:
    """The cuda backend's walker-steps/s next to the CPU kernel on one core of this host."""
    from .model.backends import require

    require("cuda")
    rows = []
    for B in batch_sizes:
        g = measure("cuda", T=T, steps=steps, batch_size=B, min_seconds=min_seconds, repeats=repeats)
        c = measure("kernel", T=T, steps=steps, batch_size=B, min_seconds=min_seconds, repeats=repeats)
        rows.append(dict(batch_size=B, T=T, steps=steps, cuda=g["walker_steps_per_s"], cuda_walkers=g["walkers"],
                         cpu_core=c["walker_steps_per_s"], cuda_over_cpu_core=g["walker_steps_per_s"] / c["walker_steps_per_s"]))
    return dict(machine=dict(python=platform.python_version(), processor=platform.processor() or platform.machine()),
                units="walker-steps per second (cuda: one GPU; cpu: one core)", rows=rows)


def format_cuda_table(result: dict) -> str:
    lines = [f"cuda backend throughput ({result['units']}), seed pit, T={result['rows'][0]['T']}, "
             f"{result['rows'][0]['steps']}-step budget",
             f"{'batch':>5} {'cuda':>12} {'cpu core':>12} {'cuda/core':>10} {'walkers':>10}"]
    for r in result["rows"]:
        lines.append(f"{r['batch_size']:>5} {r['cuda']:>12.3e} {r['cpu_core']:>12.3e} {r['cuda_over_cpu_core']:>9.1f}x "
                     f"{r['cuda_walkers']:>10}")
    return "\n".join(lines)


# ---------------------------------------------------------------- sweeps
SWEEP_SPEC = """\
name = "bench-sweep"
seed = 1
walkers = {walkers}
[axes]
T = {{ start = 0.006, stop = 0.009, num = {cells} }}
steps = {steps}
batch_size = [1]
depth = [1.0]
width = [0.1]
"""

GRID_SPEC = """\
name = "bench-grid"
seed = 1
walkers = {walkers}
[axes]
T = {{ start = 0.005, stop = 0.05, num = {nT} }}
steps = [100]
batch_size = [1, 2, 3, 4]
depth = {{ start = 0.5, stop = 2.0, num = 5 }}
width = {{ start = 0.05, stop = 0.15, num = 5 }}
"""


def _sweep_once(text, store, n_workers, task_seconds):
    from .deploy import ClusterOptions
    from .sweep.runner import RunOptions, run_sweep
    from .sweep.spec import parse_spec

    spec = parse_spec(text, "<bench>", output=str(store))
    opts = RunOptions(cluster=ClusterOptions(n_workers=n_workers), progress=False, task_seconds=task_seconds)
    s = run_sweep(spec, opts, output=str(store))
    busy = s.kernel_seconds / (s.compute_seconds * s.workers) if s.compute_seconds > 0 else float("nan")
    return dict(workers=s.workers, tasks=s.tasks_submitted, walker_steps=s.walker_steps,
                compute_seconds=s.compute_seconds, kernel_seconds=s.kernel_seconds,
                walker_steps_per_s=s.walker_steps / s.compute_seconds, kernel_busy_fraction=busy,
                overhead_fraction=1.0 - busy, wall_seconds_with_startup=s.wall_seconds)


def _startup_seconds() -> float:
    """Seconds from a fresh interpreter to the end of a first kernel call (numba cache warm)."""
    import subprocess
    import sys

    code = ("import time; t = time.perf_counter(); import pipeline; "
            "pipeline.simulate(0.01, 10, 1, 1.0, 0.1, 64, 0); print(time.perf_counter() - t)")
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)  # fills the cache
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def _grid_peak_rss(n_cells: int, walkers: int, store) -> dict:
    """Run an n_cells sweep in a fresh client process; its peak RSS (the embedded scheduler lives
    in the same process, so this counts it too)."""
    import subprocess
    import sys

    nT = max(1, n_cells // 100)
    text = GRID_SPEC.format(walkers=walkers, nT=nT)
    code = (
        "import resource, sys, json\n"
        "from pipeline.sweep.spec import parse_spec\nfrom pipeline.sweep.runner import RunOptions, run_sweep\n"
        "from pipeline.deploy import ClusterOptions\n"
        f"spec = parse_spec({text!r}, '<bench-grid>', output={str(store)!r})\n"
        "s = run_sweep(spec, RunOptions(cluster=ClusterOptions(), progress=False))\n"
        "print(json.dumps(dict(cells=s.cells, chunks=s.chunks_total, tasks=s.tasks_submitted, window=s.window, "
        "wall_seconds=s.wall_seconds, walker_steps=s.walker_steps, "
        "peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def sweep_bench(seconds: float = 24.0, grid_cells: int = 100_000) -> dict:
    """Scaling 1 -> 2 worker processes on one sweep of about `seconds` of kernel work, the cost of
    the steps axis, start-up with a warm numba cache, and the peak client RSS of a large grid."""
    import tempfile

    cells = 32
    steps = 10000
    walkers = int(seconds * 8e8 / (cells * steps))
    walkers = max(64, walkers // 64 * 64)
    text = SWEEP_SPEC.format(walkers=walkers, cells=cells, steps=[steps])
    out = dict(spec=dict(cells=cells, walkers=walkers, steps=steps))
    with tempfile.TemporaryDirectory() as tmp:
        one = _sweep_once(text, f"{tmp}/w1.zarr", 1, 1.0)
        two = _sweep_once(text, f"{tmp}/w2.zarr", 2, 1.0)
        out["one_worker"], out["two_workers"] = one, two
        out["speedup"] = two["walker_steps_per_s"] / one["walker_steps_per_s"]
        out["parallel_efficiency"] = out["speedup"] / 2
        many = SWEEP_SPEC.format(walkers=walkers // 4, cells=cells, steps=[100, 300, 1000, 3000, 10000])
        single = SWEEP_SPEC.format(walkers=walkers // 4, cells=cells, steps=[10000])
        a = _sweep_once(many, f"{tmp}/many.zarr", 2, 1.0)
        b = _sweep_once(single, f"{tmp}/single.zarr", 2, 1.0)
        out["steps_axis"] = dict(five_budgets_seconds=a["compute_seconds"], one_budget_seconds=b["compute_seconds"],
                                 ratio=a["compute_seconds"] / b["compute_seconds"],
                                 kernel_ratio=a["kernel_seconds"] / b["kernel_seconds"])
        out["startup_seconds_cached"] = _startup_seconds()
        if grid_cells:
            out["grid"] = _grid_peak_rss(grid_cells, 16, f"{tmp}/grid.zarr")
    return out


def format_sweep(r: dict) -> str:
    o, t = r["one_worker"], r["two_workers"]
    lines = [f"sweep scaling: {r['spec']['cells']} cells x {r['spec']['walkers']} walkers x {r['spec']['steps']} steps "
             f"(low T, mostly censored), compute wall time without cluster start-up",
             f"{'workers':>8} {'tasks':>6} {'seconds':>8} {'walker-steps/s':>15} {'kernel busy':>12} {'overhead':>9}"]
    for x in (o, t):
        lines.append(f"{x['workers']:>8} {x['tasks']:>6} {x['compute_seconds']:>8.2f} {x['walker_steps_per_s']:>15.3e} "
                     f"{100 * x['kernel_busy_fraction']:>11.1f}% {100 * x['overhead_fraction']:>8.1f}%")
    lines.append(f"speed-up 2 vs 1 workers: {r['speedup']:.2f}x (parallel efficiency {100 * r['parallel_efficiency']:.0f}%)")
    sa = r["steps_axis"]
    lines.append(f"steps axis: [100, 300, 1000, 3000, 10000] costs {sa['ratio']:.3f}x of [10000] "
                 f"(wall; kernel time {sa['kernel_ratio']:.3f}x)")
    lines.append(f"start-up to the end of a first kernel call, warm numba cache: {r['startup_seconds_cached']:.2f} s")
    if "grid" in r:
        g = r["grid"]
        lines.append(f"grid: {g['cells']} cells, {g['chunks']} chunks, window {g['window']} tasks in flight, "
                     f"{g['wall_seconds']:.1f} s, peak client RSS {g['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


# ---------------------------------------------------------------- sweeps against the contenders
CONTENDERS = ("escape-sweep run", "joblib + pipeline.simulate", "psweep + numpy", "joblib + numpy")

SEED_POST_SPEC = """\
name = "seed-post"
seed = 20261122
walkers = 20000
[axes]
T = { start = 0.005, stop = 0.06, num = 56 }
steps = [100, 1000]
batch_size = [1]
depth = [1.0]
width = [0.1]
"""

# (spec text, contenders measured): the numpy contenders take minutes on a million cells, and on
# 1e5 tiny cells psweep + numpy is stopped after NUMPY_TINY_TIMEOUT seconds (the default stays ~3 min)
NUMPY_TINY_TIMEOUT = 60.0
WORKLOADS = {
    "seed-post grid (56 cells x 20k walkers)": (SEED_POST_SPEC, CONTENDERS),
    "1e5 tiny cells (64 walkers, steps [100])": (GRID_SPEC.format(walkers=64, nT=1000), CONTENDERS[:3]),
    "1e6 tiny cells (64 walkers, steps [100])": (GRID_SPEC.format(walkers=64, nT=10000), CONTENDERS[:2]),
}
BIG = "1e6 tiny cells (64 walkers, steps [100])"


def _cells(spec):
    import itertools

    return list(itertools.product(spec.T, spec.batch_size, spec.depth, spec.width))


def _count(esc, steps):
    """What each contender returns per cell: escaped walkers within each budget."""
    import numpy as np

    return [int(np.count_nonzero((esc > 0) & (esc <= s))) for s in steps]


def _simulate_cell(T, B, d, w, steps, walkers, seed):
    from . import simulate

    return _count(simulate(T, max(steps), B, d, w, walkers, seed), steps)


def _numpy_cell(T, B, d, w, steps, walkers, seed):
    from .model.landscape import find_pit
    from .model.reference import numpy_escape_steps

    p = find_pit(d, w)
    return _count(numpy_escape_steps(T, max(steps), B, d, w, p.w_start, p.w_barrier, walkers, seed), steps)


def _psweep_cell(pset):
    return dict(n_escaped=_numpy_cell(pset["T"], pset["batch_size"], pset["depth"], pset["width"], pset["steps"],
                                      pset["walkers"], pset["seed"]))


def _vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a live process from /proc (Linux; 0 where unreadable). A fork that execs starts a
    fresh count, unlike RUSAGE_CHILDREN, which charges every short helper (uname) the parent's RSS."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _child(contender: str, spec_text: str, workdir: str) -> dict:
    """Run a Python contender (joblib, psweep) on one workload in this (fresh) process."""
    import os as _os

    from .sweep.spec import parse_spec

    spec = parse_spec(spec_text, "<bench>", output=_os.path.join(workdir, "unused.zarr"))
    cells = _cells(spec)
    n = _os.cpu_count() or 1
    args = (list(spec.steps), spec.walkers, spec.seed)
    if contender.startswith("joblib"):
        from joblib import Parallel, delayed
        from joblib.externals.loky import get_reusable_executor

        fn = _simulate_cell if contender.endswith("simulate") else _numpy_cell
        out = Parallel(n_jobs=n)(delayed(fn)(*c, *args) for c in cells)
        time.sleep(0.1)  # one more poll of the workers' peak RSS before they go
        get_reusable_executor().shutdown(wait=True)
    else:
        import psweep as ps

        params = [dict(T=c[0], batch_size=c[1], depth=c[2], width=c[3], steps=args[0], walkers=args[1], seed=args[2])
                  for c in cells]
        out = ps.run(_psweep_cell, params, poolsize=n, calc_dir=_os.path.join(workdir, "calc"))
    return dict(results=len(out))


def _measure(contender: str, spec_text: str, timeout: float) -> dict:
    """Wall time (a fresh interpreter to its exit, imports and start-up included) and peak RSS
    (client = the process started, workers = the largest of its descendants, polled every 20 ms)
    of one contender. `escape-sweep run` is the command itself, as a user types it."""
    import subprocess
    import sys
    import tempfile

    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        if contender == "escape-sweep run":
            spec_path = os.path.join(tmp, "spec.toml")
            with open(spec_path, "w") as f:
                f.write(spec_text)
            cmd = [sys.executable, "-m", "pipeline", "run", spec_path, "-q", "-o", os.path.join(tmp, "cube.zarr")]
        else:
            cmd = [sys.executable, "-c", "import json\nfrom pipeline.bench import _child\n"
                   f"print(json.dumps(_child({contender!r}, {spec_text!r}, {tmp!r})))\n"]
        import resource

        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp,
                             env=os.environ | {"PYTHONWARNINGS": "ignore"})
        client = workers = 0.0
        proc = psutil.Process(p.pid)
        while p.poll() is None:
            if time.perf_counter() - t0 > timeout:
                p.kill()
                p.communicate()
                return dict(contender=contender, error=f"over {timeout:.0f} s (stopped)")
            client = max(client, _vm_hwm_mb(p.pid))
            try:
                for c in proc.children(recursive=True):
                    workers = max(workers, _vm_hwm_mb(c.pid))
            except psutil.Error:
                pass
            time.sleep(0.02)
        out, err = p.communicate()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the process and the descendants it reaped
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        return dict(contender=contender, error=(err.strip().splitlines() or ["failed"])[-1][:200])
    extra = json.loads(out.strip().splitlines()[-1]) if contender != "escape-sweep run" else {}
    return dict(contender=contender, wall_seconds=wall, cpu_seconds=cpu, client_rss_mb=client, worker_rss_mb=workers,
                **extra)


def contenders_bench(big: bool = False, timeout: float = 300.0) -> dict:
    """Each workload computed by escape-sweep run and by the contenders, one after the other in
    fresh processes on this machine, all cores each: wall time and peak RSS (client and workers)."""
    from .sweep.spec import parse_spec

    _measure("escape-sweep run", SEED_POST_SPEC.replace("56", "2"), timeout)  # fill the numba cache
    rows = []
    for name, (text, who) in WORKLOADS.items():
        if name == BIG and not big:
            continue
        spec = parse_spec(text, "<bench>", output="unused.zarr")
        for c in who:
            limit = NUMPY_TINY_TIMEOUT if "numpy" in c and spec.walkers < 1000 else timeout
            r = _measure(c, text, limit)
            r.update(workload=name, cells=spec.n_cells, walkers=spec.walkers, steps=list(spec.steps))
            rows.append(r)
    return dict(machine=dict(python=platform.python_version(), cores=os.cpu_count(),
                             processor=platform.processor() or platform.machine(),
                             load_average=os.getloadavg()),
                units="wall seconds from a fresh interpreter to exit; peak RSS in MB", rows=rows)


def format_contenders(result: dict) -> str:
    m = result["machine"]
    lines = [f"sweeps end to end on {m['cores']} cores (load average {m['load_average'][0]:.1f} at the end): "
             "wall s, CPU s (user + sys), peak RSS MB client / largest worker process ('-': none, threads in the client)",
             f"{'workload':<42} " + " ".join(f"{c:>27}" for c in CONTENDERS)]
    by = {}
    for r in result["rows"]:
        by.setdefault(r["workload"], {})[r["contender"]] = r
    for w, rs in by.items():
        cells = []
        for c in CONTENDERS:
            r = rs.get(c)
            if r is None:
                cells.append("--")
            elif "error" in r:
                cells.append(r["error"][:27])
            else:
                wk = f"{r['worker_rss_mb']:.0f}" if r["worker_rss_mb"] else "-"
                cells.append(f"{r['wall_seconds']:.1f}s {r['cpu_seconds']:.0f}cpu {r['client_rss_mb']:.0f}/{wk}MB")
        lines.append(f"{w:<42} " + " ".join(f"{x:>27}" for x in cells))
    return "\n".join(lines)


def main(args) -> int:
    if getattr(args, "sweep", False) and not getattr(args, "scaling", False):
        import importlib.util

        missing = [m for m in ("joblib", "psweep", "psutil") if importlib.util.find_spec(m) is None]
        if missing:
            from .errors import InputError

            raise InputError(f"bench --sweep: the contenders need {', '.join(missing)}: pip install -e '.[bench]'")
        result = contenders_bench(big=getattr(args, "big", False))
        if getattr(args, "out", None):
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2) if args.json else format_contenders(result))
        return 0
    if getattr(args, "sweep", False):
        result = sweep_bench(seconds=args.sweep_seconds, grid_cells=args.grid_cells)
        print(json.dumps(result, indent=2) if args.json else format_sweep(result))
        return 0
    if getattr(args, "backend", "cpu") == "cuda":
        result = cuda_bench(batch_sizes=tuple(args.batch), min_seconds=args.min_seconds)
        print(json.dumps(result, indent=2) if args.json else format_cuda_table(result))
        return 0
    result = kernel_bench(batch_sizes=tuple(args.batch), min_seconds=args.min_seconds)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
