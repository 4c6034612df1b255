"""Upstream's serving flags ccm implements: --tls-min-version and
--authorization-always-allow-paths, from the command line to the HTTPS server's behaviour."""

from __future__ import annotations

import pathlib
import ssl
from collections.abc import AsyncIterator
from http import HTTPStatus

import aiohttp
import pytest
from aiohttp import web

from ccm.app import options, serving
from ccm.errors import ConfigError


@pytest.fixture
async def servers() -> AsyncIterator[list[serving.SecureServer]]:
    started: list[serving.SecureServer] = []
    yield started
    for server in started:
        await server.stop()


async def _start(
    started: list[serving.SecureServer], opts: options.Options, **kwargs: object
) -> serving.SecureServer:
    # The manager builds its server from the same two options.
    server = serving.SecureServer(
        bind_address="127.0.0.1",
        port=0,
        always_allow_paths=opts.authorization_always_allow_paths,
        tls_min_version=opts.tls_min_version or None,
        **kwargs,  # type: ignore[arg-type]
    )
    started.append(server)
    await server.start()
    return server


def _client(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


async def _status(port: int, path: str, ctx: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://127.0.0.1:{port}{path}", ssl=ctx) as resp,
    ):
        return resp.status


async def test_tls_min_version_13_refuses_a_tls12_client(
    servers: list[serving.SecureServer],
) -> None:
    opts = options.parse_args(["--cloud-provider=fake", "--tls-min-version=VersionTLS13"])
    assert opts.ignored_upstream_flags == []
    server = await _start(servers, opts)
    assert await _status(server.port, "/healthz", _client()) == 200
    with pytest.raises(aiohttp.ClientError):
        await _status(server.port, "/healthz", _client(ssl.TLSVersion.TLSv1_2))


async def test_default_serves_tls12(servers: list[serving.SecureServer]) -> None:
    server = await _start(servers, options.parse_args(["--cloud-provider=fake"]))
    assert await _status(server.port, "/healthz", _client(ssl.TLSVersion.TLSv1_2)) == 200


def test_tls_min_version_outside_the_served_ones_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tls-min-version"):
        options.parse_args(["--cloud-provider=fake", "--tls-min-version=VersionTLS10"])
    with pytest.raises(ConfigError, match="tls-min-version"):
        serving.SecureServer(tls_min_version="VersionTLS11")


async def test_always_allow_paths_come_from_the_flag(servers: list[serving.SecureServer]) -> None:
    async def deny(request: web.Request) -> int:
        return int(HTTPStatus.FORBIDDEN)

    default = options.parse_args(["--cloud-provider=fake"])
    assert default.authorization_always_allow_paths == list(serving.DEFAULT_ALWAYS_ALLOW_PATHS)
    opts = options.parse_args(
        ["--cloud-provider=fake", "--authorization-always-allow-paths=/healthz,/metrics"]
    )
    assert opts.ignored_upstream_flags == []
    server = await _start(servers, opts, authorizer=deny)
    assert await _status(server.port, "/metrics", _client()) == 200
    assert await _status(server.port, "/healthz", _client()) == 200
    assert await _status(server.port, "/readyz", _client()) == 403


def test_cert_dir_generates_the_pair_once_and_reuses_it(tmp_path: pathlib.Path) -> None:
    opts = options.parse_args(["--cloud-provider=fake", f"--cert-dir={tmp_path}/certs"])
    assert opts.ignored_upstream_flags == []
    cert, key = serving.cert_dir_pair(opts.cert_dir)
    assert (cert, key) == (
        f"{tmp_path}/certs/cloud-controller-manager.crt",
        f"{tmp_path}/certs/cloud-controller-manager.key",
    )
    assert pathlib.Path(key).stat().st_mode & 0o777 == 0o600
    first = pathlib.Path(cert).read_bytes()
    assert serving.cert_dir_pair(opts.cert_dir) == (cert, key)
    assert pathlib.Path(cert).read_bytes() == first  # kept across restarts
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)


def test_an_unwritable_cert_dir_is_a_config_error(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--cert-dir"):
        serving.cert_dir_pair(str(blocker / "certs"))
