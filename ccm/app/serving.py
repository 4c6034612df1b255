"""The HTTPS endpoint of ccm: ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics``.

Ports the serving side of upstream ``app/serve.go`` and controller-manager's ``NewBaseHandler``
(``/healthz``, ``/metrics``), with the health-check handlers of k8s.io/apiserver
``pkg/server/healthz`` (output format byte-identical: ``[+]name ok``, ``[-]name failed: reason
withheld``, ``healthz check failed``; ``?verbose``, ``?exclude=name``, ``/healthz/<name>``).

HTTPS only, as upstream: with no ``--tls-cert-file``/``--tls-private-key-file`` a self-signed
certificate for ``localhost`` and ``127.0.0.1`` is generated in memory at start-up. A given pair is
re-read when the files change (upstream ``DynamicServingCertificateController``), so a rotated
certificate (cert-manager, a projected Secret) is served without a restart. The certificate
toolkit (:mod:`ccm.certs`, which loads ``cryptography``: ~40 ms of start-up) is imported only to
generate that certificate.

Checks are mutable after start (upstream ``MutableHealthzHandler``): the manager adds one per
controller as it starts them. A check added with :meth:`SecureServer.add_healthz_check` serves
``/healthz``, ``/livez`` and ``/readyz`` (as the apiserver's ``AddHealthChecks``);
:meth:`SecureServer.add_readyz_check` serves ``/readyz`` only.

Delegated authentication/authorization (TokenReview/SubjectAccessReview) plugs in as an
``authorizer``: a coroutine that sees every request except the always-allowed health paths and
returns ``None`` to allow it or an HTTP status (401, 403) to reject it. With ``client_ca_file``
the TLS layer asks for (but does not require) client certificates, which the authorizer can read
from ``request.transport.get_extra_info("peercert")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Final

import prometheus_client
from aiohttp import web
from prometheus_client import exposition

from ccm import metrics, wellknown
from ccm.app.flagtable import DEFAULT_ALWAYS_ALLOW_PATHS
from ccm.errors import ConfigError
from ccm.logs import v

__all__ = [
    "DEFAULT_ALWAYS_ALLOW_PATHS",
    "Authorizer",
    "HealthCheck",
    "SecureServer",
    "cert_dir_pair",
    "generate_self_signed_cert",
]

_log = logging.getLogger(__name__)

#: ``None`` means healthy; a string is the reason the check fails. May be sync or async.
HealthCheck = Callable[[], str | Awaitable[str | None] | None]
#: Sees a request; returns ``None`` to let it through or the HTTP status to reject it with.
Authorizer = Callable[[web.Request], Awaitable[int | None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: ``--tls-min-version`` (Go's names) → the ssl module's; TLS 1.0 and 1.1 are never served.
_TLS_VERSIONS: Final = {
    "VersionTLS12": ssl.TLSVersion.TLSv1_2,
    "VersionTLS13": ssl.TLSVersion.TLSv1_3,
}

_HEALTHZ: Final = "healthz"
_LIVEZ: Final = "livez"
_READYZ: Final = "readyz"
_TEXT_HEADERS: Final = {"X-Content-Type-Options": "nosniff"}


def generate_self_signed_cert(
    *,
    common_name: str | None = None,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    valid_for: dt.timedelta | None = None,
) -> tuple[bytes, bytes]:
    """A self-signed serving certificate and its key, PEM-encoded: ``(cert, key)``.

    Like upstream ``GenerateSelfSignedCertKey``: ``CN=localhost@<unix time>``, SANs for the given
    names and addresses, valid for ``valid_for`` (default a year, ``ccm.certs.DEFAULT_VALIDITY``).
    ECDSA P-256 (instant to generate).
    """
    from ccm import certs  # loads cryptography: only when a certificate is generated

    if valid_for is None:
        valid_for = certs.DEFAULT_VALIDITY
    now = dt.datetime.now(dt.UTC)
    cn = common_name or f"{dns_names[0] if dns_names else 'localhost'}@{int(now.timestamp())}"
    pair = certs.self_signed(
        cn, usage="server", dns_names=dns_names, ip_addresses=ip_addresses, valid_for=valid_for
    )
    return pair.cert_pem, pair.key_pem


class SecureServer:
    """The HTTPS server for health checks and metrics (upstream port 10258)."""

    def __init__(
        self,
        *,
        bind_address: str = "0.0.0.0",
        port: int = wellknown.CLOUD_CONTROLLER_MANAGER_PORT,
        cert_file: str | None = None,
        key_file: str | None = None,
        client_ca_file: str | None = None,
        registry: prometheus_client.CollectorRegistry = metrics.REGISTRY,
        authorizer: Authorizer | None = None,
        always_allow_paths: Iterable[str] = DEFAULT_ALWAYS_ALLOW_PATHS,
        shutdown_timeout: float = 5.0,
        cert_reload_interval: float = 60.0,
        tls_min_version: str | None = None,
    ) -> None:
        if bool(cert_file) != bool(key_file):
            raise ConfigError("--tls-cert-file and --tls-private-key-file must be given together")
        self._bind_address = bind_address
        self._port = port
        self._cert_file = cert_file
        self._key_file = key_file
        self._client_ca_file = client_ca_file
        self._registry = registry
        self._authorizer = authorizer
        self._always_allow_paths = tuple(always_allow_paths)
        self._shutdown_timeout = shutdown_timeout
        self._checks: dict[str, dict[str, HealthCheck]] = {_HEALTHZ: {}, _LIVEZ: {}, _READYZ: {}}
        self._extra_routes: list[tuple[str, str, Handler]] = []
        self._cert_reload_interval = cert_reload_interval
        try:
            self._tls_min_version = _TLS_VERSIONS[tls_min_version or "VersionTLS12"]
        except KeyError:
            raise ConfigError(
                f'--tls-min-version "{tls_min_version}": one of {", ".join(_TLS_VERSIONS)}'
            ) from None
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None
        self._cert_stamp: tuple[tuple[int, int], ...] | None = None
        self._reloader: asyncio.Task[None] | None = None

    # -- configuration ------------------------------------------------------------------------

    def add_healthz_check(self, name: str, check: HealthCheck) -> None:
        """Serve ``check`` on ``/healthz``, ``/livez`` and ``/readyz`` (and ``/<path>/<name>``)."""
        self._add_check(name, check, (_HEALTHZ, _LIVEZ, _READYZ))

    def add_readyz_check(self, name: str, check: HealthCheck) -> None:
        """Serve ``check`` on ``/readyz`` only (and ``/readyz/<name>``)."""
        self._add_check(name, check, (_READYZ,))

    def _add_check(self, name: str, check: HealthCheck, kinds: tuple[str, ...]) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid health check name {name!r}")
        for kind in kinds:
            if name in self._checks[kind]:
                raise ValueError(f'health check "{name}" is already registered on /{kind}')
        for kind in kinds:
            self._checks[kind][name] = check

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve another path (e.g. ``/configz``) behind the same filters. Call before start()."""
        if self._runner is not None:
            raise RuntimeError("add_route() must be called before start()")
        self._extra_routes.append((method, path, handler))

    # -- life cycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port served on: the actual one once started (also when asked for port 0)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("SecureServer is already started")
        self._cert_stamp = self._stamp()
        ssl_context = self._ssl = self._ssl_context()
        app = web.Application(middlewares=[self._filters])
        for kind in (_HEALTHZ, _LIVEZ, _READYZ):
            app.router.add_get(f"/{kind}", self._aggregate_handler(kind))
            app.router.add_get(f"/{kind}/{{name}}", self._single_handler(kind))
        app.router.add_get("/metrics", self._metrics)
        for method, path, handler in self._extra_routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self._bind_address, self._port, ssl_context=ssl_context, reuse_address=True
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self._cert_file and self._cert_reload_interval > 0:
            self._reloader = asyncio.create_task(self._watch_certs(), name="serving/cert-reload")
        _log.log(v(2), "serving securely on %s", ", ".join(map(str, runner.addresses)))

    async def stop(self) -> None:
        reloader, self._reloader = self._reloader, None
        if reloader is not None:
            reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloader
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def reload_certificates(self) -> bool:
        """Re-read the cert/key files into the live TLS context if they changed; new connections
        get the new pair. A broken pair is logged and the old one kept. Returns whether it
        reloaded."""
        if self._ssl is None or not (self._cert_file and self._key_file):
            return False
        stamp = self._stamp()
        if stamp == self._cert_stamp:
            return False
        try:
            # Validate on a scratch context first: a half-written pair must not break serving.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self._cert_file, self._key_file
            )
            self._ssl.load_cert_chain(self._cert_file, self._key_file)
        except (OSError, ssl.SSLError) as exc:
            _log.warning("keeping the current serving certificate: %s", exc)
            return False
        self._cert_stamp = stamp
        _log.info("loaded a new serving certificate from %s", self._cert_file)
        return True

    async def _watch_certs(self) -> None:
        while True:
            await asyncio.sleep(self._cert_reload_interval)
            self.reload_certificates()

    def _stamp(self) -> tuple[tuple[int, int], ...] | None:
        if not (self._cert_file and self._key_file):
            return None
        try:
            stats = [os.stat(p) for p in (self._cert_file, self._key_file)]
        except OSError:
            return None
        return tuple((st.st_mtime_ns, st.st_size) for st in stats)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = self._tls_min_version
        try:
            if self._cert_file and self._key_file:
                ctx.load_cert_chain(self._cert_file, self._key_file)
            else:
                _load_generated_cert(ctx)
            if self._client_ca_file:
                ctx.load_verify_locations(cafile=self._client_ca_file)
                ctx.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"unable to load serving certificates: {exc}") from exc
        return ctx

    # -- request handling -----------------------------------------------------------------------

    def _always_allowed(self, path: str) -> bool:
        for pattern in self._always_allow_paths:
            if pattern.endswith("*"):
                if path.startswith(pattern[:-1]):
                    return True
            elif path == pattern:
                return True
        return False

    @web.middleware
    async def _filters(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._authorizer is not None and not self._always_allowed(request.path):
            try:
                status = await self._authorizer(request)
            except Exception:
                _log.exception("authorizer failed for %s %s", request.method, request.path)
                status = HTTPStatus.INTERNAL_SERVER_ERROR
            if status is not None:
                return web.Response(
                    status=int(status), text=HTTPStatus(status).phrase + "\n", headers=_TEXT_HEADERS
                )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.setdefault("Cache-Control", "no-cache, private")
            raise
        # upstream WithCacheControl: health and metrics must never be cached by a proxy.
        response.headers.setdefault("Cache-Control", "no-cache, private")
        return response

    def _aggregate_handler(self, kind: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._aggregate(request, kind)

        return handle

    def _single_handler(self, kind: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            check = self._checks[kind].get(name)
            if check is None:
                raise web.HTTPNotFound(text="404 page not found\n")
            reason = await _run_check(name, check)
            if reason is not None:
                return web.Response(
                    status=500, text=f"internal server error: {reason}\n", headers=_TEXT_HEADERS
                )
            return web.Response(text="ok", headers=_TEXT_HEADERS)

        return handle

    async def _aggregate(self, request: web.Request, kind: str) -> web.StreamResponse:
        excluded = {
            name.strip()
            for value in request.query.getall("exclude", [])
            for name in value.split(",")
            if name.strip()
        }
        lines: list[str] = []
        failed: list[str] = []
        details: list[str] = []
        for name, check in list(self._checks[kind].items()):
            if name in excluded:
                excluded.discard(name)
                lines.append(f"[+]{name} excluded: ok\n")
                continue
            reason = await _run_check(name, check)
            if reason is None:
                lines.append(f"[+]{name} ok\n")
            else:
                # The reason stays out of the response: this endpoint needs no authorization.
                lines.append(f"[-]{name} failed: reason withheld\n")
                details.append(f"[-]{name} failed: {reason}\n")
                failed.append(name)
        if excluded:
            quoted = ",".join(f'"{n}"' for n in sorted(excluded))
            lines.append(f"warn: some health checks cannot be excluded: no matches for {quoted}\n")
        if failed:
            _log.info("%s check failed: %s\n%s", ",".join(failed), kind, "".join(details).rstrip())
            return web.Response(
                status=500, text="".join(lines) + f"{kind} check failed\n", headers=_TEXT_HEADERS
            )
        if "verbose" not in request.query:
            return web.Response(text="ok", headers=_TEXT_HEADERS)
        return web.Response(text="".join(lines) + f"{kind} check passed\n", headers=_TEXT_HEADERS)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(self._registry))
        response.headers["Content-Type"] = content_type
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response


async def _run_check(name: str, check: HealthCheck) -> str | None:
    """Run one check; an exception from it is a failure, not a crash of the endpoint."""
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        _log.log(v(2), "health check %s raised", name, exc_info=True)
        return f"{type(exc).__name__}: {exc}"
    return None if result is None else str(result)


#: The base name of the pair in ``--cert-dir`` (upstream's pair name for this component).
CERT_DIR_PAIR_NAME: Final = "cloud-controller-manager"


def cert_dir_pair(cert_dir: str) -> tuple[str, str]:
    """``--cert-dir``: the paths of ``cloud-controller-manager.crt`` and ``.key`` there; when
    either is missing a self-signed pair is generated and written (the key mode 0600), as upstream
    does, so that every restart serves the same certificate. Blocking: call it in a thread.
    Raises ConfigError when the folder cannot be written."""
    cert_path = os.path.join(cert_dir, f"{CERT_DIR_PAIR_NAME}.crt")
    key_path = os.path.join(cert_dir, f"{CERT_DIR_PAIR_NAME}.key")
    if os.path.isfile(cert_path) and os.path.isfile(key_path):
        return cert_path, key_path
    cert_pem, key_pem = generate_self_signed_cert()
    try:
        os.makedirs(cert_dir, mode=0o755, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
    except OSError as exc:
        raise ConfigError(f"--cert-dir {cert_dir}: {exc.strerror or exc}") from exc
    _log.info("Generated self-signed cert (%s, %s)", cert_path, key_path)
    return cert_path, key_path


def _load_generated_cert(ctx: ssl.SSLContext) -> None:
    """Load a fresh self-signed pair: ``ssl`` reads only files, so they live in a private
    temporary directory for the duration of the call and are removed at once."""
    cert_pem, key_pem = generate_self_signed_cert()
    with tempfile.TemporaryDirectory(prefix="ccm-serving-") as tmp:  # mode 0700
        cert_path = os.path.join(tmp, "tls.crt")
        key_path = os.path.join(tmp, "tls.key")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)
