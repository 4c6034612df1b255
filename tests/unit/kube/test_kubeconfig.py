"""ccm's own kubeconfig and in-cluster loader, the credentials it feeds, and TLS end to end."""

from __future__ import annotations

import asyncio
import base64
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ccm import certs, errors
from ccm.kube import auth, kubeconfig, tls
from ccm.kube import client as kclient


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(
    path: Path,
    *,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    current: str | None = "ctx",
    context: dict[str, Any] | None = None,
) -> Path:
    cfg: dict[str, Any] = {
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://k.invalid:6443/"}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "ctx", "context": context or {"cluster": "c", "user": "u"}}],
    }
    if current:
        cfg["current-context"] = current
    path.write_bytes(orjson.dumps(cfg))
    return path


def load(path: Path, **kwargs: Any) -> kubeconfig.Connection:
    return kubeconfig.load_kubeconfig([str(path)], str(path), **kwargs)


def error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(errors.ConfigError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"kubeconfig {path}: ")
    return message.removeprefix(f"kubeconfig {path}: ")


# -- fields --------------------------------------------------------------------------------------


def test_server_tls_fields_and_token(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("CA")
    cluster = {
        "server": "https://k.invalid:6443/",
        "certificate-authority": "ca.crt",  # relative to the kubeconfig's folder
        "insecure-skip-tls-verify": True,
        "tls-server-name": "kubernetes",
        "proxy-url": "http://proxy.invalid:3128",
    }
    conn = load(write(tmp_path / "kc", cluster=cluster, user={"token": "tok"}))
    assert conn.server == "https://k.invalid:6443"
    assert conn.ca_file == str(tmp_path / "ca.crt")
    assert conn.ca_data is None
    assert conn.insecure is True
    assert conn.tls_server_name == "kubernetes"
    assert conn.proxy_url == "http://proxy.invalid:3128"
    assert conn.token == "tok"
    assert conn.plugin is None
    assert conn.where == f"kubeconfig {tmp_path / 'kc'}"


def test_data_fields_win_over_files_and_are_decoded(tmp_path: Path) -> None:
    cluster = {
        "server": "https://k",
        "certificate-authority": "/nonexistent",
        "certificate-authority-data": b64(b"CA-PEM"),
    }
    user = {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")}
    conn = load(write(tmp_path / "kc", cluster=cluster, user=user))
    assert (conn.ca_file, conn.ca_data) == (None, b"CA-PEM")
    assert (conn.cert_data, conn.key_data) == (b"CERT", b"KEY")


def test_client_certificate_files_and_token_file(tmp_path: Path) -> None:
    for name in ("c.crt", "c.key", "token"):
        (tmp_path / name).write_text(name)
    user = {"client-certificate": "c.crt", "client-key": "c.key", "tokenFile": "token"}
    conn = load(write(tmp_path / "kc", user=user))
    assert conn.cert_file == str(tmp_path / "c.crt")
    assert conn.key_file == str(tmp_path / "c.key")
    assert conn.token_file == str(tmp_path / "token")


def test_basic_auth_and_plugins_are_recognised(tmp_path: Path) -> None:
    basic = load(write(tmp_path / "a", user={"username": "me", "password": "pw"}))
    assert (basic.username, basic.password) == ("me", "pw")
    exec_user = {"exec": {"command": "x", "apiVersion": "client.authentication.k8s.io/v1"}}
    assert load(write(tmp_path / "b", user=exec_user)).plugin == "exec"
    provider = {"auth-provider": {"name": "oidc"}}
    assert load(write(tmp_path / "c", user=provider)).plugin == "auth-provider"


def test_context_flag_wins_over_current_context_and_master_over_server(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    cfg = {
        "clusters": [
            {"name": "a", "cluster": {"server": "https://a"}},
            {"name": "b", "cluster": {"server": "https://b"}},
        ],
        "contexts": [
            {"name": "one", "context": {"cluster": "a"}},
            {"name": "two", "context": {"cluster": "b"}},
        ],
        "current-context": "one",
    }
    path.write_bytes(orjson.dumps(cfg))
    assert load(path).server == "https://a"
    assert load(path, context="two").server == "https://b"
    assert load(path, context="two").context == "two"
    assert load(path, master="https://m/").server == "https://m"


def test_merged_files_first_definition_and_first_current_context_win(tmp_path: Path) -> None:
    first = write(tmp_path / "1", cluster={"server": "https://first"}, current="ctx")
    second = tmp_path / "2"
    second.write_bytes(
        orjson.dumps(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://second"}},
                    {"name": "d", "cluster": {"server": "https://d"}},
                ],
                "contexts": [{"name": "other", "context": {"cluster": "d"}}],
                "current-context": "other",
            }
        )
    )
    conn = kubeconfig.load_kubeconfig([str(first), str(second)], "both")
    assert conn.server == "https://first"
    assert conn.files == (str(first), str(second))
    other = kubeconfig.load_kubeconfig([str(first), str(second)], "both", context="other")
    assert other.server == "https://d"


# -- errors name the field -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "user", "expected"),
    [
        pytest.param(
            {"server": "https://k", "certificate-authority": "nope.crt"},
            {},
            'cluster "c": certificate-authority: file not found: ',
            id="ca file",
        ),
        pytest.param(
            {"server": "https://k", "certificate-authority-data": "%%%"},
            {},
            'cluster "c": certificate-authority-data: not valid base64',
            id="ca data",
        ),
        pytest.param(
            {"server": "https://k", "insecure-skip-tls-verify": "yes"},
            {},
            "cluster \"c\": insecure-skip-tls-verify: must be true or false, got 'yes'",
            id="insecure flag",
        ),
        pytest.param(
            {"server": 6443},
            {},
            'cluster "c": server: must be a string, got int',
            id="server type",
        ),
        pytest.param(
            None,
            {"client-certificate": "nope.crt", "client-key": "nope.key"},
            'user "u": client-certificate: file not found: ',
            id="cert file",
        ),
        pytest.param(
            None,
            {"client-certificate-data": b64(b"C")},
            'user "u": client-key: missing (client-certificate and client-key go together)',
            id="key missing",
        ),
        pytest.param(
            None,
            {"client-key-data": b64(b"K")},
            'user "u": client-certificate: missing (client-certificate and client-key go',
            id="cert missing",
        ),
        pytest.param(
            None,
            {"client-key-data": "not base64!"},
            'user "u": client-key-data: not valid base64',
            id="key data",
        ),
        pytest.param(
            None, {"tokenFile": "nope"}, 'user "u": tokenFile: file not found: ', id="token file"
        ),
        pytest.param(None, {"token": ["x"]}, 'user "u": token: must be a string', id="token"),
        pytest.param(None, {"username": "me"}, 'user "u": password: missing', id="password"),
        pytest.param(None, {"password": "pw"}, 'user "u": username: missing', id="username"),
    ],
)
def test_a_bad_field_is_named_in_a_one_line_error(
    tmp_path: Path, cluster: dict[str, Any] | None, user: dict[str, Any] | None, expected: str
) -> None:
    assert error(write(tmp_path / "kc", cluster=cluster, user=user)).startswith(expected)


