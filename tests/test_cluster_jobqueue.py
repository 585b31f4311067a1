"""--cluster slurm / pbs: dask-jobqueue built from cluster/<kind>/jobqueue.yaml, and a sweep
through fake `sbatch`/`scancel` commands that run each job script as a local process."""

import os
import re
import signal
import sys
import time
from pathlib import Path

import dask.config
import pytest
import yaml

from helpers import assert_cubes_equal, write_spec
from pipeline.deploy import clusters as deploy
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.deploy import ClusterOptions

try:  # through deploy, which keeps pytest's Ctrl-C handler (dask_jobqueue replaces it on import)
    deploy._import_jobqueue("slurm")
except InputError:
    pytest.skip("dask-jobqueue is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def _yaml(kind):
    return yaml.safe_load((ROOT / "cluster" / kind / "jobqueue.yaml").read_text())


def _local_copy(tmp_path, kind, **overrides):
    """The shipped yaml with the scheduler on 127.0.0.1 (tests listen on loopback only)."""
    doc = _yaml(kind)
    sec = doc["jobqueue"][kind]
    sec["scheduler-options"] = dict(sec.get("scheduler-options") or {}, host="127.0.0.1",
                                    dashboard_address="127.0.0.1:0")
    sec.update(overrides)
    p = tmp_path / f"{kind}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p, sec


def _seconds(text):
    m = re.fullmatch(r"(\d+)([smh])", text)
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_importing_dask_jobqueue_keeps_the_ctrl_c_handler():
    import subprocess

    code = ("import signal, sys; sys.path.insert(0, %r); from pipeline.deploy import clusters as deploy; "
            "h = signal.getsignal(signal.SIGINT); deploy._import_jobqueue('slurm'); "
            "assert 'dask_jobqueue' in sys.modules and signal.getsignal(signal.SIGINT) is h" % str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_shipped_yaml_retires_workers_before_walltime(kind):
    sec = _yaml(kind)["jobqueue"][kind]
    assert sec["processes"] == 1
    args = sec["worker-extra-args"]
    lifetime = _seconds(args[args.index("--lifetime") + 1])
    stagger = _seconds(args[args.index("--lifetime-stagger") + 1])
    h, m, s = (int(x) for x in sec["walltime"].split(":"))
    assert lifetime + stagger < 3600 * h + 60 * m + s
    assert "--no-dashboard" in args
    assert sec["scheduler-options"]["dashboard_address"].startswith("127.0.0.1:")


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_job_script_has_the_yaml_settings(tmp_path, kind):
    path, sec = _local_copy(tmp_path, kind, queue="q-test", account="acct-test")
    cluster = deploy.jobqueue_cluster(kind, ClusterOptions(cluster=kind, jobqueue_config=str(path)),
                                      start_jobs=False)
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    finally:
        cluster.close()
    cores, walltime = sec["cores"], sec["walltime"]
    mem_gib = int(re.fullmatch(r"(\d+)GiB", sec["memory"]).group(1))
    if kind == "slurm":
        for line in (f"#SBATCH -J {sec['name']}", "#SBATCH -p q-test", "#SBATCH -A acct-test",
                     f"#SBATCH --cpus-per-task={cores}", f"#SBATCH --mem={mem_gib}G", f"#SBATCH -t {walltime}"):
            assert line in script.splitlines(), (line, script)
    else:
        for line in (f"#PBS -N {sec['name']}", "#PBS -q q-test", "#PBS -A acct-test",
                     f"#PBS -l walltime={walltime}"):
            assert line in script.splitlines(), (line, script)
        assert f"#PBS -l select=1:ncpus={cores}:mem=" in script
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert worker.startswith(sys.executable)  # python: null -> this interpreter
    assert f"--nthreads {cores} " in worker and "--nworkers" not in worker
    assert f"--death-timeout {sec['death-timeout']}" in worker
    assert " ".join(sec["worker-extra-args"]) in worker  # --lifetime 50m --lifetime-stagger 5m --no-dashboard


def test_config_file_precedence(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "cluster" / "slurm").mkdir(parents=True)
    (repo / "cluster" / "slurm" / "jobqueue.yaml").write_text("jobqueue:\n  slurm:\n    cores: 3\n")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("jobqueue:\n  slurm:\n    cores: 5\n")
    opt_file = tmp_path / "opt.yaml"
    opt_file.write_text("cores: 7\nmemory: 7GiB\n")  # the section's keys at top level also work
    monkeypatch.delenv(deploy.JOBQUEUE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with dask.config.set({"jobqueue.slurm.cores": 2, "jobqueue.slurm.memory": "2GiB"}):
        assert deploy.jobqueue_config_path("slurm") is None
        assert deploy.jobqueue_settings("slurm")[0]["cores"] == 2  # dask config alone
        monkeypatch.chdir(repo)
        s, src = deploy.jobqueue_settings("slurm")
        assert (s["cores"], s["memory"], src) == (3, "2GiB", Path("cluster/slurm/jobqueue.yaml"))
        monkeypatch.setenv(deploy.JOBQUEUE_ENV, str(env_file))
        assert deploy.jobqueue_settings("slurm")[0]["cores"] == 5
        assert deploy.jobqueue_settings("slurm", str(opt_file))[0]["cores"] == 7
        monkeypatch.setenv(deploy.JOBQUEUE_ENV, str(tmp_path / "missing.yaml"))
        with pytest.raises(InputError, match=f"^{deploy.JOBQUEUE_ENV} .*missing.yaml: no such file$"):
            deploy.jobqueue_settings("slurm")
        with pytest.raises(InputError, match="no 'jobqueue: pbs:' section"):
            deploy.jobqueue_settings("pbs", str(env_file))


def test_dask_config_section_alone_works(tmp_path, monkeypatch):
    monkeypatch.delenv(deploy.JOBQUEUE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with dask.config.set({"jobqueue.slurm.cores": 2, "jobqueue.slurm.memory": "2GiB",
                          "jobqueue.slurm.scheduler-options": {"host": "127.0.0.1"}}):
        cluster = deploy.jobqueue_cluster("slurm", ClusterOptions(cluster="slurm"), start_jobs=False)
    try:
        script = cluster.job_script()
        assert "#SBATCH --cpus-per-task=2" in script and "--nthreads 2 " in script
        assert cluster.dashboard_link.startswith("http://127.0.0.1:8787") or "127.0.0.1" in cluster.dashboard_link
    finally:
        cluster.close()


def test_unknown_key_in_yaml_is_a_usage_error_naming_the_file(tmp_path):
    path, _ = _local_copy(tmp_path, "slurm", cpus=4)
    with pytest.raises(InputError, match=rf"jobqueue.slurm settings \(from {re.escape(str(path))}\): .*cpus"):
        deploy.jobqueue_cluster("slurm", ClusterOptions(cluster="slurm", jobqueue_config=str(path)), start_jobs=False)


# ---------------------------------------------------------------- fake SLURM

SBATCH = """#!/bin/bash
# fake sbatch: run the job script in the background, as its own process group
state=${FAKE_SLURM_STATE:?}
if [ -n "$FAKE_SLURM_FAIL" ]; then echo "sbatch: error: $FAKE_SLURM_FAIL" >&2; exit 1; fi
id=$$
cp "$1" "$state/job-$id.sh"
setsid bash "$state/job-$id.sh" > "$state/job-$id.log" 2>&1 < /dev/null &
echo $! > "$state/job-$id.pid"
echo "Submitted batch job $id"
"""
SCANCEL = """#!/bin/bash
state=${FAKE_SLURM_STATE:?}
for id in "$@"; do
  echo "$id" >> "$state/cancelled"
  [ -f "$state/job-$id.pid" ] && kill -KILL -- -"$(cat "$state/job-$id.pid")" 2>/dev/null
done
exit 0
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bindir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bindir.mkdir()
    state.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    yield state
    for pidfile in state.glob("job-*.pid"):  # never leave a worker behind
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _live_members(pgids):
    import psutil

    live = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.info["pid"]) in pgids and p.info["status"] != psutil.STATUS_ZOMBIE:
                live.append(p.info["pid"])
        except (ProcessLookupError, psutil.Error):
            pass
    return live


def _fake_yaml(tmp_path, lifetime="50m", stagger="5m"):
    path, _ = _local_copy(
        tmp_path, "slurm", cores=1, memory="1GiB", interface="lo", **{
            "death-timeout": 30,
            "job-script-prologue": [f"export PYTHONPATH={ROOT}"],
            "worker-extra-args": ["--lifetime", lifetime, "--lifetime-stagger", stagger, "--no-dashboard"]})
    return path


def test_failed_submission_is_one_clear_error(tmp_path, fake_slurm, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_FAIL", "Invalid account or account/partition combination specified")
    opts = ClusterOptions(cluster="slurm", jobs=2, jobqueue_config=str(_fake_yaml(tmp_path)))
    with pytest.raises(deploy.DeployError,
                       match="--cluster slurm: submitting worker jobs failed: .*Invalid account"):
        with deploy.open_client(opts):
            pass
    assert not list(fake_slurm.glob("job-*.sh"))


@pytest.mark.slow
def test_sweep_outlives_walltime_through_fake_slurm(tmp_path, fake_slurm, monkeypatch):
    """Workers retire after a 4 s --lifetime; fresh jobs replace them; the cube equals a local run's."""
    from distributed import LocalCluster

    from pipeline import run_sweep
    from pipeline.sweep.runner import RunOptions

    # ~7 s of kernel work on two workers: longer than the 4 s worker lifetime, so jobs must be replaced;
    # tasks of ~0.25 s, far shorter than a lifetime even on a loaded machine (a task still running when its
    # worker retires is rerun elsewhere: tasks longer than the lifetime would never finish)
    kw = dict(walkers=12000, T="{start = 0.006, stop = 0.009, num = 24}", steps="[100, 20000]", batch_size="[1]")
    f = write_spec(tmp_path, name="s", **kw)
    monkeypatch.setenv(deploy.JOBQUEUE_ENV, str(_fake_yaml(tmp_path, lifetime="4s", stagger="1s")))
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}):
        assert main(["run", str(f), "--cluster", "slurm", "--jobs", "2", "--task-seconds", "0.25", "-q"]) == 0
    jobs = sorted(fake_slurm.glob("job-*.sh"))
    logs = "".join(p.read_text() for p in fake_slurm.glob("job-*.log"))
    assert len(jobs) > 2, "no job was replaced"
    assert "worker-lifetime-reached" in logs
    cancelled = (fake_slurm / "cancelled").read_text().split()
    assert {p.stem.split("-")[1] for p in jobs} <= set(cancelled)  # all cancelled at the end
    groups = {int(p.read_text()) for p in fake_slurm.glob("job-*.pid")}
    deadline = time.time() + 10
    while _live_members(groups) and time.time() < deadline:
        time.sleep(0.2)
    assert not _live_members(groups), "a worker job outlived the run"
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as lc:
        ref = run_sweep(str(write_spec(tmp_path, name="ref", **kw)),
                        RunOptions(cluster=ClusterOptions(scheduler=lc.scheduler_address), progress=False))
    assert_cubes_equal(tmp_path / "s.zarr", ref.path)


def test_ctrl_c_cancels_the_worker_jobs(tmp_path, fake_slurm):
    import subprocess

    f = write_spec(tmp_path, name="i", walkers=20000, T="{start = 0.006, stop = 0.009, num = 12}",
                   steps="[100, 20000]", batch_size="[1]")
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT),
                        deploy.JOBQUEUE_ENV: str(_fake_yaml(tmp_path))}
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(f), "--cluster", "slurm", "--jobs", "2",
                          "--task-seconds", "0.5", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, env=env)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and p.poll() is None:
            logs = [q.read_text() for q in fake_slurm.glob("job-*.log")]
            if len(logs) == 2 and all("Registered to" in text for text in logs):
                break
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1]
        time.sleep(1.0)  # tasks running
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
    assert p.returncode == 130, (out, err)
    ids = {q.stem.split("-")[1] for q in fake_slurm.glob("job-*.sh")}
    assert len(ids) == 2 and ids <= set((fake_slurm / "cancelled").read_text().split())
    groups = {int(q.read_text()) for q in fake_slurm.glob("job-*.pid")}
    deadline = time.time() + 10
    while _live_members(groups) and time.time() < deadline:
        time.sleep(0.2)
    assert not _live_members(groups), "a worker job outlived Ctrl-C"


