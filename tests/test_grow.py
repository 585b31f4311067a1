"""Grow: a store made from a smaller spec grows in place to a bigger one, and the grown cube equals
a fresh run of the bigger spec; anything but growth is refused; a killed grow resumes exactly."""

import os
import subprocess
import sys

import pytest

from helpers import assert_cubes_equal, kill_when_building, run_opts, write_spec
from pipeline import open_cube, run_sweep
from pipeline.cli import main
from pipeline.sweep.store import Store


SMALL = dict(walkers=150, T="[0.012, 0.02]", steps="[100, 1000]", batch_size="[2]", depth="[1.0]", width="[0.1]")


@pytest.mark.parametrize("big", [
    dict(walkers=150, T="[0.01, 0.012, 0.016, 0.02]"),                       # T added on both sides
    dict(walkers=400, batch_size="[1, 2, 3]", depth="[1.0, 1.5]"),           # axes added and more walkers
    dict(walkers=333, T="[0.012, 0.02, 0.03]"),                              # more walkers, not a lane multiple
], ids=["T", "axes+walkers", "walkers"])
def test_grown_cube_equals_a_fresh_run(tmp_path, cluster2, big):
    kw = dict(SMALL, **big)
    store = tmp_path / "g.zarr"
    run_sweep(str(write_spec(tmp_path, name="small", path=str(store), **SMALL)), run_opts(cluster2, task_seconds=1e-3))
    s = run_sweep(str(write_spec(tmp_path, name="big", path=str(store), **kw)), run_opts(cluster2, task_seconds=1e-3))
    assert s.complete
    fresh = run_sweep(str(write_spec(tmp_path, name="fresh", **kw)), run_opts(cluster2, task_seconds=1e-3))
    assert_cubes_equal(store, fresh.path)
    assert s.walker_steps < fresh.walker_steps  # the old walkers were not simulated again
    ds = open_cube(store)
    assert (ds["n_walkers"].values == kw["walkers"]).all()
    assert '"op": "grow"' in ds.attrs["history"]
    assert not [p for p in tmp_path.iterdir() if ".grow-" in p.name or ".old-" in p.name]


def test_grow_with_walker_blocks_and_the_exact_solver(tmp_path, cluster2):
    """Cells split into walker blocks (tiny task size) and method both: the old solver values are
    kept, new cells are solved, and the cube equals a fresh run."""
    small = dict(SMALL, walkers=300, T="[0.02, 0.03]", batch_size="[1]", steps="[100]")
    big = dict(small, walkers=700, T="[0.02, 0.025, 0.03]")
    store = tmp_path / "b.zarr"
    o = run_opts(cluster2, task_seconds=1e-5)
    run_sweep(str(write_spec(tmp_path, name="s", path=str(store), method="both", **small)), o)
    s = run_sweep(str(write_spec(tmp_path, name="b", path=str(store), method="both", **big)), o)
    fresh = run_sweep(str(write_spec(tmp_path, name="f", method="both", **big)), o)
    assert s.complete and s.tasks_submitted > 3
    assert_cubes_equal(store, fresh.path)


@pytest.mark.parametrize("change,words", [
    (dict(seed=8), "seed 7 -> 8"),
    (dict(steps="[100]"), "steps [100, 1000] -> [100]"),
    (dict(T="[0.012]"), "T value(s) 0.02 removed"),
    (dict(walkers=100), "walkers 150 -> 100 (fewer)"),
    (dict(method="both"), "method 'montecarlo' -> 'both'"),
])
def test_anything_but_growth_is_refused_in_one_line(tmp_path, cluster2, capsys, change, words):
    store = tmp_path / "r.zarr"
    run_sweep(str(write_spec(tmp_path, name="a", path=str(store), **SMALL)), run_opts(cluster2))
    before = {p.name: p.stat().st_mtime_ns for p in store.rglob("*")}
    f = write_spec(tmp_path, name="b", path=str(store), **dict(SMALL, **change))
    capsys.readouterr()
    assert main(["validate", str(f), "--store", str(store)]) == 2
    assert main(["run", str(f), "--scheduler", cluster2, "-q"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 2, err
    assert {p.name: p.stat().st_mtime_ns for p in store.rglob("*")} == before


def test_validate_says_what_a_grow_computes(tmp_path, cluster2, capsys):
    store = tmp_path / "v.zarr"
    run_sweep(str(write_spec(tmp_path, name="a", path=str(store), **SMALL)), run_opts(cluster2))
    f = write_spec(tmp_path, name="b", path=str(store), **dict(SMALL, walkers=200, T="[0.012, 0.016, 0.02]"))
    capsys.readouterr()
    assert main(["validate", str(f), "--store", str(store), "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["store_action"] == "grow" and info["store_added"] == {"T": [0.016]}
    assert info["store_new_cells"] == 1 and info["store_cells_gaining_walkers"] == 2
    assert info["store_walker_steps_upper_bound"] == (1 * 200 + 2 * 50) * 1000


@pytest.mark.slow
def test_killed_grow_resumes_without_counting_a_block_twice(tmp_path, cluster2):
    """SIGKILL the client in the middle of a grow; the same command finishes it, every cell has
    exactly the planned walkers, and the cube equals a fresh run."""
    small = dict(walkers=2000, T="{start = 0.006, stop = 0.009, num = 8}", steps="[100, 10000]", batch_size="[1]",
                 depth="[1.0]", width="[0.1]")
    big = dict(small, walkers=6000, T="{start = 0.006, stop = 0.009, num = 15}")
    store = tmp_path / "k.zarr"
    run_sweep(str(write_spec(tmp_path, name="s", path=str(store), **small)), run_opts(cluster2, task_seconds=0.2))
    f = write_spec(tmp_path, name="b", path=str(store), **big)
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(f), "--workers", "1", "--task-seconds", "0.2",
                          "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=os.environ | {"PYTHONWARNINGS": "ignore", "ESCAPE_SWEEP_FLUSH_SECONDS": "0"})
    built = kill_when_building(p, tmp_path, chunks=2)
    done, total = Store(built).chunk_count()
    assert 0 < done < total
    assert open_cube(store).attrs["walkers"] == 2000  # the old cube is untouched until the swap
    s = run_sweep(str(f), run_opts(cluster2, task_seconds=0.2))
    assert s.complete and s.chunks_done_before == done
    ds = open_cube(store)
    assert (ds["n_walkers"].values == 6000).all()
    fresh = run_sweep(str(write_spec(tmp_path, name="f", **big)), run_opts(cluster2, task_seconds=0.2))
    assert_cubes_equal(store, fresh.path)
