"""`escape-sweep bench`: kernel throughput in walker-steps/s on one core, next to the baselines.

Counts only steps actually simulated (sum of min(escape step, budget)), never padded lanes or
steps after escape. Each figure is the best of `repeats` timed calls after a warm-up call.
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np

from .kernels import escape_steps
from .landscape import find_pit
from .reference import numpy_escape_steps, scalar_escape_steps
from .task import cell_key, walker_steps

IMPLEMENTATIONS = ("kernel", "scalar_numba", "numpy")


def _time_one(impl: str, T, steps, B, pit, walkers, seed):
    if impl == "kernel":
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


def main(args) -> int:
    result = kernel_bench(batch_sizes=tuple(args.batch), min_seconds=args.min_seconds)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
