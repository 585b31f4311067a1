"""cluster/: every recipe is there, the YAML parses, and Kubernetes runs the image the Dockerfile builds."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CL = ROOT / "cluster"


def dockerfile_image():
    text = (CL / "docker" / "Dockerfile").read_text()
    m = re.search(r'org\.opencontainers\.image\.ref\.name="([^"]+)"', text)
    assert m, "the Dockerfile names its image in a LABEL"
    return m.group(1)


def test_dockerfile_builds_the_package_from_the_repo_root():
    text = (CL / "docker" / "Dockerfile").read_text()
    image = dockerfile_image()
    assert image == "escape-sweep:latest"
    assert f"docker build -f cluster/docker/Dockerfile -t {image} ." in text
    assert re.search(r"^COPY \. /src$", text, re.M)
    assert "pip install /src" in text and "pip install --constraint /src/cluster/docker/constraints.txt /src" in text
    assert re.search(r"^USER 1000", text, re.M)  # not root
    for cmd in ("dask-scheduler", "dask-worker"):  # what the dask Helm chart calls
        assert f"/usr/local/bin/{cmd}" in text
    ignore = (CL / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ".git" in ignore and "**/*-key.pem" in ignore and "**/*.zarr" in ignore
    assert (ROOT / "pyproject.toml").exists()  # the build context really is the repo root


def _containers(manifest):
    spec = manifest["spec"]
    return spec["scheduler"]["spec"]["containers"] + spec["worker"]["spec"]["containers"]


def test_operator_manifest_runs_the_dockerfile_image():
    m = yaml.safe_load((CL / "kubernetes" / "daskcluster.yaml").read_text())
    assert (m["apiVersion"], m["kind"], m["metadata"]["name"]) == ("kubernetes.dask.org/v1", "DaskCluster",
                                                                    "escape-sweep")
    cs = _containers(m)
    assert [c["image"] for c in cs] == [dockerfile_image()] * 2
    assert cs[0]["args"][:2] == ["dask", "scheduler"] and cs[1]["args"][:2] == ["dask", "worker"]
    svc = m["spec"]["scheduler"]["service"]
    assert svc["type"] == "ClusterIP"
    assert {p["port"] for p in svc["ports"]} == {8786, 8787}
    assert svc["selector"]["dask.org/cluster-name"] == "escape-sweep"
    for c in cs:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_helm_values_run_the_dockerfile_image_without_jupyter():
    v = yaml.safe_load((CL / "kubernetes" / "helm-values.yaml").read_text())
    for part in ("scheduler", "worker"):
        img = v[part]["image"]
        assert f"{img['repository']}:{img['tag']}" == dockerfile_image()
    assert v["jupyter"]["enabled"] is False
    assert v["scheduler"]["serviceType"] == "ClusterIP"
    assert v["webUI"]["ingress"]["enabled"] is False
    assert v["fullnameOverride"] == "escape-sweep"  # Service escape-sweep-scheduler, as with the operator


def test_networkpolicy_selects_the_operator_cluster():
    n = yaml.safe_load((CL / "kubernetes" / "networkpolicy.yaml").read_text())
    assert n["kind"] == "NetworkPolicy"
    assert n["spec"]["podSelector"]["matchLabels"]["dask.org/cluster-name"] == "escape-sweep"


@pytest.mark.parametrize("target, needles", [
    ("slurm", ["--cluster slurm", "ssh -N -L 8787:127.0.0.1:8787", "jobqueue.yaml", "ESCAPE_SWEEP_JOBQUEUE",
               "escape-sweep[slurm]", "--lifetime"]),
    ("pbs", ["--cluster pbs", "ssh -N -L 8787:127.0.0.1:8787", "jobqueue.yaml", "escape-sweep[pbs]"]),
    ("kubernetes", ["kubectl port-forward svc/escape-sweep-scheduler 8786:8786 8787:8787",
                    "--scheduler tcp://127.0.0.1:8786", "docker build -f cluster/docker/Dockerfile -t escape-sweep:latest .",
                    "helm install"]),
    ("docker", ["docker build -f cluster/docker/Dockerfile -t escape-sweep:latest ."]),
    ("hosts", ["dask scheduler", "dask worker tls://", "--tls-ca-file", "make-certs.py", "ssh -N -L"]),
    ("tls", ["make-certs.py", "--tls-ca-file", "ca-key.pem"]),
])
def test_each_target_has_a_recipe(target, needles):
    text = (CL / target / "README.md").read_text()
    for n in needles:
        assert n in text, (target, n)


def test_security_section_says_what_is_and_is_not_protected():
    text = (CL / "README.md").read_text()
    sec = text[text.index("## Security"):]
    for n in ("executes code sent to it", "127.0.0.1", "unauthenticated HTTP", "mutual TLS",
              "Not protected", "ca-key.pem", "require_encryption"):
        assert n in sec, n
