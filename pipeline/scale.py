"""`escape-sweep bench --scale`: can one client keep many workers busy? (issue 16, "many workers")

(a) client: the real result path -- `StaticPlanner.tell` then the store's `ChunkWriter` -- fed
    precomputed synthetic task results (real counts from `task.summarize` of random escape steps)
    as fast as it takes them, and paced at a target rate; next to main's path (one storage chunk
    and one record file per task chunk, `Store.write_chunk`: ~16 array writes that re-open their
    metadata) on part of the same grid. Reports chunks/s, ms per chunk and the store's file count.
(b) cluster: a real Dask scheduler and N single-thread worker processes on this host, driven by
    the real `run_sweep` (lock, planner, submission window, client loop, store); each task sleeps
    its modelled duration and returns synthetic counts. Utilisation = sum of task durations /
    (N x compute wall time).
The model that takes these numbers to 1,000 and 10,000 workers is docs/scale.md.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

SPEC = """name = "scale"
seed = 1
walkers = 64
[axes]
T = {{ start = 0.01, stop = 0.03, num = {nT} }}
steps = [100, 1000]
batch_size = [1]
depth = {depth}
width = {width}
"""


def scale_spec(cells: int):
    """A spec of about `cells` one-cell task chunks (64 walkers each; T x depth x width)."""
    from .sweep.spec import parse_spec

    if cells >= 1000:
        nT, side = -(-cells // 100), 10
        depth, width = f"{{ start = 0.8, stop = 1.2, num = {side} }}", f"{{ start = 0.08, stop = 0.12, num = {side} }}"
    else:
        nT, depth, width = cells, "[1.0]", "[0.1]"
    return parse_spec(SPEC.format(nT=nT, depth=depth, width=width))


def synthetic_result(task) -> dict:
    """What `run_task` returns for `task`, from random escape steps (seeded by the chunk and the
    block) instead of the kernel: real additive counts, consistent with each other."""
    from .sweep.task import COUNTS, cell_arrays, summarize

    shape, nb, nh = task.shape, len(task.budgets), len(task.edges) - 1
    out = dict(chunk=task.chunk, block=task.block, n_walkers=np.zeros(shape, np.int64),
               n_diverged=np.zeros(shape, np.int64), n_escaped=np.zeros(shape + (nb,), np.int64),
               exposure=np.zeros(shape + (nb,), np.int64), hist=np.zeros(shape + (nh,), np.int64),
               walker_steps=0, kernel_seconds=0.0, backend="cpu")
    rng = np.random.default_rng([*task.chunk, task.block])
    for flat in cell_arrays(task)["flat"]:
        index = np.unravel_index(int(flat), shape)
        esc = rng.geometric(rng.uniform(1e-4, 1e-2), task.walker_count).astype(np.int64)
        esc[esc > max(task.budgets)] = 0
        s = summarize(esc, task.budgets, task.edges)
        for name in COUNTS:
            out[name][index] = s[name]
        out["walker_steps"] += int(np.where(esc > 0, esc, max(task.budgets)).sum())
    return out


def sleepy_task(task, seconds: float = 0.0) -> dict:
    """A worker's stand-in for `run_task`: sleep the modelled task duration, return synthetic counts."""
    time.sleep(seconds)
    out = synthetic_result(task)
    out["kernel_seconds"] = seconds
    return out


def warm_worker() -> None:
    """Import what a task needs (numba and the kernel module) before the timed runs."""
    from .sweep import task  # noqa: F401


