"""--cluster slurm against a real SLURM: munged, slurmctld and slurmd running as a one-node cluster on
127.0.0.1 (tests/slurm_cluster.py, the `slurm` fixture), real sbatch / squeue / scancel, real
`escape-sweep run` processes and real signals. Slow (pytest -m slow); skipped, with the reason,
where the SLURM packages are not installed.

The scheduler listens on 127.0.0.2 (loopback, but not the dashboard's 127.0.0.1: the printed
dashboard link must be where the dashboard really listens), workers on 127.0.0.1.
"""

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import assert_cubes_equal, write_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TASK_SECONDS = "0.5"
# 24 chunks of one task each, several seconds of kernel work on two 1-CPU jobs (tasks well under a
# second, so that a worker with a few seconds' lifetime finishes some)
SPEC_KW = dict(walkers=6000, T="{start = 0.006, stop = 0.009, num = 24}", steps="[100, 20000]", batch_size="[1]")
SUMMARY = re.compile(r"chunks computed (\d+), already done (\d+), total (\d+); tasks submitted (\d+)")
PROGRESS = re.compile(r"(?:\]|progress) (\d+)/(\d+) chunks")  # a terminal's bar, or a log's plain line
RUN_TIMEOUT = 300


@pytest.fixture(scope="session")
def local_cube(tmp_path_factory):
    """local_cube(**spec_kw): the Summary of the sweep computed on the embedded local cluster with two
    workers (once per spec in the session): its cube is what every SLURM run of that spec must reproduce."""
    pytest.importorskip("dask_jobqueue")
    from pipeline import run_sweep
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep.runner import RunOptions

    cache = {}

    def get(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            d = tmp_path_factory.mktemp("slurm-ref")
            s = run_sweep(str(write_spec(d, name="ref", **kw)),
                          RunOptions(cluster=ClusterOptions(n_workers=2), progress=False))
            assert s.complete
            cache[key] = s
        return cache[key]

    return get


@pytest.fixture
def reference(local_cube):
    return Path(local_cube(**SPEC_KW).path)


def jobqueue_yaml(tmp_path, lifetime=None):
    """The shipped cluster/slurm/jobqueue.yaml (python: null -> this venv's interpreter) sized for the
    one-node cluster: 1 CPU and 1 GiB per job, logs per job under tmp_path/joblogs, everything on loopback."""
    doc = yaml.safe_load((ROOT / "cluster" / "slurm" / "jobqueue.yaml").read_text())
    sec = doc["jobqueue"]["slurm"]
    args = ["--host", "127.0.0.1", "--no-dashboard"]
    if lifetime:
        args += ["--lifetime", lifetime[0], "--lifetime-stagger", lifetime[1]]
    sec.update({"queue": "debug", "cores": 1, "memory": "1GiB", "walltime": "00:10:00", "interface": None,
                "log-directory": str(tmp_path / "joblogs"), "death-timeout": 20, "worker-extra-args": args,
                "scheduler-options": {"host": "127.0.0.2", "dashboard_address": "127.0.0.1:0"}})
    assert sec["python"] is None
    p = tmp_path / "jobqueue.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


class Run:
    """`escape-sweep run SPEC --cluster slurm --jobs N` as a child process (own session), output to files."""

    def __init__(self, tmp_path, spec, jq, tag="run", jobs=2, quiet=False, task_seconds=TASK_SECONDS, env=None):
        self.tmp_path, self.logdir = tmp_path, tmp_path / "joblogs"
        self.out_path, self.err_path = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
        env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT), "ESCAPE_SWEEP_PROGRESS_SECONDS": "0.1",
                            "ESCAPE_SWEEP_FLUSH_SECONDS": "0",  # each result written at once: kill tests count them
                            # forget a vanished worker after 1 s (default 15 s), so its job is replaced soon
                            "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "1s"} | (env or {})
        argv = [sys.executable, "-m", "pipeline", "run", str(spec), "--cluster", "slurm", "--jobs", str(jobs),
                "--jobqueue-config", str(jq), "--task-seconds", str(task_seconds)] + (["-q"] if quiet else [])
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                      cwd=tmp_path, start_new_session=True)

    def wait(self, timeout=RUN_TIMEOUT) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"escape-sweep run did not end within {timeout} s\n{self.text()}")

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=30)

    def stdout(self):
        return self.out_path.read_text()

    def stderr(self):
        return self.err_path.read_text()

    def text(self):
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()[-3000:]}"

    def summary(self):
        m = SUMMARY.search(self.stdout())
        assert m, self.text()
        return tuple(int(x) for x in m.groups())  # computed, already done, total, tasks submitted

    def chunks_done(self) -> int:
        found = PROGRESS.findall(self.stderr())
        return int(found[-1][0]) if found else 0

    def job_logs(self) -> dict[str, str]:
        """{job id: the job's stderr (the dask worker's log)} for every job submitted so far."""
        logs = {}
        for f in self.logdir.glob("*.err") if self.logdir.is_dir() else ():
            m = re.search(r"-(\d+)\.err$", f.name)
            if m:
                logs[m.group(1)] = f.read_text(errors="replace")
        return logs

    def until(self, cond, what, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                pytest.fail(f"escape-sweep run exited ({self.p.returncode}) while waiting for {what}\n{self.text()}")
            if cond():
                return
            time.sleep(0.2)
        pytest.fail(f"no {what} within {timeout} s\n{self.text()}")

    def workers_registered(self, n=2):
        self.until(lambda: sum("Registered to" in t for t in self.job_logs().values()) >= n,
                   f"{n} worker jobs registered with the scheduler")


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path, name="s", **SPEC_KW)


