"""The HTTPS health/metrics server: upstream healthz output, metrics, the authorizer hook, TLS."""

from __future__ import annotations

import asyncio
import platform
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from ccm import metrics
from ccm.app import serving
from ccm.errors import ConfigError

StartServer = Callable[..., Awaitable[serving.SecureServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[serving.SecureServer] = []

    async def start(**kwargs: Any) -> serving.SecureServer:
        kwargs.setdefault("bind_address", "127.0.0.1")
        kwargs.setdefault("port", 0)
        server = serving.SecureServer(**kwargs)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(
    http: aiohttp.ClientSession, server: serving.SecureServer, path: str, **kwargs: Any
) -> tuple[int, str]:
    kwargs.setdefault("ssl", False)
    async with http.get(f"https://127.0.0.1:{server.port}{path}", **kwargs) as resp:
        return resp.status, await resp.text()


async def test_serves_ok_on_every_health_path_without_checks(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    assert server.port != 0
    for path in ("/healthz", "/livez", "/readyz"):
        assert await get(http, server, path) == (200, "ok")


async def test_failing_check_returns_500_naming_it_and_withholding_the_reason(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    server.add_healthz_check("ping", lambda: None)
    server.add_healthz_check("leaderElection", lambda: "failed election to renew leadership")
    status, body = await get(http, server, "/healthz")
    assert status == 500
    assert body == ("[+]ping ok\n[-]leaderElection failed: reason withheld\nhealthz check failed\n")
    status, body = await get(http, server, "/livez")
    assert status == 500
    assert body.endswith("[-]leaderElection failed: reason withheld\nlivez check failed\n")


async def test_single_check_path_reports_the_reason(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    server.add_healthz_check("ping", lambda: None)
    server.add_healthz_check("leaderElection", lambda: "lease not renewed")
    assert await get(http, server, "/healthz/ping") == (200, "ok")
    assert await get(http, server, "/healthz/leaderElection") == (
        500,
        "internal server error: lease not renewed\n",
    )
    status, _ = await get(http, server, "/healthz/nope")
    assert status == 404


async def test_verbose_lists_passing_checks(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    server.add_healthz_check("ping", lambda: None)
    server.add_healthz_check("cloud-node-controller", lambda: None)
    assert await get(http, server, "/healthz?verbose") == (
        200,
        "[+]ping ok\n[+]cloud-node-controller ok\nhealthz check passed\n",
    )


async def test_exclude_skips_a_failing_check_and_warns_about_unknown_names(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    server.add_healthz_check("bad", lambda: "broken")
    assert await get(http, server, "/healthz?exclude=bad&exclude=other&verbose") == (
        200,
        "[+]bad excluded: ok\n"
        'warn: some health checks cannot be excluded: no matches for "other"\n'
        "healthz check passed\n",
    )


async def test_readyz_check_serves_only_readyz_while_healthz_checks_serve_all(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    server.add_healthz_check("ping", lambda: None)
    server.add_readyz_check("informers-synced", lambda: "not synced yet")
    assert await get(http, server, "/healthz") == (200, "ok")
    assert await get(http, server, "/livez") == (200, "ok")
    status, body = await get(http, server, "/readyz?verbose")
    assert status == 500
    assert "[+]ping ok\n" in body
    assert "[-]informers-synced failed: reason withheld\n" in body
    status, _ = await get(http, server, "/healthz/informers-synced")
    assert status == 404


async def test_async_checks_and_checks_that_raise(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()

    async def healthy() -> str | None:
        await asyncio.sleep(0)
        return None

    def crashes() -> str | None:
        raise RuntimeError("boom")

    server.add_healthz_check("async", healthy)
    assert await get(http, server, "/healthz") == (200, "ok")
    server.add_healthz_check("crashes", crashes)  # checks may be added after start
    status, body = await get(http, server, "/healthz")
    assert (status, body.splitlines()[1]) == (500, "[-]crashes failed: reason withheld")
    assert await get(http, server, "/healthz/crashes") == (
        500,
        "internal server error: RuntimeError: boom\n",
    )


def test_duplicate_or_malformed_check_names_are_rejected() -> None:
    server = serving.SecureServer()
    server.add_healthz_check("ping", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        server.add_healthz_check("ping", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        server.add_readyz_check("ping", lambda: None)
    with pytest.raises(ValueError, match="invalid"):
        server.add_healthz_check("a/b", lambda: None)


async def test_metrics_serves_the_registry_in_prometheus_text_format(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("ccm_test_things", "Things.", registry=registry)
    counter.inc(3)
    server = await start_server(registry=registry)
    async with http.get(f"https://127.0.0.1:{server.port}/metrics", ssl=False) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        assert resp.headers["Cache-Control"] == "no-cache, private"
        body = await resp.text()
    assert "ccm_test_things_total 3.0" in body


async def test_metrics_defaults_to_the_ccm_registry(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    metrics.LEADER_ELECTION_MASTER_STATUS.labels(name="test-serving").set(0)
    server = await start_server()
    status, body = await get(http, server, "/metrics")
    assert status == 200
    assert 'leader_election_master_status{name="test-serving"} 0.0' in body


async def test_metrics_has_the_standard_collectors_build_info_and_provider_metrics(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    from ccm.cloudprovider import METRICS_REGISTRY

    provider_counter = prometheus_client.Counter(
        "mycloud_test_api_calls", "A provider's own metric.", registry=METRICS_REGISTRY
    )
    try:
        provider_counter.inc(2)
        server = await start_server()
        status, body = await get(http, server, "/metrics")
    finally:
        METRICS_REGISTRY.unregister(provider_counter)
    assert status == 200
    samples = {s.name: s for family in text_string_to_metric_families(body) for s in family.samples}
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
        "kubernetes_build_info",
    ):
        assert name in samples, name
    build = samples["kubernetes_build_info"]
    assert build.value == 1
    version = metadata.version("kube-ccm")
    assert build.labels["git_version"] == f"v{version}"
    assert (build.labels["major"], build.labels["minor"]) == tuple(version.split(".")[:2])
    assert build.labels["go_version"] == f"python{platform.python_version()}"
    assert build.labels["compiler"] == "cpython"
    assert build.labels["platform"].startswith("linux/")
    assert samples["mycloud_test_api_calls_total"].value == 2


async def test_authorizer_guards_metrics_but_never_health_paths(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    seen: list[str] = []

    async def authorizer(request: web.Request) -> int | None:
        seen.append(request.path)
        if request.headers.get("Authorization") == "Bearer good":
            return None
        return 401 if "Authorization" not in request.headers else 403

    server = await start_server(authorizer=authorizer)
    server.add_healthz_check("ping", lambda: None)
    assert await get(http, server, "/metrics") == (401, "Unauthorized\n")
    bad = {"Authorization": "Bearer bad"}
    assert await get(http, server, "/metrics", headers=bad) == (403, "Forbidden\n")
    status, _ = await get(http, server, "/metrics", headers={"Authorization": "Bearer good"})
    assert status == 200
    for path in ("/healthz", "/livez", "/readyz", "/healthz/ping", "/readyz?verbose"):
        status, _ = await get(http, server, path)
        assert status == 200, path
    # Unknown paths are authorized before routing, like upstream's filter chain.
    assert (await get(http, server, "/debug/pprof"))[0] == 401
    assert seen == ["/metrics", "/metrics", "/metrics", "/debug/pprof"]


async def test_dot_segments_cannot_smuggle_a_guarded_path_past_the_authorizer(
    start_server: StartServer,
) -> None:
    async def deny(request: web.Request) -> int | None:
        return 403

    server = await start_server(authorizer=deny)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=_insecure_client_context()
    )
    try:
        writer.write(b"GET /healthz/../metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        rest = await reader.read()
    finally:
        writer.close()
    status = int(status_line.split()[1])
    assert status in (403, 404), status_line
    assert b"leader_election" not in rest


async def test_authorizer_failure_is_a_500(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    async def broken(request: web.Request) -> int | None:
        raise RuntimeError("SubjectAccessReview failed")

    server = await start_server(authorizer=broken)
    assert (await get(http, server, "/metrics"))[0] == 500
    assert (await get(http, server, "/healthz"))[0] == 200


async def test_extra_routes_sit_behind_the_same_filters(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    async def configz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async def deny(request: web.Request) -> int | None:
        return 403

    server = serving.SecureServer(bind_address="127.0.0.1", port=0, authorizer=deny)
    server.add_route("GET", "/configz", configz)
    await server.start()
    try:
        assert (await get(http, server, "/configz"))[0] == 403
        with pytest.raises(RuntimeError):
            server.add_route("GET", "/late", configz)
    finally:
        await server.stop()


async def test_generates_a_self_signed_cert_for_localhost(start_server: StartServer) -> None:
    server = await start_server()
    cert = await _peer_cert(server.port, _insecure_client_context())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert str(cn).startswith("localhost@")
    assert cert.issuer == cert.subject


async def test_serves_the_given_cert_and_key(start_server: StartServer, tmp_path: Path) -> None:
    cert_pem, key_pem = serving.generate_self_signed_cert(common_name="ccm-test-serving-cert")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    server = await start_server(cert_file=str(cert_file), key_file=str(key_file))
    # A client that trusts only this certificate (and checks the hostname) connects.
    verifying = ssl.create_default_context(cafile=str(cert_file))
    cert = await _peer_cert(server.port, verifying)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "ccm-test-serving-cert"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{server.port}/healthz", ssl=verifying) as resp,
    ):
        assert resp.status == 200


def _write(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


def _write_pair(tmp_path: Path, common_name: str) -> tuple[str, str]:
    cert_pem, key_pem = serving.generate_self_signed_cert(common_name=common_name)
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    return str(cert_file), str(key_file)


async def _served_cn(server: serving.SecureServer) -> str:
    cert = await _peer_cert(server.port, _insecure_client_context())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def test_a_rotated_cert_is_served_to_new_connections(
    start_server: StartServer, tmp_path: Path
) -> None:
    cert_file, key_file = _write_pair(tmp_path, "first")
    server = await start_server(cert_file=cert_file, key_file=key_file, cert_reload_interval=0.05)
    assert await _served_cn(server) == "first"
    assert server.reload_certificates() is False  # unchanged files: nothing to do
    _write_pair(tmp_path, "second")
    for _ in range(100):
        if await _served_cn(server) == "second":
            break
        await asyncio.sleep(0.05)
    assert await _served_cn(server) == "second"


async def test_a_broken_rotation_keeps_the_current_cert(
    start_server: StartServer, tmp_path: Path
) -> None:
    cert_file, key_file = _write_pair(tmp_path, "good")
    server = await start_server(cert_file=cert_file, key_file=key_file, cert_reload_interval=0)
    # Half-way through a rotation: a new certificate beside the old key.
    new_cert, _ = serving.generate_self_signed_cert(common_name="new")
    _write(cert_file, new_cert)
    assert server.reload_certificates() is False
    assert await _served_cn(server) == "good"


async def test_plain_http_is_not_served(start_server: StartServer) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                await resp.read()


def test_cert_without_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="together"):
        serving.SecureServer(cert_file="/tmp/tls.crt")


async def test_unreadable_cert_is_a_config_error(tmp_path: Path) -> None:
    server = serving.SecureServer(
        bind_address="127.0.0.1",
        port=0,
        cert_file=str(tmp_path / "missing.crt"),
        key_file=str(tmp_path / "missing.key"),
    )
    with pytest.raises(ConfigError, match="unable to load serving certificates"):
        await server.start()


async def test_stop_closes_the_port(start_server: StartServer) -> None:
    server = await start_server()
    port = server.port
    await server.stop()
    await server.stop()  # idempotent
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def _insecure_client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _peer_cert(port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


def test_the_daemon_imports_cryptography_only_to_generate_a_certificate() -> None:
    """Start-up: ``cryptography`` (~40 ms of imports) loads when a self-signed certificate is
    generated, not when the daemon's modules are imported (a given certificate never needs it)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import ccm.cli\n"
        "print('cryptography' in sys.modules)\n"
        "from ccm.app import serving\n"
        "cert, key = serving.generate_self_signed_cert()\n"
        "print('cryptography' in sys.modules, cert.startswith(b'-----BEGIN CERTIFICATE'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "True", "True"]