def count_files(path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def _results(spec, chunks):
    from .sweep import partition
    from .sweep.planner import StaticPlanner

    pending = list(np.ndindex(*partition.chunk_grid(spec, chunks)))
    planner = StaticPlanner(spec, chunks, pending, task_seconds=1e-6)
    return planner, [synthetic_result(t) for t in planner.ask(len(pending) * 4)]


def client_path(spec, path, *, block=None, limit=None, main_path=False, rate=0.0) -> dict:
    """Feed precomputed results through planner.tell and the store's writer (or main's per-chunk
    `write_chunk` with main_path) into a new store at `path`. rate > 0: results arrive at that
    rate (paced), else as fast as they are taken. Returns chunks/s, ms/chunk, files, lag."""
    from .sweep import partition
    from .sweep.store import Store

    chunks = (1, 1, 1, 1)
    grid = partition.chunk_grid(spec, chunks)
    edges = partition.spec_edges(spec)
    planner, results = _results(spec, chunks)
    results = results[:limit] if limit else results
    st = Store(path)
    st.create(spec, chunks, edges, grid, block=(1, 1, 1, 1) if main_path else block)
    files0 = count_files(path)
    group = st.group()
    writer = None if main_path else st.writer(edges, spec.method)
    lag = 0.0
    t0 = time.perf_counter()
    for i, res in enumerate(results):
        if rate > 0:
            due = t0 + i / rate
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            else:
                lag = max(lag, now - due)
        chunk = planner.tell(res)
        if main_path:
            st.write_chunk(chunk.index, chunk.slices, chunk.counts, edges, spec.method, chunk.walkers,
                           group=group, backends=chunk.backends)
        else:
            writer.add(chunk.index, chunk.slices, chunk.counts, chunk.walkers, backends=chunk.backends)
    if writer is not None:
        writer.close()
    dt = time.perf_counter() - t0
    n = len(results)
    done, total = st.chunk_count()
    assert done == n, (done, n)
    files = count_files(path)
    return dict(path="main (write_chunk per chunk)" if main_path else "ChunkWriter", chunks=n, grid_chunks=total,
                seconds=dt, chunks_per_s=n / dt, ms_per_chunk=1e3 * dt / n, rate_target=rate,
                max_lag_s=lag, files=files, files_per_chunk=(files - files0) / n,
                files_full_grid=files if n == total else round(files0 + (files - files0) * total / n),
                block=list(st.attrs().get("storage_block", [1, 1, 1, 1])),
                blocks_written=getattr(writer, "blocks_written", n))


def client_bench(tmp, cells: int = 10_000, main_chunks: int = 500, rate: float = 500.0) -> dict:
    """(a): the new path on the whole grid (unpaced, and paced at `rate`), main's path on its first
    `main_chunks` chunks (it is ~30x slower; its full-grid file count is extrapolated), and the
    new writer with one storage chunk per task chunk (held array handles, no batching)."""
    spec = scale_spec(cells)
    out = dict(cells=spec.n_cells)
    out["new"] = client_path(spec, f"{tmp}/new.zarr")
    if rate:
        out["new_paced"] = client_path(spec, f"{tmp}/paced.zarr", rate=rate)
    out["main"] = client_path(spec, f"{tmp}/main.zarr", main_path=True, limit=main_chunks)
    out["block1_writer"] = client_path(spec, f"{tmp}/b1.zarr", block=(1, 1, 1, 1), limit=main_chunks)
    out["speedup_vs_main"] = out["new"]["chunks_per_s"] / out["main"]["chunks_per_s"]
    return out


def cluster_run(address, n_workers: int, seconds: float, tasks: int, path) -> dict:
    """One sweep of `tasks` one-cell chunks on the cluster at `address`, each task sleeping
    `seconds`, through the real `run_sweep` (its `run_task` swapped for `sleepy_task`)."""
    from functools import partial

    from .deploy import ClusterOptions
    from .sweep import runner

    spec = scale_spec(tasks)
    real = runner.run_task
    runner.run_task = partial(sleepy_task, seconds=seconds)
    try:
        s = runner.run_sweep(spec, runner.RunOptions(cluster=ClusterOptions(scheduler=address), progress=False,
                                                     task_seconds=1e-6), output=str(path))
    finally:
        runner.run_task = real
    assert s.complete and s.tasks_submitted == spec.n_cells, s
    busy = s.tasks_submitted * seconds
    return dict(workers=n_workers, task_seconds=seconds, tasks=s.tasks_submitted, wall_seconds=s.compute_seconds,
                utilisation=busy / (n_workers * s.compute_seconds) if seconds else float("nan"),
                tasks_per_s=s.tasks_submitted / s.compute_seconds, files=count_files(path))


def cluster_bench(tmp, workers=(4, 16, 32), durations=(2.0, 0.5, 0.1, 0.0), tasks_per_worker: int = 8,
                  min_tasks: int = 200) -> list[dict]:
    """(b): for each N, a LocalCluster of N single-thread worker processes (one scheduler), and a
    sweep per modelled task duration; duration 0 measures the per-task cost of the whole loop
    (scheduler + workers + client, all on this host's cores). Workers import the task module
    before the timed runs."""
    from distributed import LocalCluster

    rows = []
    for n in workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit="1GiB",
                          dashboard_address=None, host="127.0.0.1") as lc:
            from distributed import Client

            with Client(lc) as c:
                c.wait_for_workers(n, timeout=600)
                c.run(warm_worker)  # imports are start-up cost, not per-task cost
            for d in durations:
                tasks = max(min_tasks, n * tasks_per_worker) if d <= 0.5 else n * tasks_per_worker
                rows.append(cluster_run(lc.scheduler_address, n, d, tasks, f"{tmp}/c{n}-{d}.zarr"))
    return rows