def planned(spec_path, done=None, task_seconds=TASK_SECONDS):
    """(chunks, tasks) a fresh run of the spec submits, or with `done` (a resume) the missing ones."""
    import numpy as np

    from pipeline.sweep import partition
    from pipeline.sweep.spec import load_spec

    s = load_spec(str(spec_path))
    chunks = partition.chunk_shape(s, float(task_seconds))
    done = np.zeros(partition.chunk_grid(s, chunks), bool) if done is None else done
    missing = [tuple(int(i) for i in idx) for idx in zip(*(~done).nonzero())]
    tasks = sum(len(partition.tasks_for_chunk(s, chunks, idx, s.pits(), float(task_seconds))) for idx in missing)
    return len(missing), tasks


def _no_jobs_left(slurm, run, timeout=60):
    left = slurm.wait_no_jobs(timeout)
    assert not left, f"jobs still queued {timeout} s after the run ended: {left}\n{run.text()}"


def test_sweep_through_real_slurm_equals_local_run(tmp_path, slurm_queue, reference, spec):
    run = Run(tmp_path, spec, jobqueue_yaml(tmp_path))
    try:
        assert run.wait() == 0, run.text()
    finally:
        run.kill()
    chunks, tasks = planned(spec)
    assert chunks >= 12 and run.summary() == (chunks, 0, chunks, tasks)
    assert re.search(r"; jobs requested 2, running \d, pending \d when computing ended "
                     r"\(at most [12] running at once\)", run.stdout()), run.stdout()
    err = run.stderr()
    assert " on tcp://127.0.0.2:" in err, err  # the scheduler is on 127.0.0.2 ...
    assert re.search(r"^escape-sweep: dashboard http://127\.0\.0\.1:\d+/status$", err, re.M), err  # ... its dashboard is not
    logs = run.job_logs()
    assert len(logs) >= 2 and all(re.search(r"Registered to: +tcp://127\.0\.0\.2:", t) for t in logs.values()), logs
    _no_jobs_left(slurm_queue, run)  # cancelled by the run at the end
    assert_cubes_equal(tmp_path / "s.zarr", reference)


def _worker_start_seconds() -> float:
    """Wall seconds a fresh process takes to import what a worker imports and run a first tiny cell
    (the kernel loaded from numba's cache): what a retiring worker's lifetime must leave room for."""
    code = ("import distributed\nfrom pipeline.model.simulate import simulate\n"
            "simulate(0.01, 100, 1, 1.0, 0.1, 64, 7)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ | {"PYTHONPATH": str(ROOT)},
                   capture_output=True)
    return time.perf_counter() - t0


def test_workers_retire_and_jobs_are_replaced_mid_sweep(tmp_path, slurm_queue, local_cube):
    """Worker --lifetime a third to a half of the sweep's computing time: every worker retires before
    the sweep is done and dask-jobqueue submits fresh jobs through sbatch; the cube does not change.

    A task still running when its worker retires is cancelled and rerun elsewhere (Dask counts that as a
    worker dying: after 3 such deaths the task fails), so the lifetime must leave room for a worker's
    start (imports, kernel load) and some tasks, however loaded the machine: it is at least 3 s, 4x a
    worker's start measured now and a third of the local run's computing time (parameters, not
    assertions); tasks of ~0.25 s, and walkers scaled to 2 lifetimes or more, keep the sweep several
    lifetimes long on a fast machine too."""
    # a worker's shortest life (lifetime - stagger = 3/4 lifetime) holds 3 starts on this machine now
    lifetime = max(3.0, 4 * _worker_start_seconds())
    kw = dict(SPEC_KW, walkers=2 * SPEC_KW["walkers"])
    ref = local_cube(**kw)
    # ... and the sweep lasts 2 lifetimes or more (more walkers where the machine is fast)
    more = min(math.ceil(2 * lifetime / ref.compute_seconds), 6)
    if more > 1:
        kw = dict(SPEC_KW, walkers=2 * more * SPEC_KW["walkers"])
        ref = local_cube(**kw)
    lifetime = min(max(lifetime, ref.compute_seconds / 3), 30.0)
    spec = write_spec(tmp_path, name="s", **kw)
    jq = jobqueue_yaml(tmp_path, lifetime=(f"{lifetime:.0f}s", f"{lifetime / 4:.0f}s"))
    # Dask counts a task cancelled by a worker's lifetime retirement as a worker death (3 allowed,
    # then KilledWorker); with a dozen retirements of 5-s workers one task was hit 4 times in CI, so
    # the scheduler here allows more (a config of Dask's, for lifetimes this short)
    run = Run(tmp_path, spec, jq, quiet=True, task_seconds="0.25",
              env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "20"})
    try:
        assert run.wait() == 0, run.text()
    finally:
        run.kill()
    chunks, tasks = planned(spec, task_seconds="0.25")
    assert run.summary() == (chunks, 0, chunks, tasks)
    logs = run.job_logs()
    assert len(logs) > 2, f"no job was replaced (lifetime {lifetime:.0f} s): {sorted(logs)}"
    assert any("worker-lifetime-reached" in t for t in logs.values()), logs
    _no_jobs_left(slurm_queue, run)
    assert_cubes_equal(tmp_path / "s.zarr", ref.path)


