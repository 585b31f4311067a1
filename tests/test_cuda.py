"""The cuda backend under numba's CUDA simulator (no GPU needed): the same escape step as the CPU
kernel for every walker, censored and diverged ones included; a sweep on it writes the same cube.

The simulator runs the kernel's Python source, so these tests check the algorithm (streams,
rounds, divergence); the PTX test and tests/device/check_cuda.py check the GPU code generation.
NUMBA_ENABLE_CUDASIM is set only while numba.cuda is first imported, and removed again, so
processes started by later tests do not inherit it.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_had = "NUMBA_ENABLE_CUDASIM" in os.environ
_before = sys.modules.get("numba.cuda")
os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
try:
    from numba.core import config as _config

    _config.reload_config()
    try:
        from pipeline.model import cuda as gpu
    except Exception as e:  # pragma: no cover - depends on the environment
        gpu = None
        _why = f"pipeline.model.cuda not importable: {e}"
finally:
    if not _had:
        os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
        _config.reload_config()

if gpu is not None and gpu.cuda is None:
    _why = f"numba-cuda not importable: {gpu.unavailable_reason()}"
    gpu = None
elif gpu is not None and not gpu.SIMULATOR:
    _why = "numba.cuda was imported before this module without the simulator"
    gpu = None
pytestmark = pytest.mark.skipif(gpu is None, reason="" if gpu is not None else _why)

from helpers import assert_cubes_equal, write_spec  # noqa: E402
from pipeline import simulate  # noqa: E402
from pipeline.errors import InputError  # noqa: E402
from pipeline.model.kernels import DIVERGED, NOT_ESCAPED, escape_steps  # noqa: E402
from pipeline.model.landscape import find_pit  # noqa: E402
from pipeline.model.simulate import cell_key  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# (T, batch, depth, width, steps, first, count): every batch regime (one word feeds 64 // B steps;
# B = 64 one word a step; B > 64 two words a step), budgets that are not whole rounds of K, odd
# first walkers, and T = 1e300 in a deep narrow pit, where walkers overflow to -inf/NaN: with
# budget 1 a walker that has not escaped at step 1 keeps stepping to the end of its 64-step round
# and is DIVERGED if W stopped being finite there (that is the CPU kernel's rule).
CELLS = [
    (0.02, 1, 1.0, 0.1, 150, 0, 40),
    (0.03, 3, 1.0, 0.1, 100, 5, 40),
    (0.05, 64, 1.0, 0.1, 70, 3, 24),
    (0.05, 100, 1.0, 0.1, 70, 1, 24),
    (1e300, 1, 20.0, 0.01, 1, 7, 64),
    (1e300, 3, 20.0, 0.01, 1, 0, 64),
    (1e300, 1, 20.0, 0.01, 5, 11, 64),
]


@pytest.mark.parametrize("T,B,depth,width,steps,first,count", CELLS)
def test_cuda_escape_steps_equal_cpu_kernel(T, B, depth, width, steps, first, count):
    pit = find_pit(depth, width)
    key = cell_key(3, T, B, depth, width)
    args = (T, steps, B, depth, width, pit.w_start, pit.w_barrier, key, first, count)
    cpu = escape_steps(*args)
    got = gpu.escape_steps(*args)
    assert got.dtype == np.int64 and got.shape == (count,)
    np.testing.assert_array_equal(got, cpu)
    if T > 1.0:
        assert (cpu == DIVERGED).any() and (cpu > 0).any()  # the stress cell really diverges
    elif steps >= 100:
        assert (cpu == NOT_ESCAPED).any() and (cpu > 0).any()


def test_walker_blocks_at_odd_offsets_concatenate():
    pit = find_pit(1.0, 0.1)
    key = cell_key(5, 0.02, 3, 1.0, 0.1)
    whole = escape_steps(0.02, 120, 3, 1.0, 0.1, pit.w_start, pit.w_barrier, key, 0, 50)
    parts = [gpu.escape_steps(0.02, 120, 3, 1.0, 0.1, pit.w_start, pit.w_barrier, key, a, b - a)
             for a, b in ((0, 13), (13, 50))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert gpu.escape_steps(0.02, 120, 3, 1.0, 0.1, pit.w_start, pit.w_barrier, key, 0, 0).shape == (0,)


def test_simulate_backend_choice_changes_nothing():
    a = simulate(0.02, 100, 2, 1.0, 0.1, 48, seed=9)
    assert np.array_equal(simulate(0.02, 100, 2, 1.0, 0.1, 48, seed=9, backend="cuda"), a)
    assert np.array_equal(simulate(0.02, 100, 2, 1.0, 0.1, 48, seed=9, backend="auto"), a)
    with pytest.raises(InputError, match="unknown"):
        simulate(0.02, 100, 2, 1.0, 0.1, 48, seed=9, backend="tpu")


def test_sweep_on_cuda_backend_writes_the_cpu_cube(tmp_path):
    from distributed import LocalCluster

    from pipeline import run_sweep
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep import store
    from pipeline.sweep.runner import RunOptions

    kw = dict(walkers=130, T="[0.02, 0.05]", steps="[20, 40]", batch_size="[1, 3]")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0", resources={"GPU": 1}) as c:
        def run(name, backend):
            o = RunOptions(cluster=ClusterOptions(scheduler=c.scheduler_address), progress=False, backend=backend,
                           task_seconds=1e-9)
            return run_sweep(str(write_spec(tmp_path, name=name, **kw)), o)

        a = run("cpu", "cpu")
        b = run("gpu", "cuda")
    assert a.complete and b.complete and b.tasks_submitted > b.chunks_total  # walker blocks on the GPU path too
    assert_cubes_equal(a.path, b.path)
    assert store.Store(b.path).backend_counts() == {"cuda": b.chunks_total}
    assert store.Store(a.path).backend_counts() == {"cpu": a.chunks_total}


def _no_sim_env():
    return {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"} | {"PYTHONPATH": str(ROOT)}


def test_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    code = ("from pipeline.model import cuda, backends\n"
            "import sys\n"
            "if cuda.is_available(): print('HAS-GPU'); sys.exit(0)\n"
            "from pipeline.cli import main\n"
            f"sys.exit(main(['run', {str(write_spec(tmp_path, walkers=8))!r}, '--backend', 'cuda', '-q']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_no_sim_env(), timeout=300)
    if "HAS-GPU" in r.stdout:
        pytest.skip("this host has a GPU")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend cuda" in lines[0] and "GPU" in lines[0]
    assert not (tmp_path / "t.zarr").exists()


def test_ptx_has_only_explicit_fmas():
    """NVVM/ptxas contract a * b + c into FMA: every f64 add/mul must be .rn and fma.rn.f64 come
    in whole steps' worth of explicit FMAs. Needs libNVVM (not a GPU); skipped without it."""
    code = ("import json\nfrom pipeline.model import cuda\n"
            "t = cuda.ptx((9, 0))\nprint(json.dumps(cuda.ptx_report(t)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_no_sim_env(), timeout=300)
    if r.returncode != 0:
        pytest.skip(f"no PTX without libNVVM here: {r.stderr.strip().splitlines()[-1][:200]}")
    import json

    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["ok"], rep
    assert rep["plain_add_mul_f64"] == 0 and rep["fma_rn_f64"] % 30 == 0 and rep["rn_add_mul"] > 0
