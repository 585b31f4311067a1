"""Refine: walkers where intervals are wide, T where ln tau(1/T) is least resolved; deterministic,
within caps, resumable after SIGKILL without counting a walker twice."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_cubes_equal, kill_when_building, run_opts, write_spec
from pipeline import open_cube, run_sweep
from pipeline.sweep.refine import RefineOptions, half_widths
from pipeline.sweep.runner import refine_store
from pipeline.cli import main


CUBE = dict(walkers=256, T="[0.014, 0.017, 0.02, 0.025]", steps="[1000]", batch_size="[1]", depth="[1.0]",
            width="[0.1]")


@pytest.fixture(scope="module")
def base(tmp_path_factory, cluster2):
    d = tmp_path_factory.mktemp("refine")
    s = run_sweep(str(write_spec(d, name="base", **CUBE)), run_opts(cluster2, task_seconds=0.01))
    return s.path


def test_refine_meets_the_target_deterministically(tmp_path, base, cluster2):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    shutil.copytree(base, a)
    shutil.copytree(base, b)
    ro = RefineOptions(targets={"log10_escape_time": 0.05}, add_T=1, rounds=3)
    ra = refine_store(str(a), ro, run_opts(cluster2, task_seconds=0.01))
    rb = refine_store(str(b), ro, run_opts(cluster2, task_seconds=0.01))
    assert [r["walkers_added"] for r in ra] == [r["walkers_added"] for r in rb]
    assert_cubes_equal(a, b)  # the same command on copies of one store: identical cubes
    ds = open_cube(a).load()
    ratio, _ = half_widths(ds, ro)
    done = [r for r in ra if "stopped" not in r]
    assert ds.sizes["T"] == 4 + sum(len(r["T_added"]) for r in done) and done[0]["T_added"]
    assert np.nanmax(ratio) <= 1.0 or len(done) == 3
    n = ds["n_walkers"].isel(steps=0).squeeze().values
    assert (n >= 256).all() and (n > 256).any() and (n % 64 == 0).all()
    history = json.loads(ds.attrs["history"])
    assert [h["op"] for h in history] == ["refine"] * len(done)
    # every walker counted once: each cell equals a fresh run with that many walkers
    for t in ds["T"].values[:2]:
        cell_n = int(ds["n_walkers"].sel(T=t).squeeze().values[()])
        one = run_sweep(str(write_spec(tmp_path, name=f"one{t}", **dict(CUBE, walkers=cell_n, T=f"[{float(t)!r}]"))),
                        run_opts(cluster2))
        ref = open_cube(one.path).load()
        for v in ("n_escaped", "exposure", "escape_hist"):
            np.testing.assert_array_equal(ds[v].sel(T=t).values, ref[v].squeeze("T").values
                                          if "T" in ref[v].dims else ref[v].values)


def test_caps_are_kept_and_reported(tmp_path, base, cluster2, capsys):
    c = tmp_path / "c.zarr"
    shutil.copytree(base, c)
    capsys.readouterr()
    assert main(["refine", str(c), "--target", "log10_escape_time=0.001", "--max-walkers", "512",
                 "--scheduler", cluster2, "-q", "--task-seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "cells still above target" in out
    n = open_cube(c)["n_walkers"].values
    assert n.max() <= 512
    d = tmp_path / "d.zarr"
    shutil.copytree(base, d)
    rounds = refine_store(str(d), RefineOptions(targets={"log10_escape_time": 0.001}, max_walker_steps=1e6),
                          run_opts(cluster2, task_seconds=0.01))
    assert sum(r["walker_steps"] for r in rounds) <= 2e6
    assert rounds[-1]["stopped"] == "the walker-steps cap" and rounds[-1]["cells_above_target"] > 0


@pytest.mark.parametrize("argv,words", [
    (["--target", "nope=1"], "unknown variable"),
    (["--target", "p_escape=0"], "must be a finite number > 0"),
    (["--target", "p_escape"], "expected VAR=HALF_WIDTH"),
    (["--rounds", "0"], "--rounds"),
    (["--T-range", "0.02:0.01"], "LO must not exceed HI"),
])
def test_bad_refine_input_is_one_line(base, capsys, argv, words):
    capsys.readouterr()
    assert main(["refine", base, *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


@pytest.mark.slow
def test_killed_refine_resumes_to_the_same_cube(tmp_path, cluster2):
    """SIGKILL the client mid-round; the same command finishes the round; the cube equals the one an
    uninterrupted refine makes from a copy (so no walker block is counted twice or lost)."""
    kw = dict(walkers=2048, T="{start = 0.007, stop = 0.01, num = 6}", steps="[10000]", batch_size="[1]",
              depth="[1.0]", width="[0.1]")
    s = run_sweep(str(write_spec(tmp_path, name="k", **kw)), run_opts(cluster2, task_seconds=0.1))
    copy = tmp_path / "copy.zarr"
    shutil.copytree(s.path, copy)
    argv = ["--target", "log10_escape_time=0.02", "--rounds", "1", "--max-walkers", "8192", "--task-seconds", "0.1",
            "-q"]
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "refine", s.path, "--workers", "1", *argv],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=os.environ | {"PYTHONWARNINGS": "ignore", "ESCAPE_SWEEP_FLUSH_SECONDS": "0"})
    kill_when_building(p, tmp_path, chunks=1)
    assert main(["refine", s.path, "--scheduler", cluster2, *argv]) == 0
    assert main(["refine", str(copy), "--scheduler", cluster2, *argv]) == 0
    assert_cubes_equal(s.path, copy)


def test_cells_without_escapes_are_counted_not_reported_as_inf(tmp_path, cluster2, capsys):
    """A cell whose walkers never escape (T = 0.003: ln tau ~ 60) has no bounded interval: the
    round's line and --json give the worst finite ratio and count such cells, never inf (which is
    not JSON)."""
    s = run_sweep(str(write_spec(tmp_path, name="cold", **dict(CUBE, walkers=128, T="[0.003, 0.02]"))),
                  run_opts(cluster2, task_seconds=0.01))
    capsys.readouterr()
    assert main(["refine", s.path, "--target", "log10_escape_time=0.05", "--rounds", "1", "--max-walkers", "256",
                 "--scheduler", cluster2, "--task-seconds", "0.01", "--json"]) == 0
    cap = capsys.readouterr()
    rounds = json.loads(cap.out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    assert rounds[0]["cells_unbounded"] == 1
    assert rounds[0]["worst_ratio"] is None or np.isfinite(rounds[0]["worst_ratio"])
    assert "(1 cell without escapes: no bounded interval yet)" in cap.err and "inf" not in cap.err
