"""Issue 15: never write into a store you no longer own; detect damage; refuse what cannot finish."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_cubes_equal, run_opts, write_spec
from pipeline.cli import main
from pipeline.sweep import store as cubemod
from pipeline.sweep.lock import lock_path

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT), "ESCAPE_SWEEP_LOCK_TIMEOUT": "1",
                      "ESCAPE_SWEEP_FLUSH_SECONDS": "0"}  # every result written at once: these tests are about each write
# a few seconds of kernel work on one worker, in tasks of ~0.2 s
SLOW = dict(walkers=12000, T="{start = 0.006, stop = 0.009, num = 16}", steps="[100, 10000]", batch_size="[1]")


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _start(spec):
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(spec), "--workers", "1",
                             "--task-seconds", "0.2", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=ENV)


def _wait_chunks(store, at_least, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if cubemod.is_cube(store) and cubemod.chunk_count(store)[0] >= at_least:
                return cubemod.chunk_count(store)[0]
        except Exception:  # being created
            pass
        time.sleep(0.05)
    raise AssertionError("no progress")


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGCONT)
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


@pytest.mark.slow
def test_paused_run_keeps_its_lock_and_finishes_the_same_cube(tmp_path, procs):
    f = write_spec(tmp_path, name="p", **SLOW)
    g = write_spec(tmp_path, name="q", **(SLOW | dict(walkers=1000)), path=str(tmp_path / "p.zarr"))
    store = tmp_path / "p.zarr"
    a = _start(f)
    procs.append(a)
    _wait_chunks(store, 1, a)
    os.killpg(a.pid, signal.SIGSTOP)  # Ctrl-Z: the run and its workers
    try:
        time.sleep(2.5)  # its heartbeat is older than the (test) timeout of 1 s
        before = cubemod.chunk_count(store)[0]
        for spec, extra in ((f, ()), (g, ("--overwrite",))):
            b = _cli("run", spec, "--workers", "1", "-q", *extra)
            assert b.returncode == 1, b.stderr
            assert f"in use by another escape-sweep run (pid {a.pid}" in b.stderr
            assert len(b.stderr.strip().splitlines()) == 1, b.stderr
        assert cubemod.chunk_count(store)[0] == before and cubemod.read_attrs(store)["walkers"] == 12000
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    ref = _cli("run", write_spec(tmp_path, name="ref", **SLOW), "--workers", "1", "-q")
    assert ref.returncode == 0, ref.stderr
    assert_cubes_equal(store, tmp_path / "ref.zarr")


@pytest.mark.slow
def test_a_kill_between_results_loses_at_most_one_flush_interval(tmp_path, procs):
    """Results are flushed while the client waits for the next one, not only when one arrives: two
    chunks finish together (two worker threads) and the next two take seconds; SIGKILL the client
    1.5 s after the second arrived (flush interval 0.5 s): both are recorded on disk, undamaged."""
    spec = write_spec(tmp_path, walkers=400_000, T="{start = 0.004, stop = 0.006, num = 8}", steps="[1000]",
                      batch_size="[1]")
    # a progress line on every result (so the test sees each one as it arrives), chunks of ~3 s
    env = ENV | {"ESCAPE_SWEEP_FLUSH_SECONDS": "0.5", "ESCAPE_SWEEP_PROGRESS_SECONDS": "1e-6",
                 "ESCAPE_SWEEP_LOCAL": "threads"}
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(spec), "--workers", "2", "--task-seconds", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    procs.append(p)
    seen, lines = 0, []
    deadline = time.time() + 120
    while seen < 2 and time.time() < deadline:
        line = p.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
        m = re.search(r"progress (\d+)/(\d+) chunks", line)
        seen = int(m.group(1)) if m else seen
    time.sleep(1.5)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    store = tmp_path / "t.zarr"
    assert cubemod.chunk_count(store)[0] >= seen >= 2, "".join(lines)
    assert cubemod.Store(store).verify()["damaged"] == []


def test_run_that_lost_its_lock_stops_without_writing(tmp_path, procs):
    # 4x SLOW's walkers (~13 s of work, of which the test waits only for the first chunk): the single
    # worker computes while the store is created, so a short sweep could be all done when it is paused
    f = write_spec(tmp_path, name="p", **dict(SLOW, walkers=4 * SLOW["walkers"]))
    store = tmp_path / "p.zarr"
    a = _start(f)
    procs.append(a)
    _wait_chunks(store, 1, a)
    os.killpg(a.pid, signal.SIGSTOP)
    # while it is paused, a run on another host sharing the filesystem judges it dead and takes over
    other = dict(pid=4242, host="elsewhere.example", started=time.time(), heartbeat=time.time() + 3600,
                 token="z" * 32)
    lock_path(store).write_text(json.dumps(other))
    done, total = cubemod.chunk_count(store)
    assert done < total, "the sweep was finished before it was paused"
    os.killpg(a.pid, signal.SIGCONT)
    out, err = a.communicate(timeout=120)
    assert a.returncode == 1, err
    assert "lost the store lock" in err and "elsewhere.example" in err
    ours = [l for l in err.splitlines() if l.startswith("escape-sweep")]  # (workers may log their cancelled task)
    assert len(ours) == 1 and "Traceback" not in err, err
    assert json.loads(lock_path(store).read_text()) == other  # neither rewritten nor removed
    assert cubemod.chunk_count(store)[0] <= done + 1  # at most one write that passed its check before the pause


def test_store_temp_dirs_ignore_planted_symlinks(tmp_path):
    from pipeline.sweep import partition
    from pipeline.sweep.spec import load_spec

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    spec = load_spec(write_spec(tmp_path, walkers=10))
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # the old predictable names
        (tmp_path / f".t.zarr.new-{pid}").symlink_to(victim)
        (tmp_path / f".t.zarr.old-{pid}").symlink_to(victim)
    chunks = partition.chunk_shape(spec)
    for _ in range(2):  # create, then replace
        cubemod.Store(tmp_path / "t.zarr").create(spec, chunks, partition.spec_edges(spec),
                                                  partition.chunk_grid(spec, chunks))
    assert sorted(p.name for p in victim.iterdir()) == ["keep"] and (victim / "keep").read_text() == "precious"
    assert cubemod.is_cube(tmp_path / "t.zarr")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".t.zarr.") and not p.is_symlink()
                and "lock" not in p.name]


def test_overwrite_replaces_only_a_cube_and_is_never_abbreviated(tmp_path, capsys):
    f = write_spec(tmp_path, walkers=10)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "thesis.tex").write_text("mine")
    assert main(["run", str(f), "-o", str(junk), "--overwrite", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not an escape-sweep cube" in err and err.count("\n") == 1
    assert (junk / "thesis.tex").read_text() == "mine"
    (tmp_path / "afile").write_text("data")
    assert main(["run", str(f), "-o", str(tmp_path / "afile"), "--overwrite", "-q"]) == 2
    assert (tmp_path / "afile").read_text() == "data"
    with pytest.raises(SystemExit) as e:
        main(["run", str(f), "-o", str(junk), "--over", "-q"])
    assert e.value.code == 2
    assert "unrecognized arguments: --over" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["status", str(junk), "--max", "3"])


def test_damage_is_detected_by_status_verify_and_query_and_repaired(tmp_path, cluster1, capsys, monkeypatch):
    from pipeline import run_sweep

    # one storage chunk per task chunk, so each damaged file hits one chunk (test_store_scale.py
    # damages a block of many)
    monkeypatch.setenv("ESCAPE_SWEEP_STORE_BLOCK", "1")
    f = write_spec(tmp_path, walkers=300)  # 8 one-cell chunks over (T, batch_size)
    run_sweep(str(f), run_opts(cluster1))
    run_sweep(str(write_spec(tmp_path, name="ref", walkers=300)), run_opts(cluster1))
    s = tmp_path / "t.zarr"
    assert main(["verify", str(s)]) == 0
    assert "chunks checked: 8, damaged: 0" in capsys.readouterr().out
    trunc = s / "n_escaped/c/0/0/0/0/0"
    trunc.write_bytes(trunc.read_bytes()[:7])  # truncated
    a, b = s / "p_escape/c/1/0/0/0/0", s / "p_escape/c/2/0/0/0/0"
    ab, bb = a.read_bytes(), b.read_bytes()
    a.write_bytes(bb), b.write_bytes(ab)  # swapped
    (s / "exposure/c/3/0/1/0/0").unlink()  # deleted (reads as fill values)
    (s / "progress/done/c/0/1/0/0").write_bytes(b"\x00garbage\xff")  # garbage completion record
    capsys.readouterr()
    assert main(["status", str(s)]) == 1
    out = capsys.readouterr().out
    assert "state: complete" not in out and "damaged:" in out
    assert main(["verify", str(s)]) == 1
    out = capsys.readouterr().out
    listed = {line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  [")}
    assert listed == {"[0, 0, 0, 0]", "[1, 0, 0, 0]", "[2, 0, 0, 0]", "[3, 1, 0, 0]", "[0, 1, 0, 0]"}, out
    assert main(["query", str(s), "--var", "n_escaped"]) == 1
    err = capsys.readouterr().err
    assert "verify" in err and err.count("\n") == 1 and "Traceback" not in err
    summary = run_sweep(str(f), run_opts(cluster1, repair=True))
    assert summary.complete and summary.chunks_computed == 5
    assert main(["verify", str(s)]) == 0
    assert_cubes_equal(s, tmp_path / "ref.zarr")


def test_counts_that_cannot_be_right_are_flagged_without_digests(tmp_path, cluster1, capsys):
    import zarr

    from pipeline import run_sweep

    f = write_spec(tmp_path, walkers=300)
    run_sweep(str(f), run_opts(cluster1))
    s = tmp_path / "t.zarr"
    g = zarr.open_group(str(s), mode="r+", use_consolidated=False)
    del g["progress"]["digest"]  # a store from before digests: only the counts can be judged
    n = g["n_escaped"][1, :, 0, 0, 0]
    g["n_escaped"][1, :, 0, 0, 0] = n[::-1] + np.array([0, 400])  # decreasing in steps, > n_walkers
    assert main(["verify", str(s)]) == 1
    out = capsys.readouterr().out
    assert "[1, 0, 0, 0]: n_escaped + n_diverged > n_walkers" in out and "values not" in out


def test_status_of_a_store_without_a_completion_record(tmp_path, cluster1, capsys):
    import shutil

    from pipeline import run_sweep

    run_sweep(str(write_spec(tmp_path, walkers=50)), run_opts(cluster1))
    shutil.rmtree(tmp_path / "t.zarr" / "progress" / "done")
    assert main(["status", str(tmp_path / "t.zarr")]) == 2
    err = capsys.readouterr().err
    assert "completion record" in err and err.count("\n") == 1


# ---------------------------------------------------------------- cost model and limits (items 5-7)
def _spec_text(walkers=100, T="[0.015]", steps="[100]", B="[1]", depth="[1.0]", width="[0.1]", name="s", extra=""):
    return (f'name = "{name}"\n{extra}walkers = {walkers}\n[axes]\nT = {T}\nsteps = {steps}\nbatch_size = {B}\n'
            f"depth = {depth}\nwidth = {width}\n")


def test_walker_blocks_bounded_by_memory_and_lazy():
    from pipeline.sweep import partition
    from pipeline.sweep.planner import StaticPlanner
    from pipeline.sweep.spec import parse_spec

    spec = parse_spec(_spec_text(walkers=10**8, T="[0.01, 0.02]", steps="[1]"))
    assert spec.cost_steps == 64 and spec.work_bound == 2 * 10**8 * 64
    chunks = partition.chunk_shape(spec)
    assert chunks == (1, 1, 1, 1)
    blocks = partition.walker_blocks(spec, chunks)
    assert max(c for _, c in blocks) <= partition.MAX_BLOCK_WALKERS and sum(c for _, c in blocks) == 10**8
    huge = parse_spec(_spec_text(walkers=2**55, steps="[1]"), yes=True)
    blocks = partition.walker_blocks(huge, partition.chunk_shape(huge))
    assert len(blocks) > 10**9 and blocks[-1][0] + blocks[-1][1] == 2**55  # computed, never listed
    planner = StaticPlanner(huge, partition.chunk_shape(huge), [(0, 0, 0, 0)])
    t = planner.ask(3)
    assert [x.walker_start for x in t] == [0, blocks[1][0], blocks[2][0]] and t[0].n_blocks == len(blocks)


def test_batch_size_in_the_cost_model_and_limits():
    from pipeline.errors import SpecError
    from pipeline.sweep import partition
    from pipeline.sweep.spec import parse_spec

    a = parse_spec(_spec_text(walkers=1000, steps="[1000]", B="[64]"))
    b = parse_spec(_spec_text(walkers=1000, steps="[1000]", B="[6400]"))
    assert b.work_bound == 100 * a.work_bound
    assert partition.walker_blocks(b, (1, 1, 1, 1), 1e-3)[0][1] < partition.walker_blocks(a, (1, 1, 1, 1), 1e-3)[0][1]
    with pytest.raises(SpecError, match=r"axes.batch_size = 2097152: .*2\^20.*--yes"):
        parse_spec(_spec_text(walkers=1, B="[2097152]"))
    parse_spec(_spec_text(walkers=1, B="[2097152]"), yes=True)
    with pytest.raises(SpecError, match="sanity limits"):  # 1e10 walker-steps of work, x 16384 words
        parse_spec(_spec_text(walkers=10**6, steps="[10000]", B="[1048576]"))


def test_validation_refuses_before_building_and_caps(tmp_path):
    from pipeline.errors import SpecError
    from pipeline.sweep.spec import parse_spec

    t0 = time.process_time()
    with pytest.raises(SpecError, match="20000000 cells: larger than the sanity limit"):
        parse_spec(_spec_text(T="{start = 0.01, stop = 0.02, num = 20000000}"))
    with pytest.raises(SpecError, match="axes.T.num = 2000000000: at most 10000000 values per axis"):
        parse_spec(_spec_text(T="{start = 0.01, stop = 0.02, num = 2000000000}"), yes=True)
    with pytest.raises(SpecError, match="cells"):
        parse_spec(_spec_text(T="{start = 0.01, stop = 0.02, num = 2000}", B="{start = 1, stop = 2000, num = 2000}"))
    with pytest.raises(SpecError, match=r"walkers = 1180591620717411303424: .*2\^62"):
        parse_spec(_spec_text(walkers=2**70), yes=True)
    with pytest.raises(SpecError, match="2\\^62"):
        parse_spec(_spec_text(walkers=1, steps=f"[{2**63 - 1}]"), yes=True)
    assert time.process_time() - t0 < 5  # nothing big was built (CPU time, generous)


def test_each_pit_is_found_once(monkeypatch):
    from pipeline.sweep import spec as specmod

    from pipeline.model import landscape

    calls = []
    real = landscape.find_pit
    monkeypatch.setattr(landscape, "find_pit", lambda d, w: calls.append((d, w)) or real(d, w))
    specmod._find_pit.cache_clear()
    s = specmod.parse_spec(_spec_text(depth="[1.0, 1.5]", width="[0.1, 0.12]"))
    s.pits(), s.pits()
    from pipeline.sweep.cube import skeleton

    skeleton(s, (1, 1, 1, 1), [1, 2, 101], {}, "now")
    assert sorted(calls) == sorted((d, w) for d in (1.0, 1.5) for w in (0.1, 0.12))


# ---------------------------------------------------------------- one clear line, exit 2 (low items)
@pytest.mark.parametrize("case", ["non-utf8", "nul-name", "slash-name", "dotdot-name", "ctrl-name", "huge-width",
                                  "near-duplicate", "task-nan", "task-inf", "task-neg", "scheduler-noscheme",
                                  "parent-is-file", "nul-output"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    f = tmp_path / "s.toml"
    f.write_text(_spec_text(walkers=10) + f'[output]\npath = "{tmp_path / "s.zarr"}"\n')
    argv = ["validate", str(f)]
    if case == "non-utf8":
        f.write_bytes(b'name = "caf\xe9"\n' + _spec_text(walkers=10).split("\n", 1)[1].encode())
    elif case.endswith("-name"):
        name = {"nul": "a\\u0000b", "slash": "a/b", "dotdot": "../../x", "ctrl": "a\\nb"}[case.split("-")[0]]
        f.write_text(_spec_text(walkers=10, name=name))
    elif case == "huge-width":
        f.write_text(_spec_text(walkers=10, width="[1e300]"))
    elif case == "near-duplicate":
        f.write_text(_spec_text(walkers=10, T="[0.015, 0.0150000001]"))
    elif case.startswith("task-"):
        argv += ["--task-seconds", {"task-nan": "nan", "task-inf": "inf", "task-neg": "-1"}[case]]
    elif case == "scheduler-noscheme":
        argv = ["run", str(f), "--scheduler", "foo", "-q"]
    elif case == "parent-is-file":
        (tmp_path / "plain").write_text("x")
        argv = ["run", str(f), "-q", "-o", str(tmp_path / "plain" / "s.zarr")]
    elif case == "nul-output":
        argv += ["-o", "a\0b.zarr"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("escape-sweep: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "s.zarr").exists()


def test_bom_spec_is_read(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_bytes("\ufeff".encode() + _spec_text(walkers=10).encode())
    assert main(["validate", str(f)]) == 0


def test_query_into_a_closed_pipe_exits_quietly(tmp_path, cluster1):
    from pipeline import run_sweep

    run_sweep(str(write_spec(tmp_path, walkers=50, T="{start = 0.01, stop = 0.03, num = 200}", batch_size="[1]")),
              run_opts(cluster1))
    p = subprocess.run(f"{sys.executable} -m pipeline query {tmp_path / 't.zarr'} --format csv | head -1",
                       shell=True, capture_output=True, text=True, timeout=120, env=ENV)
    assert p.stdout.startswith("T,steps") and p.stderr == "", p.stderr


def test_leftover_temporary_stores_are_removed_on_the_next_run(tmp_path, cluster1, capsys):
    from pipeline import run_sweep

    f = write_spec(tmp_path, walkers=20)
    for n in (".t.zarr.new-123", ".t.zarr.old-456abc"):
        (tmp_path / n / "c").mkdir(parents=True)
    run_sweep(str(f), run_opts(cluster1))
    assert not (tmp_path / ".t.zarr.new-123").exists() and not (tmp_path / ".t.zarr.old-456abc").exists()
    assert "removed 2 temporary store(s)" in capsys.readouterr().err


def test_fit_takes_the_lock_plot_report_need_a_file_sel_needs_finite(tmp_path, cluster1, capsys):
    from pipeline import run_sweep
    from pipeline.sweep.lock import StoreLock

    run_sweep(str(write_spec(tmp_path, walkers=200)), run_opts(cluster1))
    s = str(tmp_path / "t.zarr")
    capsys.readouterr()
    with StoreLock(s):  # a live run holds the store
        assert main(["fit", s]) == 1
        err = capsys.readouterr().err
        assert "in use by another escape-sweep run" in err and err.count("\n") == 1
        assert not (tmp_path / "t.zarr" / "fits").exists()
    assert main(["fit", s]) == 0 and (tmp_path / "t.zarr" / "fits").exists()
    capsys.readouterr()
    for argv in (["plot", s, "--preset", "p_escape", "-o", str(tmp_path)], ["report", s, "-o", str(tmp_path)],
                 ["query", s, "--sel", "T=inf"], ["plot", s, "--x", "T", "--y", "p_escape", "--sel", "steps=nan",
                                                   "-o", str(tmp_path / "f.png")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("escape-sweep: error: ") and err.count("\n") == 1, err