def test_structural_errors(tmp_path: Path) -> None:
    assert error(write(tmp_path / "a", current=None)).startswith("no current-context set")
    assert error(write(tmp_path / "b"), context="x") == 'context "x" not found'
    path = write(tmp_path / "c", context={"user": "u"})
    assert error(path) == 'context "ctx" names no cluster'
    path = write(tmp_path / "d", context={"cluster": "zz"})
    assert error(path) == 'cluster "zz" (of context "ctx") not found'
    path = write(tmp_path / "e", context={"cluster": "c", "user": "zz"})
    assert error(path) == 'user "zz" (of context "ctx") not found'
    path = write(tmp_path / "f", cluster={"insecure-skip-tls-verify": True})
    assert error(path) == 'cluster "c" has no server'
    assert load(path, master="https://m").server == "https://m"  # --master supplies it
    bad = tmp_path / "g"
    bad.write_text("clusters: [{name: c, cluster: [1]}]\n")
    assert error(bad) == "cluster \"c\": 'cluster' must be a mapping"
    bad.write_text("users: [{user: {}}]\n")
    assert error(bad) == "every entry of 'users' needs a name"


# -- in-cluster ----------------------------------------------------------------------------------

ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_in_cluster_configuration(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("CA")
    conn = kubeconfig.in_cluster(
        ENV, token_path=str(tmp_path / "token"), ca_path=str(tmp_path / "ca.crt")
    )
    assert conn.server == "https://10.0.0.1:443"
    assert (conn.token_file, conn.ca_file) == (str(tmp_path / "token"), str(tmp_path / "ca.crt"))
    v6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    conn = kubeconfig.in_cluster(
        v6, token_path=str(tmp_path / "token"), ca_path=str(tmp_path / "ca.crt")
    )
    assert conn.server == "https://[fd00::1]:6443"


@pytest.mark.parametrize(
    ("env", "files", "expected"),
    [
        pytest.param({}, {}, "KUBERNETES_SERVICE_HOST is not set", id="no host"),
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "h"}, {}, "KUBERNETES_SERVICE_PORT is not set", id="port"
        ),
        pytest.param(ENV, {}, "service account token file {token}: not found", id="no token"),
        pytest.param(
            ENV, {"token": " \n"}, "service account token file {token}: empty", id="empty token"
        ),
        pytest.param(ENV, {"token": "t"}, "service account CA file {ca}: not found", id="no ca"),
    ],
)
def test_in_cluster_errors(
    tmp_path: Path, env: dict[str, str], files: dict[str, str], expected: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    token, ca = tmp_path / "token", tmp_path / "ca"
    with pytest.raises(errors.ConfigError) as info:
        kubeconfig.in_cluster(env, token_path=str(token), ca_path=str(ca))
    assert str(info.value) == "in-cluster configuration: " + expected.format(token=token, ca=ca)


# -- credentials ---------------------------------------------------------------------------------


async def test_credentials_for_each_kind_of_user(tmp_path: Path) -> None:
    def conn(**fields: Any) -> kubeconfig.Connection:
        return kubeconfig.Connection(where="w", server="https://k", **fields)

    assert await (await auth.credentials_for(conn())).headers() == {}
    static = await auth.credentials_for(conn(token="t"))
    assert await static.headers() == {"Authorization": "Bearer t"}
    basic = await auth.credentials_for(conn(username="me", password="pw"))
    assert await basic.headers() == {"Authorization": "Basic " + b64(b"me:pw")}
    (tmp_path / "tf").write_text("from-file\n")
    both = await auth.credentials_for(conn(token="t", token_file=str(tmp_path / "tf")))
    assert await both.headers() == {"Authorization": "Bearer from-file"}  # as client-go


@pytest.mark.looptime
async def test_a_token_file_is_re_read_a_minute_later_and_after_a_401(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    creds = auth.TokenFile(str(path))
    assert await creds.headers() == {"Authorization": "Bearer one"}
    path.write_text("two")  # the kubelet rotated it
    assert await creds.headers() == {"Authorization": "Bearer one"}  # cached
    await asyncio.sleep(auth.TOKEN_FILE_REFRESH_SECONDS)
    assert await creds.headers() == {"Authorization": "Bearer two"}
    path.write_text("three")
    assert creds.invalidate() is False  # no resend, but...
    assert await creds.headers() == {"Authorization": "Bearer three"}  # ...re-read at once
    path.unlink()
    assert creds.invalidate() is False
    assert await creds.headers() == {"Authorization": "Bearer three"}  # last good token kept


# -- end to end: TLS with data fields, client certificate, token file --------------------------


@pytest.fixture
def pki() -> dict[str, certs.KeyPair]:
    ca = certs.new_ca("test-ca")
    return {
        "ca": ca,
        "server": certs.issue(ca, "apiserver", usage="server", ip_addresses=["127.0.0.1"]),
        "client": certs.issue(ca, "admin", usage="client"),
    }


@pytest.fixture
async def tls_server(pki: dict[str, certs.KeyPair], tmp_path: Path) -> AsyncIterator[TestServer]:
    pki["server"].write(tmp_path / "s.crt", tmp_path / "s.key")
    (tmp_path / "ca.crt").write_bytes(pki["ca"].cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    context.verify_mode = ssl.CERT_REQUIRED

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in (peer or {}).get("subject", ()))
        return web.json_response(
            {"cn": subject.get("commonName"), "auth": request.headers.get("Authorization")}
        )

    app = web.Application()
    app.router.add_get("/api/v1/nodes/whoami", whoami)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    try:
        yield server
    finally:
        await server.close()


async def test_tls_with_data_fields_client_certificate_and_token_file(
    tls_server: TestServer, pki: dict[str, certs.KeyPair], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("rotating")
    cluster = {
        "server": f"https://127.0.0.1:{tls_server.port}",
        "certificate-authority-data": b64(pki["ca"].cert_pem),
    }
    user = {
        "client-certificate-data": b64(pki["client"].cert_pem),
        "client-key-data": b64(pki["client"].key_pem),
        "tokenFile": "token",
    }
    path = write(tmp_path / "kc", cluster=cluster, user=user)
    async with await kclient.KubeClient.connect(kubeconfig=str(path)) as kube:
        answer = await kube.get(kclient.NODES, "whoami")
    assert answer == {"cn": "admin", "auth": "Bearer rotating"}


async def test_an_untrusted_server_is_refused_unless_insecure(
    tls_server: TestServer, tmp_path: Path
) -> None:
    other_ca = certs.new_ca("other")
    cluster: dict[str, Any] = {
        "server": f"https://127.0.0.1:{tls_server.port}",
        "certificate-authority-data": b64(other_ca.cert_pem),
    }
    path = write(tmp_path / "kc", cluster=cluster, user={"token": "t"})
    async with await kclient.KubeClient.connect(kubeconfig=str(path)) as kube:
        with pytest.raises(errors.KubeError, match="certificate verify failed"):
            await kube.get(kclient.NODES, "whoami")


def test_a_certificate_ssl_refuses_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    conn = kubeconfig.Connection(
        where="kubeconfig kc", server="https://k", cert_data=b"junk", key_data=b"junk"
    )
    with pytest.raises(
        errors.ConfigError, match=r"^kubeconfig kc: client-certificate/client-key: "
    ):
        tls.ssl_context(conn)
    conn = kubeconfig.Connection(where="kubeconfig kc", server="https://k", ca_data=b"junk")
    with pytest.raises(errors.ConfigError, match=r"^kubeconfig kc: certificate-authority-data: "):
        tls.ssl_context(conn)


def test_a_plain_kubeconfig_never_imports_kubernetes_asyncio(tmp_path: Path) -> None:
    """The memory win: kubernetes_asyncio's package import loads ~37 MiB of generated models."""
    import subprocess

    path = write(tmp_path / "kc", user={"token": "t"})
    code = (
        "import asyncio, sys\n"
        "from ccm.kube import client\n"
        "async def main():\n"
        f"    c = await client.KubeClient.connect(kubeconfig={str(path)!r})\n"
        "    await c.aclose()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
