#!/usr/bin/env python3
"""Device check of the cuda backend on a real GPU, one command from the repo root:

    python3 tests/device/check_cuda.py            # ~1-3 minutes on one H100
    NUMBA_ENABLE_CUDASIM=1 python3 tests/device/check_cuda.py --quick   # rehearsal without a GPU

1. bit-identity with the CPU kernel: 200,000 walkers x 5 cells (batch 1, 3, 64, 100 and a
   diverging stress cell), every escape step equal, -1 and -2 codes included;
2. PTX: every f64 add/mul rounded explicitly (.rn), fma.rn.f64 only the explicit ones;
3. throughput: walker-steps/s at T=0.01, budget 1000, batch 1 and 64, against the CPU kernel on
   one core of this host;
4. one `escape-sweep run --backend cuda` sweep compared with the CPU cube (skipped with a message
   if dask/xarray/zarr are missing).
Prints PASS/FAIL lines and a table, writes $OUT/check_cuda.json if $OUT is set, exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS: dict = {"checks": {}}
FAILED: list[str] = []


def report(name: str, ok: bool | None, detail: str = "", **data):
    """One PASS/FAIL/SKIP line, recorded for the JSON summary."""
    word = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    print(f"{word} {name}: {detail}", flush=True)
    RESULTS["checks"][name] = dict(status=word, detail=detail, **data)
    if ok is False:
        FAILED.append(name)


def identity(walkers: int):
    from pipeline.model import cuda as gpu
    from pipeline.model.kernels import escape_steps
    from pipeline.model.landscape import find_pit
    from pipeline.model.simulate import cell_key

    cells = [  # (T, batch, depth, width, steps, first)
        (0.015, 1, 1.0, 0.1, 1000, 0),
        (0.03, 3, 1.0, 0.1, 300, 17),
        (0.05, 64, 1.0, 0.1, 200, 1),
        (0.06, 100, 1.0, 0.1, 200, 999),
        (1e300, 3, 20.0, 0.01, 1, 5),  # overflows to -inf/NaN: DIVERGED codes, budget < one round
    ]
    for T, B, d, w, steps, first in cells:
        pit = find_pit(d, w)
        args = (T, steps, B, d, w, pit.w_start, pit.w_barrier, cell_key(2026, T, B, d, w), first, walkers)
        t0 = time.perf_counter()
        cpu = escape_steps(*args)
        t1 = time.perf_counter()
        got = gpu.escape_steps(*args)
        t2 = time.perf_counter()
        bad = np.flatnonzero(got != cpu)
        codes = dict(escaped=int((cpu > 0).sum()), censored=int((cpu == -1).sum()), diverged=int((cpu == -2).sum()))
        name = f"identity T={T:g} B={B} depth={d:g} width={w:g} steps={steps} first={first}"
        detail = (f"{walkers} walkers equal ({codes}; cpu {t1 - t0:.2f} s, cuda {t2 - t1:.2f} s)" if bad.size == 0
                  else f"{bad.size} of {walkers} differ, first at walker {first + bad[0]}: "
                       f"cuda {got[bad[0]]} cpu {cpu[bad[0]]}")
        report(name, bad.size == 0, detail, mismatches=int(bad.size), **codes)
        if T > 1 and codes["diverged"] == 0:
            report(name + " diverges", False, "the stress cell gave no -2 code on the CPU kernel")


def ptx_check():
    from pipeline.model import cuda as gpu

    if gpu.SIMULATOR:
        report("ptx", None, "not under the simulator (run without NUMBA_ENABLE_CUDASIM)")
        return
    try:
        cc = gpu.cuda.get_current_device().compute_capability
        text = gpu.ptx(cc)
    except Exception as e:
        report("ptx", False, f"could not compile PTX: {type(e).__name__}: {e}")
        return
    r = gpu.ptx_report(text)
    report("ptx", r["ok"], f"cc {cc}: {r['fma_rn_f64']} fma.rn.f64 (multiple of {r['explicit_fmas_per_step']}), "
           f"{r['rn_add_mul']} add/mul.rn.f64, {r['plain_add_mul_f64']} contractible add/mul.f64",
           **{k: v for k, v in r.items() if k != "ok"})


def throughput(quick: bool):
    from pipeline import bench

    secs = 0.02 if quick else 0.5
    rows = []
    print(f"\n{'batch':>5} {'cuda walker-steps/s':>20} {'cpu core':>12} {'cuda/core':>10} {'walkers':>9}")
    for B in (1, 64):
        g = bench.measure("cuda", T=0.01, steps=1000 if not quick else 50, batch_size=B, min_seconds=secs, repeats=3)
        c = bench.measure("kernel", T=0.01, steps=1000 if not quick else 50, batch_size=B, min_seconds=secs, repeats=3)
        row = dict(batch_size=B, T=0.01, steps=g["steps"], cuda=g["walker_steps_per_s"], cuda_walkers=g["walkers"],
                   cpu_core=c["walker_steps_per_s"], ratio=g["walker_steps_per_s"] / c["walker_steps_per_s"])
        rows.append(row)
        print(f"{B:>5} {row['cuda']:>20.3e} {row['cpu_core']:>12.3e} {row['ratio']:>9.1f}x {row['cuda_walkers']:>9}")
    print()
    RESULTS["throughput"] = rows
    report("throughput", True, "measured (table above)")


def sweep_check(quick: bool):
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
        import xarray  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as e:
        report("sweep", None, f"dask/distributed/xarray/zarr missing ({e}); the kernel checks above stand alone")
        return
    import subprocess

    spec = ("name = \"device-check\"\nseed = 11\nwalkers = {w}\n[axes]\nT = [0.012, 0.02, 0.05]\n"
            "steps = [10, 100, {s}]\nbatch_size = [1, 3, 100]\ndepth = [1.0]\nwidth = [0.1]\n")
    w, s = (70, 150) if quick else (20000, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "spec.toml"
        f.write_text(spec.format(w=w, s=s))
        env = os.environ | {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        times = {}
        for backend in ("cpu", "cuda"):
            cmd = [sys.executable, "-m", "pipeline", "run", str(f), "-o", f"{tmp}/{backend}.zarr", "-q",
                   "--backend", backend, "--workers", "2"]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
            times[backend] = time.perf_counter() - t0
            if r.returncode != 0:
                report("sweep", False, f"`escape-sweep run --backend {backend}` exit {r.returncode}: "
                       f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
                return
        import xarray as xr

        a, b = xr.open_zarr(f"{tmp}/cpu.zarr"), xr.open_zarr(f"{tmp}/cuda.zarr")
        diff = [v for v in a.variables
                if not np.array_equal(a[v].values, b[v].values, equal_nan=a[v].dtype.kind == "f")]
        from pipeline.sweep import store

        by = store.Store(f"{tmp}/cuda.zarr").backend_counts()
        ok = not diff and set(a.variables) == set(b.variables) and set(by) == {"cuda"}
        report("sweep", ok, f"cube from --backend cuda {'identical to' if not diff else 'DIFFERS from'} the cpu cube"
               f"{'' if not diff else ' in ' + ', '.join(diff)}; provenance {by}; "
               f"wall cpu {times['cpu']:.1f} s, cuda {times['cuda']:.1f} s", provenance=by, differing=diff)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (for a rehearsal under NUMBA_ENABLE_CUDASIM=1)")
    ap.add_argument("--walkers", type=int, help="walkers per identity cell (default 200000; --quick 64)")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    from pipeline.model import cuda as gpu

    why = gpu.unavailable_reason()
    RESULTS.update(simulator=gpu.SIMULATOR, numpy=np.__version__)
    try:
        import numba

        RESULTS["numba"] = numba.__version__
        from importlib.metadata import version

        RESULTS["numba_cuda"] = version("numba-cuda")
    except Exception:
        pass
    if why:
        report("cuda available", False, why)
    else:
        dev = "simulator" if gpu.SIMULATOR else gpu.cuda.get_current_device().name
        dev = dev.decode() if isinstance(dev, bytes) else str(dev)
        RESULTS["device"] = dev
        report("cuda available", True, f"{dev}; numpy {np.__version__}, numba {RESULTS.get('numba')}, "
               f"numba-cuda {RESULTS.get('numba_cuda')}")
        for step in (lambda: identity(args.walkers or (64 if args.quick else 200_000)), ptx_check,
                     lambda: throughput(args.quick), lambda: None if args.skip_sweep else sweep_check(args.quick)):
            try:
                step()
            except Exception as e:  # a crash in one check is a FAIL line, the others still run
                report(getattr(step, "__name__", "check"), False, f"{type(e).__name__}: {e}")
    RESULTS["seconds"] = time.perf_counter() - t0
    RESULTS["passed"] = not FAILED
    print(f"{'ALL PASS' if not FAILED else 'FAILED: ' + ', '.join(FAILED)} ({RESULTS['seconds']:.0f} s)")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "check_cuda.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
