"""TLS for Dask traffic: a `distributed.Security` from certificate files (or dask config).

Dask's TLS is mutual: every side, the client included, presents a certificate signed by the
CA, and encryption is required. A missing or mismatched file is bad input (exit 2).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from ..errors import InputError

_TLS_CONFIG_KEYS = (
    "distributed.comm.tls.ca-file",
    "distributed.comm.tls.client.cert",
    "distributed.comm.tls.scheduler.cert",
    "distributed.comm.tls.worker.cert",
)


def make_security(tls_ca_file: str | None = None, tls_cert: str | None = None,
                  tls_key: str | None = None):
    """`distributed.Security` for TLS with client certificates, or None for plain TCP.

    Given files: all three are required (Dask's TLS is mutual: every side, the client
    included, presents a certificate signed by the CA); the one cert+key serves the client
    and, for the embedded LocalCluster, its scheduler and workers too; encryption is
    required. None given: a `Security()` from dask config when that names TLS material
    (distributed.comm.tls.*) or requires encryption, else None.
    A missing, unreadable or mismatched file raises InputError naming the option and path.
    """
    from distributed import Security
    import dask.config

    given = {"--tls-ca-file": tls_ca_file, "--tls-cert": tls_cert, "--tls-key": tls_key}
    if not any(given.values()):
        if dask.config.get("distributed.comm.require-encryption", None) or any(
            dask.config.get(k, None) for k in _TLS_CONFIG_KEYS
        ):
            return Security()
        return None
    missing = [opt for opt, v in given.items() if not v]
    if missing:
        raise InputError(
            f"TLS needs all of --tls-ca-file, --tls-cert and --tls-key (missing {', '.join(missing)})"
        )
    for opt, value in given.items():
        path = Path(os.path.expanduser(str(value)))
        if not path.is_file():
            raise InputError(f"{opt} {value}: no such file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{opt} {value}: not readable")
    ca, cert, key = (os.path.abspath(os.path.expanduser(str(v))) for v in given.values())
    try:
        ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise InputError(f"--tls-ca-file {tls_ca_file}: not a PEM CA certificate ({e})") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise InputError(
            f"--tls-cert {tls_cert} / --tls-key {tls_key}: not a matching PEM certificate and key ({e})"
        ) from None
    return Security(
        tls_ca_file=ca,
        tls_client_cert=cert, tls_client_key=key,
        tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_worker_cert=cert, tls_worker_key=key,
        require_encryption=True,
    )


def uses_tls(security) -> bool:
    """True when `security` asks for TLS (require_encryption, or any certificate set)."""
    if security is None:
        return False
    return bool(
        getattr(security, "require_encryption", False)
        or getattr(security, "tls_ca_file", None)
        or getattr(security, "tls_client_cert", None)
        or getattr(security, "tls_scheduler_cert", None)
    )