def test_ctrl_c_cancels_every_submitted_job(tmp_path, slurm_queue, spec):
    run = Run(tmp_path, spec, jobqueue_yaml(tmp_path))
    try:
        run.workers_registered(2)
        run.until(lambda: set(slurm_queue.jobs().values()) == {"RUNNING"}, "both jobs RUNNING in squeue")
        submitted = set(run.job_logs()) | set(slurm_queue.jobs())
        time.sleep(1.0)  # tasks running
        assert run.p.poll() is None, run.text()
        os.kill(run.p.pid, signal.SIGINT)  # the run process only, as a terminal's Ctrl-C would reach it
        rc = run.wait(timeout=60)
    finally:
        run.kill()
    assert rc == 130, run.text()
    assert "interrupted; finished chunks are kept" in run.stderr()
    assert len(submitted) == 2
    left = slurm_queue.wait_no_jobs(60)
    assert not set(left) & submitted, f"jobs outlived Ctrl-C: {left}"
    logs = run.job_logs()
    assert set(logs) == submitted
    assert all("CANCELLED" in logs[j] for j in submitted), logs  # SLURM cancelled them, they did not just end


def test_job_killed_by_slurm_mid_sweep_is_survived(tmp_path, slurm_queue, reference, spec):
    run = Run(tmp_path, spec, jobqueue_yaml(tmp_path))
    try:
        run.workers_registered(2)
        run.until(lambda: run.chunks_done() >= 1, "a finished chunk")
        running = [j for j, state in slurm_queue.jobs().items() if state == "RUNNING"]
        assert running and run.p.poll() is None, run.text()
        victim = running[0]
        done_at_kill = run.chunks_done()
        slurm_queue.cmd("scancel", victim)
        assert run.wait() == 0, run.text()
    finally:
        run.kill()
    chunks, tasks = planned(spec)
    assert done_at_kill < chunks
    assert run.summary() == (chunks, 0, chunks, tasks)
    assert "CANCELLED" in run.job_logs()[victim]
    _no_jobs_left(slurm_queue, run)
    assert_cubes_equal(tmp_path / "s.zarr", reference)


def test_resume_after_client_sigkill_submits_only_missing_chunks(tmp_path, slurm_queue, reference, spec):
    from pipeline.sweep import partition, store
    from pipeline.sweep.spec import load_spec

    jq = jobqueue_yaml(tmp_path)
    first = Run(tmp_path, spec, jq, tag="first")
    try:
        first.workers_registered(2)
        first.until(lambda: first.chunks_done() >= 3, "3 finished chunks")
        os.kill(first.p.pid, signal.SIGKILL)  # the client only: its jobs stay behind
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        first.kill()
    orphans = slurm_queue.jobs()
    assert orphans, "the killed client's jobs should still be queued (nobody cancelled them)"
    slurm_queue.cmd("scancel", "-n", "escape-sweep-worker")  # the clean-up cluster/slurm/README.md gives
    assert not slurm_queue.wait_no_jobs(60)

    path = tmp_path / "s.zarr"
    done = store.Store(str(path)).done_mask()
    n_done = int(done.sum())
    assert 3 <= n_done < done.size
    assert tuple(store.read_attrs(path)["chunk_shape"]) == partition.chunk_shape(load_spec(str(spec)), float(TASK_SECONDS))
    missing, want_tasks = planned(spec, done)
    assert missing == done.size - n_done

    second = Run(tmp_path, spec, jq, tag="second", quiet=True)
    try:
        assert second.wait() == 0, second.text()
    finally:
        second.kill()
    assert second.summary() == (done.size - n_done, n_done, done.size, want_tasks)
    assert want_tasks < planned(spec)[1]
    _no_jobs_left(slurm_queue, second)
    assert_cubes_equal(path, reference)
