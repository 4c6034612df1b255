"""The lean import of kubernetes_asyncio: few modules for ccm, the whole library on demand.

Each case runs in a fresh interpreter: the point is what gets imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _run(code: str, tmp_path: Path) -> dict[str, object]:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_ccm_loads_a_kubeconfig_without_the_generated_api(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    result = _run(
        f"""
        import asyncio, json, sys
        from ccm.kube import leanimport
        Configuration, rest, load_kube_config, _ = leanimport.load()
        cfg = Configuration()
        asyncio.run(load_kube_config(config_file={str(tmp_path / "kubeconfig")!r},
                                     client_configuration=cfg, persist_config=False))
        mods = [m for m in sys.modules if m.startswith("kubernetes_asyncio")]
        print(json.dumps({{"host": cfg.host, "auth": cfg.api_key.get("BearerToken"),
                          "modules": len(mods),
                          "models": "kubernetes_asyncio.client.models" in sys.modules}}))
        """,
        tmp_path,
    )
    assert result["host"] == "https://127.0.0.1:6443"
    assert result["auth"] == "Bearer secret-token"
    assert result["models"] is False
    assert isinstance(result["modules"], int) and result["modules"] < 40


@pytest.mark.parametrize(
    "access",
    [
        pytest.param("import kubernetes_asyncio.client as c; c.CoreV1Api", id="client-api"),
        pytest.param("from kubernetes_asyncio.client import V1Node; V1Node", id="from-import"),
        pytest.param("import kubernetes_asyncio; kubernetes_asyncio.watch.Watch", id="top-level"),
        pytest.param("import kubernetes_asyncio; kubernetes_asyncio.__version__", id="version"),
    ],
)
def test_the_whole_library_is_still_there_on_demand(access: str, tmp_path: Path) -> None:
    result = _run(
        f"""
        import json, sys
        from ccm.kube import leanimport
        leanimport.load()
        {access}
        print(json.dumps({{"models": "kubernetes_asyncio.client.models" in sys.modules}}))
        """,
        tmp_path,
    )
    assert result["models"] is True or "version" in access


def test_new_client_from_config_builds_a_real_api_client(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    result = _run(
        f"""
        import asyncio, json
        from ccm.kube import leanimport
        leanimport.load()
        from kubernetes_asyncio import config
        from kubernetes_asyncio.client import api_client
        async def main():
            c = await config.new_client_from_config(config_file={str(tmp_path / "kubeconfig")!r})
            ok = isinstance(c, api_client.ApiClient)
            await c.close()
            return ok
        print(json.dumps({{"real": asyncio.run(main())}}))
        """,
        tmp_path,
    )
    assert result["real"] is True


def test_an_already_imported_library_is_used_as_it_is(tmp_path: Path) -> None:
    result = _run(
        """
        import json, sys
        import kubernetes_asyncio
        from ccm.kube import leanimport
        Configuration, *_ = leanimport.load()
        from kubernetes_asyncio.client import Configuration as Real
        print(json.dumps({"same": Configuration is Real,
                          "lazy": type(sys.modules["kubernetes_asyncio"]).__name__}))
        """,
        tmp_path,
    )
    assert result == {"same": True, "lazy": "module"}
