"""Fault tolerance: a worker killed with SIGKILL while a sweep's tasks run on it; the sweep
completes on the survivor and its cube equals a clean run's, every variable."""

import os
import signal
import subprocess
import sys
import time

import pytest
from pathlib import Path

from helpers import assert_cubes_equal, write_spec
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
KW = dict(walkers=10000, T="{start = 0.006, stop = 0.009, num = 12}", steps="[100, 20000]", batch_size="[1]")


def test_sweep_survives_a_worker_killed_mid_run(tmp_path, dask_processes):
    from distributed import Client

    addr, procs = dask_processes
    clean = write_spec(tmp_path, name="clean", **KW)
    assert main(["run", str(clean), "--scheduler", addr, "--task-seconds", "0.5", "-q"]) == 0

    f = write_spec(tmp_path, name="fault", **KW)
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(f), "--scheduler", addr,
                            "--task-seconds", "0.5", "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env=os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)})
    try:
        with Client(addr, timeout="30s") as c:
            victim = None
            deadline = time.time() + 60
            while victim is None and time.time() < deadline and run.poll() is None:
                busy = {w: keys for w, keys in c.processing().items() if keys}
                if len(busy) == 2 and all(any("fault-compute-" in k for k in ks) for ks in busy.values()):
                    victim = procs[1]  # the first worker process group (nanny + worker)
                time.sleep(0.05)
            assert victim is not None, "tasks never ran on both workers"
            assert run.poll() is None  # the sweep is still running
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, err
            assert out.startswith("done: ")
            assert len(c.scheduler_info()["workers"]) == 1  # the sweep really finished on the survivor
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
    assert_cubes_equal(tmp_path / "fault.zarr", tmp_path / "clean.zarr")


@pytest.mark.slow
def test_library_noise_goes_to_the_log_beside_the_store(tmp_path):
    """A worker process killed under the embedded cluster makes Dask talk (nanny warnings, restarts):
    the terminal keeps only escape-sweep's own lines, the log beside the store gets Dask's."""
    import psutil

    f = write_spec(tmp_path, name="noisy", **KW)
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(f), "--workers", "2", "--task-seconds", "0.5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           cwd=tmp_path, env=os.environ | {"ESCAPE_SWEEP_PROGRESS_SECONDS": "0.5", "ESCAPE_SWEEP_LOCAL": "processes"})
    lines = []
    try:
        for line in run.stderr:
            lines.append(line)
            if "progress" in line:
                break
        workers = [p for p in psutil.Process(run.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline()) or "forkserver" in " ".join(p.cmdline())]
        assert workers, f"no worker processes under the run: {lines}"
        os.kill(workers[0].pid, signal.SIGKILL)
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
    lines.extend(err.splitlines(keepends=True))
    assert run.returncode == 0, "".join(lines)
    ours = [ln for ln in lines if ln.strip()]
    assert all(ln.startswith("escape-sweep: ") for ln in ours), "".join(ours)
    log = tmp_path / "noisy.zarr.log"
    assert f"go to {log}" in "".join(ours) or "go to noisy.zarr.log" in "".join(ours)
    text = log.read_text()
    assert "distributed." in text and ("killed" in text.lower() or "restart" in text.lower()), text[-2000:]
