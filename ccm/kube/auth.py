"""The ``Authorization`` header of each request: static and rotating tokens, basic auth, plugins.

ccm implements the credentials a cloud controller manager meets in practice: a bearer ``token``,
a ``tokenFile`` (and the in-cluster service-account token) re-read every minute as client-go's
cached file token source does, and ``username``/``password``. Client certificates are TLS, not a
header (:mod:`ccm.kube.tls`).

Exec credential plugins and legacy ``auth-provider`` entries (gcp, oidc) are delegated to
kubernetes_asyncio's public kubeconfig loader (``kubernetes_asyncio.config.load_kube_config``),
imported only when such a kubeconfig is met: importing that package loads its generated API
models too (~37 MiB resident), which every other configuration does without. An exec plugin is
re-run when its token's ``expirationTimestamp`` is near, or after a 401 (as client-go's exec
authenticator does), one run at a time; an auth-provider token is loaded once at connect.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from ccm import clock, errors
from ccm.kube import kubeconfig

__all__ = [
    "TOKEN_FILE_REFRESH_SECONDS",
    "BasicAuth",
    "Credentials",
    "NoCredentials",
    "PluginCredentials",
    "StaticToken",
    "TokenFile",
    "credentials_for",
]

_log = logging.getLogger(__name__)

#: client-go re-reads a token file once a minute (``transport.NewCachedFileTokenSource``).
TOKEN_FILE_REFRESH_SECONDS = 60.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Credentials(abc.ABC):
    """Headers that authenticate one request."""

    @abc.abstractmethod
    async def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> bool:
        """A 401 came back: refresh before the next request. True if resending may help."""
        return False


class NoCredentials(Credentials):
    async def headers(self) -> dict[str, str]:
        return {}


class StaticToken(Credentials):
    """A bearer token that can be replaced (ServiceAccount token refresh)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class BasicAuth(Credentials):
    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._value = "Basic " + base64.b64encode(raw).decode("ascii")

    async def headers(self) -> dict[str, str]:
        return {"Authorization": self._value}


class TokenFile(Credentials):
    """A bearer token read from a file that is rotated underneath us (projected service-account
    tokens, ``tokenFile``): re-read when a minute old, or after a 401. If a re-read fails, the
    last token (or ``fallback``, the kubeconfig's ``token``) is used and the failure logged."""

    def __init__(self, path: str, *, fallback: str | None = None) -> None:
        self.path = path
        self._token = fallback
        self._read_at: float | None = None
        self._token = self._read() or fallback

    def _read(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            _log.warning("Cannot read the token file %s: %s", self.path, _describe(exc))
            return None
        self._read_at = clock.monotonic()
        if not token:
            _log.warning("The token file %s is empty", self.path)
            return None
        return token

    async def headers(self) -> dict[str, str]:
        if self._read_at is None or clock.monotonic() - self._read_at >= TOKEN_FILE_REFRESH_SECONDS:
            self._token = self._read() or self._token
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def invalidate(self) -> bool:
        self._read_at = None  # the next request re-reads the file
        return False


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """kubernetes_asyncio logs errors it then raises; we report them once, as a ConfigError."""
    logger = logging.getLogger(logger_name)
    flt = _DropRecords()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def _config_reason(exc: BaseException) -> str:
    # kubernetes_asyncio's ConfigException messages stand on their own.
    if type(exc).__name__ == "ConfigException" and str(exc).strip():
        return str(exc).strip()
    return _describe(exc)


class PluginCredentials(Credentials):
    """An exec credential plugin or a legacy auth-provider, run by kubernetes_asyncio."""

    def __init__(self, conn: kubeconfig.Connection, configuration: Any, loader: Any) -> None:
        self._exec = conn.plugin == "exec"
        self._configuration = configuration
        self._loader = loader
        self._stale = False
        self._lock = asyncio.Lock()
        #: A client certificate the plugin returned instead of a token (files it wrote).
        self.cert_file: str | None = configuration.cert_file or None
        self.key_file: str | None = configuration.key_file or None

    @classmethod
    async def load(cls, conn: kubeconfig.Connection) -> PluginCredentials:
        """Run the plugin once (raises :class:`ccm.errors.ConfigError` if it fails)."""
        import kubernetes_asyncio.config
        from kubernetes_asyncio.client import Configuration

        configuration = Configuration()
        try:
            with _quiet("kubernetes_asyncio.config.kube_config"):
                loader = await kubernetes_asyncio.config.load_kube_config(
                    config_file=os.pathsep.join(conn.files),
                    context=conn.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except Exception as exc:
            raise errors.ConfigError(f"{conn.where}: {_config_reason(exc)}") from exc
        return cls(conn, configuration, loader)

    async def headers(self) -> dict[str, str]:
        if self._exec and (self._stale or hasattr(self._loader, "exec_plugin_expiry")):
            async with self._lock:
                await self._refresh_exec()
        settings = await self._configuration.auth_settings()
        out: dict[str, str] = {}
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                out[str(setting["key"])] = str(setting["value"])
        return out

    async def _refresh_exec(self) -> None:
        loader = self._loader
        if self._stale and hasattr(loader, "exec_plugin_expiry"):
            del loader.exec_plugin_expiry
        if self._stale or hasattr(loader, "exec_plugin_expiry"):
            try:
                # Returns at once while the cached token is valid; re-runs the plugin otherwise.
                await loader.load_from_exec_plugin()
            except Exception as exc:
                raise errors.KubeError(f"exec credential plugin failed: {_describe(exc)}") from exc
            token = getattr(loader, "token", None)
            if token:
                self._configuration.api_key["BearerToken"] = token
            self._stale = False

    def invalidate(self) -> bool:
        if self._exec:
            self._stale = True
            return True
        return False


async def credentials_for(conn: kubeconfig.Connection) -> Credentials:
    """The credentials of ``conn``'s user (a plugin runs once here)."""
    if conn.plugin is not None:
        return await PluginCredentials.load(conn)
    if conn.token_file is not None:
        return TokenFile(conn.token_file, fallback=conn.token)
    if conn.token is not None:
        return StaticToken(conn.token)
    if conn.username is not None and conn.password is not None:
        return BasicAuth(conn.username, conn.password)
    return NoCredentials()
