"""`escape-sweep bench`: kernel throughput in walker-steps/s on one core, next to the baselines.

Counts only steps actually simulated (sum of min(escape step, budget)), never padded lanes or
steps after escape. Each figure is the best of `repeats` timed calls after a warm-up call.
"""

from __future__ import annotations

import json
import platform
import time


from .model.kernels import escape_steps
from .model.landscape import find_pit
from .model.reference import numpy_escape_steps, scalar_escape_steps
from .sweep.task import cell_key, walker_steps

IMPLEMENTATIONS = ("kernel", "scalar_numba", "numpy")


def _time_one(impl: str, T, steps, B, pit, walkers, seed):
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
        "from pipeline.spec import parse_spec\nfrom pipeline.runner import RunOptions, run_sweep\n"
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


def main(args) -> int:
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
