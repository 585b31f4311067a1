"""deploy: the cluster registry, make_security, the embedded cluster's 127.0.0.1-only binding,
and `--cluster slurm` without dask-jobqueue."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import dask.config
import psutil
import pytest

from helpers import write_spec
from pipeline.deploy import clusters as deploy
from pipeline.cli import build_parser
from pipeline.errors import InputError
from pipeline.deploy import ClusterOptions, cluster_names, make_security, open_client

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- registry


def test_cluster_choices_come_from_the_registry():
    assert cluster_names() == list(deploy.CLUSTERS)
    assert cluster_names()[0] == "local" and {"slurm", "pbs"} <= set(cluster_names())
    run = next(a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
               if "--cluster" in a.option_strings)
    assert sorted(run.choices) == sorted(cluster_names())


def test_a_new_deployment_is_one_registry_entry(monkeypatch):
    from distributed import LocalCluster

    seen = []

    def tiny(opts):
        seen.append(opts)
        return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)

    monkeypatch.setitem(deploy.CLUSTERS, "tiny", tiny)
    assert "tiny" in cluster_names()
    with open_client(ClusterOptions(cluster="tiny")) as client:
        assert client.submit(lambda x: x + 1, 1).result() == 2
    assert seen and seen[0].cluster == "tiny"


def test_unknown_cluster_is_a_usage_error():
    with pytest.raises(InputError, match="--cluster nope: unknown .*local"):
        with open_client(ClusterOptions(cluster="nope")):
            pass


def test_tls_scheduler_address_without_certificates_is_a_usage_error():
    with pytest.raises(InputError, match=r"--scheduler tls://127.0.0.1:1: .*--tls-ca-file"):
        with open_client(ClusterOptions(scheduler="tls://127.0.0.1:1")):
            pass


def test_unreachable_scheduler_is_a_connect_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(deploy.ConnectError, match=f"cannot connect to scheduler tcp://127.0.0.1:{port}"):
        with open_client(ClusterOptions(scheduler=f"tcp://127.0.0.1:{port}", connect_timeout="1s")):
            pass


# ---------------------------------------------------------------- make_security


def _certs(tmp_path):
    d = tmp_path / "certs"
    subprocess.run([sys.executable, str(ROOT / "cluster/tls/make-certs.py"), str(d), "--role", "client"],
                   check=True, capture_output=True)
    return d


def test_make_security_none_without_files_or_config():
    assert make_security() is None
    assert make_security(None, None, None) is None


def test_make_security_from_files_requires_encryption(tmp_path):
    d = _certs(tmp_path)
    sec = make_security(str(d / "ca.pem"), str(d / "client.pem"), str(d / "client-key.pem"))
    assert sec.require_encryption is True
    assert sec.tls_ca_file == str(d / "ca.pem")
    for role in ("client", "scheduler", "worker"):
        assert getattr(sec, f"tls_{role}_cert") == str(d / "client.pem")
        assert getattr(sec, f"tls_{role}_key") == str(d / "client-key.pem")
    assert deploy.uses_tls(sec)


def test_make_security_from_dask_config(tmp_path):
    d = _certs(tmp_path)
    with dask.config.set({"distributed.comm.tls.ca-file": str(d / "ca.pem"),
                          "distributed.comm.tls.client.cert": str(d / "client.pem"),
                          "distributed.comm.tls.client.key": str(d / "client-key.pem")}):
        sec = make_security()
    assert sec is not None and sec.tls_ca_file == str(d / "ca.pem")


@pytest.mark.parametrize("which", ["ca", "cert", "key"])
def test_make_security_missing_file_names_option_and_path(tmp_path, which):
    d = _certs(tmp_path)
    files = {"ca": str(d / "ca.pem"), "cert": str(d / "client.pem"), "key": str(d / "client-key.pem")}
    files[which] = str(tmp_path / "nope.pem")
    opt = {"ca": "--tls-ca-file", "cert": "--tls-cert", "key": "--tls-key"}[which]
    with pytest.raises(InputError, match=f"^{opt} {tmp_path / 'nope.pem'}: no such file$"):
        make_security(files["ca"], files["cert"], files["key"])


def test_make_security_partial_and_mismatched(tmp_path):
    d = _certs(tmp_path)
    with pytest.raises(InputError, match=r"missing --tls-cert, --tls-key"):
        make_security(str(d / "ca.pem"), None, None)
    with pytest.raises(InputError, match="--tls-cert .* not a matching PEM certificate and key"):
        make_security(str(d / "ca.pem"), str(d / "client.pem"), str(d / "ca-key.pem"))
    with pytest.raises(InputError, match="--tls-ca-file .*not a PEM CA certificate"):
        make_security(str(d / "client-key.pem"), str(d / "client.pem"), str(d / "client-key.pem"))


# ---------------------------------------------------------------- 127.0.0.1 only


def _listening(pids):
    out = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def _other_addresses():
    """This host's IPv4 addresses other than loopback."""
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


def test_embedded_cluster_listens_on_loopback_only():
    with open_client(ClusterOptions(n_workers=2)) as client:
        client.wait_for_workers(2, timeout=60)
        assert urlparse(client.scheduler.address).hostname == "127.0.0.1"
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
        assert all(urlparse(w).hostname == "127.0.0.1" for w in client.scheduler_info()["workers"])
        me = psutil.Process()
        pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
        socks = _listening(pids)
        ports = {a.port for a in socks}
        assert urlparse(client.dashboard_link).port in ports
        assert int(client.scheduler.address.rsplit(":", 1)[1]) in ports
        assert len(socks) >= 4  # scheduler, dashboard, 2 workers (+ nannies)
        bad = [a for a in socks if a.ip != "127.0.0.1"]
        assert not bad, f"listening beyond loopback: {bad}"
        for ip in _other_addresses():  # and nothing answers on this host's other addresses
            for port in ports:
                with socket.socket() as s:
                    s.settimeout(2)
                    assert s.connect_ex((ip, port)) != 0, f"{ip}:{port} accepted a connection"


# ---------------------------------------------------------------- --cluster slurm without dask-jobqueue

BLOCK = textwrap.dedent("""
    import sys
    class _NoJobqueue:
        def find_spec(self, name, path=None, target=None):
            if name == "dask_jobqueue" or name.startswith("dask_jobqueue."):
                raise ImportError("No module named 'dask_jobqueue' (blocked by the test)")
            return None
    sys.meta_path.insert(0, _NoJobqueue())
    sys.path.insert(0, {root!r})
    from pipeline.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_cluster_without_dask_jobqueue_exits_2_with_one_line(tmp_path, kind):
    f = write_spec(tmp_path, walkers=10)
    r = subprocess.run([sys.executable, "-c", BLOCK.format(root=str(ROOT)), "run", str(f), "--cluster", kind, "-q"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"escape-sweep: error: --cluster {kind} needs dask-jobqueue: pip install 'escape-sweep[{kind}]'"]
    assert r.stdout == ""
