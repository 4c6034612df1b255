"""The TLS context of one apiserver connection: the cluster's CA (or the system's), the client
certificate if there is one, and no verification at all with ``insecure-skip-tls-verify``.

Shared by every transport (:mod:`ccm.kube.h1`, :mod:`ccm.kube.http`).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator

from ccm import errors
from ccm.kube import auth, kubeconfig
from ccm.kube.transport import describe

__all__ = ["client_certificate", "ssl_context"]


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """``data`` in a private temporary file for as long as ``ssl`` needs a path."""
    fd, path = tempfile.mkstemp(prefix="ccm-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        os.unlink(path)


def client_certificate(credentials: auth.Credentials) -> tuple[str | None, str | None]:
    """``(cert file, key file)`` an exec plugin handed out, else ``(None, None)``."""
    if isinstance(credentials, auth.PluginCredentials):
        return credentials.cert_file, credentials.key_file
    return None, None


def ssl_context(
    conn: kubeconfig.Connection, *, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """The TLS context of ``conn`` (``cert_file``/``key_file``: a plugin's client certificate).

    Raises :class:`ccm.errors.ConfigError` naming the field whose content ``ssl`` refused.
    """
    field = "certificate-authority"
    try:
        if conn.ca_data is not None:
            field += "-data"
            context = ssl.create_default_context(cadata=conn.ca_data.decode("ascii", "replace"))
        else:
            context = ssl.create_default_context(cafile=conn.ca_file)
        field = "client-certificate/client-key"
        cert, key = conn.cert_file or cert_file, conn.key_file or key_file
        with contextlib.ExitStack() as stack:
            if conn.cert_data is not None:
                cert = stack.enter_context(_pem_file(conn.cert_data))
            if conn.key_data is not None:
                key = stack.enter_context(_pem_file(conn.key_data))
            if cert is not None:
                context.load_cert_chain(cert, keyfile=key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise errors.ConfigError(f"{conn.where}: {field}: {describe(exc)}") from exc
    if conn.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