def format_result(r: dict) -> str:
    lines = []
    if "client" in r:
        c = r["client"]
        lines.append(f"(a) client result path, {c['cells']} one-cell task chunks (synthetic results, "
                     f"planner.tell + store write):")
        lines.append(f"  {'path':<32} {'chunks':>7} {'chunks/s':>9} {'ms/chunk':>9} {'files':>8} {'files, full grid':>17}")
        for k in ("main", "block1_writer", "new", "new_paced"):
            if k in c:
                x = c[k]
                name = {"main": "main: write_chunk, 1 chunk/file", "block1_writer": "ChunkWriter, 1 chunk/file",
                        "new": f"ChunkWriter, block {'x'.join(map(str, x['block']))}",
                        "new_paced": f"  paced at {x['rate_target']:.0f}/s (max lag {x['max_lag_s']:.3f} s)"}[k]
                lines.append(f"  {name:<32} {x['chunks']:>7} {x['chunks_per_s']:>9.0f} {x['ms_per_chunk']:>9.3f} "
                             f"{x['files']:>8} {x['files_full_grid']:>17}")
        lines.append(f"  speed-up of the new path over main's: {c['speedup_vs_main']:.1f}x")
    if "cluster" in r:
        lines.append("(b) simulated cluster: LocalCluster, N single-thread worker processes, tasks sleep d seconds; "
                     "real run_sweep client")
        lines.append(f"  {'N':>4} {'d (s)':>6} {'tasks':>6} {'wall (s)':>9} {'tasks/s':>8} {'utilisation':>12}")
        for x in r["cluster"]:
            u = f"{100 * x['utilisation']:.1f}%" if x["task_seconds"] else "-"
            lines.append(f"  {x['workers']:>4} {x['task_seconds']:>6.2f} {x['tasks']:>6} {x['wall_seconds']:>9.2f} "
                         f"{x['tasks_per_s']:>8.1f} {u:>12}")
    return "\n".join(lines)


def scale_bench(cells: int = 10_000, main_chunks: int = 500, rate: float = 500.0, workers=(4, 16, 32),
                durations=(2.0, 0.5, 0.1, 0.0), cluster: bool = True) -> dict:
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["client"] = client_bench(tmp, cells, main_chunks, rate)
        if cluster and workers:
            out["cluster"] = cluster_bench(tmp, workers, durations)
    return out


def main(args) -> int:
    """`escape-sweep bench --scale` (the defaults); `python -m pipeline.scale --help` for the knobs."""
    r = scale_bench()
    print(json.dumps(r, indent=2) if getattr(args, "json", False) else format_result(r))
    return 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline.scale", description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=10_000, help="task chunks of the client benchmark")
    p.add_argument("--main-chunks", type=int, default=500, help="chunks written by main's path (slow)")
    p.add_argument("--rate", type=float, default=500.0, help="paced arrival rate, results/s (0: skip)")
    p.add_argument("--workers", type=int, nargs="*", default=[4, 16, 32], help="N of the simulated clusters")
    p.add_argument("--durations", type=float, nargs="+", default=[2.0, 0.5, 0.1, 0.0], help="task seconds")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    res = scale_bench(a.cells, a.main_chunks, a.rate, tuple(a.workers), tuple(a.durations), bool(a.workers))
    print(json.dumps(res, indent=2) if a.json else format_result(res))
