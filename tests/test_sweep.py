"""Sweeps end to end: spec -> Dask tasks on real clusters -> Zarr cube; determinism; resume."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from distributed import LocalCluster

from helpers import assert_cubes_equal, run_opts, write_spec
from pipeline import open_cube, run_sweep, simulate
from pipeline.sweep import cube as cube_layout
from pipeline.sweep import store as cubemod
from pipeline.cli import main


def test_cube_matches_simulate_exactly(tmp_path, cluster2):
    f = write_spec(tmp_path, walkers=700, T="[0.012, 0.016, 0.02]", steps="[50, 100, 1000]",
                   batch_size="[1, 3]", depth="[1.0, 2.0]", width="[0.1]")
    s = run_sweep(str(f), run_opts(cluster2, task_seconds=1e-3))
    assert s.complete and s.chunks_computed == s.chunks_total
    ds = open_cube(s.path)
    assert ds["T"].dtype == np.float64 and ds["steps"].dtype == np.int64 and ds["batch_size"].dtype == np.int64
    for T in ds.T.values:
        for B in ds.batch_size.values:
            for d in ds.depth.values:
                esc = simulate(T, 1000, B, d, 0.1, 700, seed=7)
                cell = ds.sel(T=T, batch_size=B, depth=d, width=0.1)
                for budget in ds.steps.values:
                    c = cell.sel(steps=budget)
                    k = int(((esc > 0) & (esc <= budget)).sum())
                    assert int(c.n_escaped) == k and int(c.n_walkers) == 700
                    assert float(c.p_escape) == k / 700
                    assert int(c.exposure) == int(np.where((esc > 0) & (esc <= budget), esc, budget).sum())
                    lo, hi = float(c.p_escape_low), float(c.p_escape_high)
                    assert lo <= k / 700 <= hi
                assert int(cell.escape_hist.sum()) == int((esc > 0).sum())
    for v in cube_layout.VARIABLES:
        assert {"long_name", "units", "description"} <= set(ds[v].attrs), v
        assert ds[v].dims == ("T", "steps", "batch_size", "depth", "width")
    assert ds.attrs["seed"] == 7 and "spec" in ds.attrs and ds.attrs["completed"]
    assert float(ds.w_start.sel(depth=1.0, width=0.1)) == pytest.approx(1.0036974, abs=1e-6)


def test_plain_xarray_opens_the_store_quietly(tmp_path, cluster2):
    import warnings

    s = run_sweep(str(write_spec(tmp_path, walkers=64)), run_opts(cluster2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(s.path)
    assert ds.sizes["T"] == 4 and ds.p_escape.dtype == np.float64


def test_same_cube_across_worker_counts_and_task_sizes(tmp_path, cluster2):
    kw = dict(walkers=3000, T="{start = 0.013, stop = 0.034, num = 8}", steps="[10, 100, 2000]", batch_size="[1, 4]")
    a = run_sweep(str(write_spec(tmp_path, name="a", **kw)), run_opts(cluster2, task_seconds=1e-4))
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as c1:
        b = run_sweep(str(write_spec(tmp_path, name="b", **kw)), run_opts(c1.scheduler_address, task_seconds=100.0))
    # a third partition: one cell split into several walker blocks
    c = run_sweep(str(write_spec(tmp_path, name="c", **kw)), run_opts(cluster2, task_seconds=0.002))
    assert open_cube(a.path).attrs["chunk_shape"] != open_cube(b.path).attrs["chunk_shape"]
    assert c.tasks_submitted > c.chunks_total  # walker blocks really happened
    assert_cubes_equal(a.path, b.path)
    assert_cubes_equal(a.path, c.path)


def test_a_cell_does_not_depend_on_the_grid_around_it(tmp_path, cluster2):
    a = run_sweep(str(write_spec(tmp_path, name="a", T="[0.01, 0.015]", walkers=2000)), run_opts(cluster2))
    b = run_sweep(str(write_spec(tmp_path, name="b", T="[0.012, 0.015, 0.02]", walkers=2000)), run_opts(cluster2))
    ca = open_cube(a.path).sel(T=0.015)
    cb = open_cube(b.path).sel(T=0.015)
    assert_cubes_equal(ca.drop_vars("T"), cb.drop_vars("T"))
    assert int(ca.n_escaped.sum()) > 0


def test_default_embedded_cluster_via_cli(tmp_path, capsys):
    f = write_spec(tmp_path, walkers=200)
    assert main(["run", str(f), "--workers", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("done: ") and "walker-steps/s" in out
    assert cubemod.chunk_count(tmp_path / "t.zarr")[0] == cubemod.chunk_count(tmp_path / "t.zarr")[1]


def test_separate_scheduler_and_worker_processes(tmp_path, dask_processes, cluster2):
    addr, _ = dask_processes
    f = write_spec(tmp_path, name="remote", walkers=1000)
    assert main(["run", str(f), "--scheduler", addr, "-q"]) == 0
    ref = run_sweep(str(write_spec(tmp_path, name="local", walkers=1000)), run_opts(cluster2))
    assert_cubes_equal(tmp_path / "remote.zarr", ref.path)


def test_other_spec_is_refused_unless_overwrite(tmp_path, cluster2, capsys):
    f = write_spec(tmp_path, walkers=100, path=str(tmp_path / "x.zarr"))
    run_sweep(str(f), run_opts(cluster2))
    g = write_spec(tmp_path, name="other", seed=8, walkers=101, path=str(tmp_path / "x.zarr"))
    assert main(["run", str(g), "--scheduler", cluster2, "-q"]) == 2
    err = capsys.readouterr().err
    assert "different spec (seed 7 -> 8)" in err and "--overwrite" in err and err.count("\n") == 1
    assert open_cube(tmp_path / "x.zarr").attrs["walkers"] == 100  # untouched
    assert main(["run", str(g), "--scheduler", cluster2, "-q", "--overwrite"]) == 0
    assert open_cube(tmp_path / "x.zarr").attrs["walkers"] == 101
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("mine")
    assert main(["run", str(f), "--scheduler", cluster2, "-q", "-o", str(tmp_path / "junk")]) == 2
    assert (tmp_path / "junk" / "file").read_text() == "mine"


def test_rerun_of_a_finished_store_computes_nothing(tmp_path, cluster2):
    f = write_spec(tmp_path, walkers=100)
    run_sweep(str(f), run_opts(cluster2))
    s = run_sweep(str(f), run_opts(cluster2))
    assert s.complete and s.tasks_submitted == 0 and s.chunks_computed == 0


def _wait_chunks(store, at_least, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.returncode}")
        try:
            if cubemod.is_cube(store) and cubemod.chunk_count(store)[0] >= at_least:
                return cubemod.chunk_count(store)[0]
        except Exception:  # the store is being created
            pass
        time.sleep(0.05)
    raise AssertionError("no progress")


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGKILL", "SIGINT"])  # SIGINT with the slow scenarios: the suite stays under 5 min
def test_interrupted_run_resumes_to_the_same_cube(tmp_path, cluster2, sig):
    # ~6 s of kernel work on one worker, so the kill lands mid-sweep even on a slow machine
    kw = dict(walkers=16000, T="{start = 0.006, stop = 0.009, num = 32}", steps="[100, 10000]", batch_size="[1]")
    f = write_spec(tmp_path, name="r", **kw)
    store = tmp_path / "r.zarr"
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(f), "--workers", "1", "--task-seconds", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=os.environ | {"PYTHONWARNINGS": "ignore"})
    try:
        _wait_chunks(store, 2, p)
        if sig == signal.SIGKILL:
            os.killpg(p.pid, signal.SIGKILL)
        else:
            os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if sig == signal.SIGINT:
        assert p.returncode == 130 and "resumes" in err
    done, total = cubemod.chunk_count(store)
    assert 0 < done < total
    r = subprocess.run([sys.executable, "-m", "pipeline", "status", str(store)], capture_output=True, text=True)
    assert r.returncode == 0 and f"{done}/{total} done" in r.stdout and "incomplete" in r.stdout
    assert f"computed by: cpu {done} chunks\n" in r.stdout, r.stdout  # chunks not computed are not counted
    s = run_sweep(str(f), run_opts(cluster2))
    assert s.complete and s.chunks_done_before == done and s.tasks_submitted == total - done
    ref = run_sweep(str(write_spec(tmp_path, name="ref", **kw)), run_opts(cluster2))
    assert_cubes_equal(store, ref.path)


def test_query_csv_content(tmp_path, cluster2, capsys):
    f = write_spec(tmp_path, walkers=500)
    s = run_sweep(str(f), run_opts(cluster2))
    capsys.readouterr()
    assert main(["query", s.path, "--var", "p_escape", "--var", "n_escaped", "--sel", "steps=1000",
                 "--sel", "batch_size=1", "--range", "T=0.015:0.03", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "T,steps,batch_size,depth,width,p_escape,n_escaped"
    rows = [l.split(",") for l in lines[1:]]
    assert [float(r[0]) for r in rows] == [0.016, 0.02, 0.025]
    for r in rows:
        esc = simulate(float(r[0]), 1000, 1, 1.0, 0.1, 500, seed=7)
        assert int(r[6]) == int((esc > 0).sum()) and float(r[5]) == pytest.approx(int(r[6]) / 500)
    assert main(["query", s.path, "--var", "nope"]) == 2
    assert "no such variable" in capsys.readouterr().err
    assert main(["query", s.path, "--sel", "T=0.0111"]) == 2
    assert "no T value within 1%" in capsys.readouterr().err
    assert main(["query", s.path, "--range", "T=0.02:0.01"]) == 2
    assert "LO <= HI" in capsys.readouterr().err
    assert main(["query", str(tmp_path), "--var", "p_escape"]) == 2


def test_markov_and_both_methods_through_the_runner(tmp_path, cluster2):
    from pipeline.model.markov import markov_cell

    kw = dict(T="[0.015, 0.02]", steps="[100, 1000]", batch_size="[1, 2]")
    m = run_sweep(str(write_spec(tmp_path, name="m", method="markov", walkers=1, **kw)), run_opts(cluster2))
    b = run_sweep(str(write_spec(tmp_path, name="b", method="both", walkers=4000, **kw)), run_opts(cluster2))
    dm, db = open_cube(m.path), open_cube(b.path)
    for T in (0.015, 0.02):
        for B in (1, 2):
            r = markov_cell(T, B, 1.0, 0.1, (100, 1000))
            cm = dm.sel(T=T, batch_size=B, depth=1.0, width=0.1)
            cb = db.sel(T=T, batch_size=B, depth=1.0, width=0.1)
            assert float(cm.mfpt) == r.mfpt and float(cb.mfpt) == r.mfpt
            assert np.array_equal(cm.p_escape.values, r.p_escape)
            assert np.array_equal(cb.markov_p_escape.values, r.p_escape)
            assert np.allclose(cm.log10_escape_time.values, np.log10(r.mfpt))
            assert int(cm.n_walkers.sum()) == 0 and int(cb.n_walkers.sel(steps=100)) == 4000
            esc = simulate(T, 1000, B, 1.0, 0.1, 4000, seed=7)  # "both" keeps the Monte Carlo as it is
            assert int(cb.n_escaped.sel(steps=1000)) == int((esc > 0).sum())
    # the flag is the exact solver's P inside the Monte Carlo's 99% interval: true nearly everywhere
    assert db.consistent.dtype == bool and db.consistent.values.mean() >= 0.75


def test_progress_in_a_log_is_plain_lines_with_an_eta_from_work(tmp_path):
    """stderr that is not a terminal (a batch job's log) gets whole lines, never carriage returns,
    every ESCAPE_SWEEP_PROGRESS_SECONDS, ending at all chunks done with ETA 0."""
    f = write_spec(tmp_path, name="log", walkers=3000, T="[0.012, 0.014, 0.016, 0.018, 0.02, 0.025]")
    r = subprocess.run([sys.executable, "-m", "pipeline", "run", str(f), "--workers", "1", "--task-seconds", "0.01"],
                       capture_output=True, text=True, timeout=300,
                       env=os.environ | {"ESCAPE_SWEEP_PROGRESS_SECONDS": "0.01", "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("escape-sweep: progress ")]
    assert lines, r.stderr
    total = open_cube(tmp_path / "log.zarr").attrs["chunk_shape"] and cubemod.chunk_count(tmp_path / "log.zarr")[1]
    assert f"{total}/{total} chunks" in lines[-1] and "ETA 0s" in lines[-1]
