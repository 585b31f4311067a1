#!/usr/bin/env python3
"""Make TLS material for a Dask cluster: a CA, and a certificate + key for the scheduler,
the workers and the client, all signed by that CA.

    python cluster/tls/make-certs.py certs/ --name sched.example.org --name 10.0.0.5

writes into certs/:
    ca.pem                 the CA certificate (give it to every side: --tls-ca-file)
    ca-key.pem             the CA key (0600): keep it off the cluster; whoever has it can
                           mint certificates that the scheduler accepts
    scheduler.pem, scheduler-key.pem
    worker.pem,    worker-key.pem
    client.pem,    client-key.pem   (keys 0600)

Every leaf certificate names 127.0.0.1 and localhost plus each --name (DNS name or IP) as
subjectAltName, and is good for TLS server and client use (Dask scheduler and workers
both accept and open connections). An existing CA in the directory is reused, so running
again with --role worker --name newhost issues more certificates under the same CA;
existing leaf files are not overwritten without --force.

Needs the `cryptography` package (pip install cryptography).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

ROLES = ("scheduler", "worker", "client")


def _need_cryptography():
    try:
        import cryptography  # noqa: F401
    except ImportError:
        sys.exit("make-certs.py needs the cryptography package: pip install cryptography")


def _write(path: Path, data: bytes, private: bool, force: bool) -> None:
    if path.exists() and not force:
        sys.exit(f"make-certs.py: {path} exists (use --force to replace it)")
    if private:
        # create with 0600 from the start, never world-readable even briefly
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
    else:
        path.write_bytes(data)


def _san_entries(names):
    from cryptography import x509

    out, seen = [], set()
    for name in ["127.0.0.1", "localhost", *names]:
        if name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(days: int, common_name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert, role: str, names, days: int):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    now = dt.datetime.now(dt.timezone.utc)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"escape-sweep {role}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def load_ca(outdir: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((outdir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((outdir / "ca-key.pem").read_bytes(), password=None)
    return key, cert


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="make-certs.py",
        description="Make a CA and scheduler/worker/client certificates for Dask TLS.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("outdir", help="directory for the PEM files (created, mode 0700)")
    p.add_argument("--name", action="append", default=[], metavar="HOST",
                   help="extra subjectAltName (DNS name or IP) for the leaf certificates; repeatable")
    p.add_argument("--role", action="append", choices=ROLES, default=None,
                   help="which leaf certificates to make (default: all three); repeatable")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("--ca-name", default="escape-sweep Dask CA", help="CA common name")
    p.add_argument("--force", action="store_true", help="overwrite existing leaf files")
    args = p.parse_args(argv)
    if args.days < 1:
        p.error("--days must be >= 1")
    _need_cryptography()

    outdir = Path(args.outdir)
    roles = args.role or list(ROLES)
    have_ca = (outdir / "ca.pem").exists() and (outdir / "ca-key.pem").exists()
    targets = [outdir / f"{r}{s}.pem" for r in roles for s in ("", "-key")]
    if not have_ca:
        targets += [outdir / "ca.pem", outdir / "ca-key.pem"]
    clash = [str(t) for t in targets if t.exists()]
    if clash and not args.force:
        sys.exit(f"make-certs.py: {', '.join(clash)} exist(s); use --force to replace")
    outdir.mkdir(parents=True, exist_ok=True)
    os.chmod(outdir, 0o700)
    if have_ca:
        ca_key, ca_cert = load_ca(outdir)
        print(f"reusing CA {outdir / 'ca.pem'}")
    else:
        ca_key, ca_cert = make_ca(args.days, args.ca_name)
        _write(outdir / "ca-key.pem", _pem_key(ca_key), private=True, force=args.force)
        _write(outdir / "ca.pem", _pem_cert(ca_cert), private=False, force=args.force)
        print(f"wrote CA {outdir / 'ca.pem'} (keep {outdir / 'ca-key.pem'} secret)")
    for role in roles:
        key, cert = make_leaf(ca_key, ca_cert, role, args.name, args.days)
        _write(outdir / f"{role}-key.pem", _pem_key(key), private=True, force=args.force)
        _write(outdir / f"{role}.pem", _pem_cert(cert), private=False, force=args.force)
        print(f"wrote {outdir / (role + '.pem')} and {outdir / (role + '-key.pem')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
