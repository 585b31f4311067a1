"""TLS end to end: certificates from cluster/tls/make-certs.py, a TLS `dask scheduler` and
`dask worker` on 127.0.0.1, sweeps with and without the client certificate, and the
embedded cluster with TLS."""

import ipaddress
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

from helpers import dask_on_loopback, write_spec  # noqa: E402
from pipeline.deploy import clusters as deploy  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.deploy import ClusterOptions, make_security, open_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "tls" / "make-certs.py"
BIN = Path(sys.executable).parent


def make_certs(outdir, *args):
    return subprocess.run([sys.executable, str(SCRIPT), str(outdir), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls") / "certs"
    r = make_certs(d, "--name", "sched.example.org", "--name", "10.1.2.3")
    assert r.returncode == 0, r.stderr
    return d


def client_security(d):
    return make_security(str(d / "ca.pem"), str(d / "client.pem"), str(d / "client-key.pem"))


def tls_args(d, role):
    return ["--tls-ca-file", str(d / "ca.pem"), "--tls-cert", str(d / f"{role}.pem"),
            "--tls-key", str(d / f"{role}-key.pem")]


@pytest.fixture(scope="module")
def tls_cluster(certs, tmp_path_factory):
    """A TLS `dask scheduler` and one `dask worker` process on 127.0.0.1; yields the tls:// address."""
    with dask_on_loopback(tmp_path_factory.mktemp("sched"), n_workers=1,
                          scheduler_args=["--protocol", "tls", *tls_args(certs, "scheduler")],
                          worker_args=tls_args(certs, "worker"), security=client_security(certs)) as (addr, _):
        yield addr


# ---------------------------------------------------------------- the script


def test_make_certs_writes_a_ca_and_three_role_certificates(certs):
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for role in ("scheduler", "worker", "client"):
        assert stat.S_IMODE((certs / f"{role}-key.pem").stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate((certs / f"{role}.pem").read_bytes())
        assert cert.issuer == ca.subject
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "sched.example.org"}
        assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                               ipaddress.ip_address("10.1.2.3")}
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))  # the chain loads and matches
        ctx.load_cert_chain(str(certs / f"{role}.pem"), str(certs / f"{role}-key.pem"))
    assert stat.S_IMODE((certs / "ca-key.pem").stat().st_mode) == 0o600


def test_make_certs_reuses_the_ca_and_never_overwrites_silently(tmp_path):
    d = tmp_path / "c"
    assert make_certs(d, "--role", "client").returncode == 0
    ca = (d / "ca.pem").read_bytes()
    key = (d / "client-key.pem").read_bytes()
    r = make_certs(d, "--role", "client")
    assert r.returncode != 0 and "exist" in r.stderr and (d / "client-key.pem").read_bytes() == key
    r = make_certs(d, "--role", "client", "--role", "worker", "--name", "w7", "--force")
    assert r.returncode == 0 and "reusing CA" in r.stdout
    assert (d / "ca.pem").read_bytes() == ca and (d / "client-key.pem").read_bytes() != key
    assert (d / "worker.pem").exists() and not (d / "scheduler.pem").exists()


# ---------------------------------------------------------------- a TLS scheduler and worker


def test_tls_scheduler_and_worker_run_a_task_for_a_client_with_a_certificate(tls_cluster, certs):
    assert tls_cluster.startswith("tls://127.0.0.1:")
    with open_client(ClusterOptions(scheduler=tls_cluster, security=client_security(certs))) as client:
        assert client.submit(lambda x: x * 2, 21).result(timeout=60) == 42
        assert all(w.startswith("tls://127.0.0.1:") for w in client.scheduler_info()["workers"])


def test_sweep_over_tls_with_the_client_certificate(tls_cluster, certs, tmp_path, capsys):
    f = write_spec(tmp_path, name="tls", walkers=300)
    assert main(["run", str(f), "--scheduler", tls_cluster, *tls_args(certs, "client"), "-q"]) == 0
    assert capsys.readouterr().out.startswith("done: ")
    from pipeline.sweep import store as cube

    done, total = cube.chunk_count(tmp_path / "tls.zarr")
    assert done == total > 0


def _run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)})


def test_client_without_tls_cannot_connect(tls_cluster, tmp_path):
    f = write_spec(tmp_path, name="plain", walkers=100)
    plain = tls_cluster.replace("tls://", "tcp://")
    r = _run_cli(["run", str(f), "--scheduler", plain, "-q"], tmp_path)
    assert r.returncode == 1
    assert f"cannot connect to scheduler {plain}" in r.stderr
    # a tls:// address without certificates is bad input: one line, exit 2
    r = _run_cli(["run", str(f), "--scheduler", tls_cluster, "-q"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"escape-sweep: error: --scheduler {tls_cluster}: a tls:// scheduler needs --tls-ca-file, --tls-cert "
        "and --tls-key"]


def test_refused_client_writes_nothing(tls_cluster, tmp_path):
    f = write_spec(tmp_path, name="plain", walkers=100)
    r = _run_cli(["run", str(f), "--scheduler", tls_cluster.replace("tls://", "tcp://"), "-q"], tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line, no traceback
    assert not (tmp_path / "plain.zarr").exists()


def test_client_with_a_certificate_from_another_ca_is_refused(tls_cluster, tmp_path):
    other = tmp_path / "other"
    assert make_certs(other, "--role", "client").returncode == 0
    with pytest.raises(deploy.ConnectError, match="cannot connect to scheduler tls://"):
        with open_client(ClusterOptions(scheduler=tls_cluster, security=client_security(other),
                                        connect_timeout="3s")):
            pass


# ---------------------------------------------------------------- the embedded cluster with TLS


def test_embedded_cluster_with_tls_uses_tls_addresses(certs):
    with open_client(ClusterOptions(n_workers=1, security=client_security(certs))) as client:
        client.wait_for_workers(1, timeout=60)
        addr = client.scheduler.address
        assert addr.startswith("tls://127.0.0.1:")
        assert all(w.startswith("tls://127.0.0.1:") for w in client.scheduler_info()["workers"])
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
        assert client.submit(lambda: 7).result(timeout=60) == 7
        with pytest.raises(deploy.ConnectError):  # the same port without TLS is refused
            with open_client(ClusterOptions(scheduler=addr.replace("tls://", "tcp://"), connect_timeout="3s")):
                pass