def test_dashboard_link_is_where_the_dashboard_listens(tmp_path):
    """The scheduler on one address (the compute-node-facing one; here 127.0.0.2), the dashboard on
    127.0.0.1 (the yaml's dashboard_address): the printed link names 127.0.0.1, not the scheduler's host."""
    from distributed import Client

    path, _ = _local_copy(tmp_path, "slurm")
    doc = yaml.safe_load(path.read_text())
    doc["jobqueue"]["slurm"]["scheduler-options"]["host"] = "127.0.0.2"
    path.write_text(yaml.safe_dump(doc))
    cluster = deploy.jobqueue_cluster("slurm", ClusterOptions(cluster="slurm", jobqueue_config=str(path)),
                                      start_jobs=False)
    try:
        with Client(cluster) as client:
            assert client.scheduler.address.startswith("tcp://127.0.0.2:")
            assert client.dashboard_link.startswith("http://127.0.0.2:")  # what Client says
            port = cluster.scheduler.http_server.port
            assert deploy.dashboard_link(client) == f"http://127.0.0.1:{port}/status"
            assert deploy.job_counts(client) == (0, 0, 0)  # no job requested yet
    finally:
        cluster.close()


def test_job_counts_only_for_batch_clusters():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as lc, \
            Client(lc) as client:
        assert deploy.job_counts(client) is None
        assert deploy.dashboard_link(client) == client.dashboard_link
