"""The store lock: atomic create, heartbeat, refusal of a live holder, takeover of a dead one."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.sweep.lock import LockedError, StoreLock, lock_path

ROOT = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pipeline.sweep.lock import StoreLock
    with StoreLock({store!r}, timeout={timeout}, interval=0.2):
        print("held", flush=True)
        time.sleep(120)
""")

CONTENDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pipeline.sweep.lock import LockedError, StoreLock
    while time.time() < {go}:
        time.sleep(0.002)
    try:
        with StoreLock({store!r}, timeout={timeout}, interval=0.2):
            print("got", flush=True)
            time.sleep(2)
    except LockedError as e:
        print("refused", flush=True)
""")


def _spawn(code):
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


def _start_holder(procs, store, timeout=60):
    p = _spawn(HOLDER.format(root=str(ROOT), store=str(store), timeout=timeout))
    procs.append(p)
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def test_lock_file_beside_the_store_with_holder_record(tmp_path):
    store = tmp_path / "x.zarr"
    with StoreLock(store) as lk:
        assert lk.path == lock_path(store) == tmp_path / ".x.zarr.escape-sweep.lock"
        rec = json.loads(lk.path.read_text())
        assert rec["pid"] == os.getpid() and rec["host"] == socket.gethostname()
        assert rec["heartbeat"] >= rec["started"] > time.time() - 60
        assert not store.exists()  # the lock does not create the store (cube.create does)
    assert not lk.path.exists()


def test_heartbeat_refreshes_and_never_recreates_a_deleted_lock(tmp_path):
    with StoreLock(tmp_path / "x.zarr", interval=0.1) as lk:
        first = json.loads(lk.path.read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads(lk.path.read_text())["heartbeat"] > first
        lk.check()
        lk.path.unlink()  # e.g. someone cleaned the directory: nobody can say who held it since
        time.sleep(0.5)
        assert not lk.path.exists()
        with pytest.raises(LockedError, match="lost the store lock"):
            lk.check()


def test_check_reads_the_token_from_the_file(tmp_path):
    with StoreLock(tmp_path / "x.zarr", interval=60) as lk:  # no heartbeat in between
        lk.check()
        rec = json.loads(lk.path.read_text())
        lk.path.write_text(json.dumps(rec | {"token": "y" * 32, "pid": 4242}))
        with pytest.raises(LockedError, match="taken over by pid 4242"):
            lk.check()
        assert json.loads(lk.path.read_text())["token"] == "y" * 32
    assert json.loads(lk.path.read_text())["token"] == "y" * 32  # release leaves another's lock alone


def test_lock_file_mode_and_heartbeat_temp_file_ignore_planted_symlinks(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    store = tmp_path / "x.zarr"
    lk = StoreLock(store, interval=0.05)
    # the old predictable temp name, and the lock path itself's would-be neighbours
    (tmp_path / f".x.zarr.escape-sweep.lock.{lk.token}.tmp").symlink_to(victim)
    with lk:
        assert (lk.path.stat().st_mode & 0o777) == 0o600
        time.sleep(0.4)  # several heartbeats
        lk.check()
        assert (lk.path.stat().st_mode & 0o777) == 0o600
    assert victim.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()] == []
    # a symlink planted at the lock path is not followed either
    lock_path(store).symlink_to(victim)
    with pytest.raises(LockedError):
        StoreLock(store, timeout=3600).acquire()
    assert victim.read_text() == "precious"


def test_live_holder_on_this_host_is_never_stale(tmp_path, procs):
    store = tmp_path / "x.zarr"
    holder = _start_holder(procs, store, timeout=0.5)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # its heartbeat is three timeouts old
        rec = json.loads(lock_path(store).read_text())
        assert time.time() - rec["heartbeat"] > 1.0
        with pytest.raises(LockedError, match="in use by another"):
            StoreLock(store, timeout=0.5).acquire()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert json.loads(lock_path(store).read_text())["token"] == rec["token"]


def test_second_lock_in_one_process_is_refused(tmp_path):
    with StoreLock(tmp_path / "x.zarr"):
        with pytest.raises(LockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}, since "):
            StoreLock(tmp_path / "x.zarr").acquire()
    with StoreLock(tmp_path / "x.zarr"):  # free again after release
        pass


def test_live_holder_in_another_process_is_refused(tmp_path, procs):
    store = tmp_path / "x.zarr"
    holder = _start_holder(procs, store)
    with pytest.raises(LockedError) as e:
        StoreLock(store).acquire()
    msg = str(e.value)
    assert f"pid {holder.pid} on host {socket.gethostname()}" in msg and "in use by another" in msg
    assert e.value.holder["pid"] == holder.pid


def test_holder_killed_with_sigkill_is_taken_over(tmp_path, procs, capsys):
    store = tmp_path / "x.zarr"
    holder = _start_holder(procs, store)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert lock_path(store).exists()  # SIGKILL leaves the file behind
    t0 = time.time()
    with StoreLock(store) as lk:
        assert json.loads(lk.path.read_text())["pid"] == os.getpid()
    assert time.time() - t0 < 5  # at once: same host, dead pid
    err = capsys.readouterr().err
    assert "took over the stale store lock" in err and f"pid {holder.pid} is not running" in err


def _fake_lock(store, **fields):
    rec = dict(pid=999999, host="elsewhere.example", started=time.time() - 500, heartbeat=time.time(),
               token="x" * 32)
    rec.update(fields)
    lock_path(store).write_text(json.dumps(rec))
    return rec


def test_holder_on_another_host_counts_until_its_heartbeat_is_old(tmp_path, capsys):
    store = tmp_path / "x.zarr"
    _fake_lock(store, heartbeat=time.time() - 5)
    with pytest.raises(LockedError, match="elsewhere.example.*last heartbeat 5 s ago"):
        StoreLock(store, timeout=60).acquire()
    _fake_lock(store, heartbeat=time.time() - 61)
    with StoreLock(store, timeout=60):
        pass
    assert "no heartbeat for 61 s" in capsys.readouterr().err


def test_reused_pid_on_this_host_is_stale(tmp_path, capsys):
    store = tmp_path / "x.zarr"
    # our own pid is alive, but it started long after this record says its holder did
    _fake_lock(store, pid=os.getpid(), host=socket.gethostname(), pid_started=1.0e9)
    with StoreLock(store):
        pass
    assert "now belongs to another process" in capsys.readouterr().err


def test_garbage_lock_file_is_judged_by_its_age(tmp_path):
    store = tmp_path / "x.zarr"
    lock_path(store).write_text("{not json")
    os.utime(lock_path(store), (time.time() - 120, time.time() - 120))
    with StoreLock(store, timeout=60):
        pass


def test_contenders_for_a_stale_lock_get_exactly_one_winner(tmp_path, procs):
    store = tmp_path / "x.zarr"
    _fake_lock(store, heartbeat=time.time() - 3600)
    go = time.time() + 2.5  # all start contending at the same moment, after their imports
    ps = [_spawn(CONTENDER.format(root=str(ROOT), store=str(store), timeout=60, go=go)) for _ in range(4)]
    procs.extend(ps)
    outs = [p.communicate(timeout=60)[0].strip() for p in ps]
    assert sorted(outs) == ["got", "refused", "refused", "refused"], outs


def test_object_store_urls_are_not_locked(tmp_path, capsys):
    with StoreLock("s3://bucket/x.zarr") as lk:
        lk.check()
    assert "not locked out" in capsys.readouterr().err


@pytest.mark.slow
def test_two_runs_on_one_store_refuse_each_other_and_a_killed_run_is_taken_over(tmp_path, procs):
    from helpers import write_spec
    from pipeline.sweep import store as cube

    # ~10 s of kernel work on one worker: the second run must find the first still running
    f = write_spec(tmp_path, name="l", walkers=20000, T="{start = 0.006, stop = 0.009, num = 48}",
                   steps="[100, 10000]", batch_size="[1]")
    store = tmp_path / "l.zarr"
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline", "run", str(f), "--workers", "1", "--task-seconds", "0.2", "-q"]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=env)
    procs.append(a)
    deadline = time.time() + 90
    while time.time() < deadline and a.poll() is None:
        try:
            if cube.chunk_count(store)[0] >= 1:
                break
        except Exception:  # store being created
            pass
        time.sleep(0.05)
    assert a.poll() is None, a.communicate()[1]
    assert json.loads(lock_path(store).read_text())["pid"] == a.pid
    b = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert b.returncode == 1, b.stderr
    assert f"in use by another escape-sweep run (pid {a.pid} on host {socket.gethostname()}" in b.stderr
    assert len(b.stderr.strip().splitlines()) == 1, b.stderr
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(timeout=30)
    c = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert c.returncode == 0, c.stderr
    assert "took over the stale store lock" in c.stderr and f"pid {a.pid} is not running" in c.stderr
    done, total = cube.chunk_count(store)
    assert done == total and not lock_path(store).exists()
