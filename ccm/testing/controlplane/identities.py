"""The control plane's identities: its certificates and kubeconfigs, client users, ServiceAccount
tokens, and admin requests with ccm's own client (:class:`ccm.kube.blocking.BlockingClient`)."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ccm import certs, errors
from ccm.kube.blocking import BlockingClient
from ccm.testing.controlplane.paths import (
    SERVICE_CLUSTER_IP_RANGE,
    ApiserverUnreachableError,
    ControlPlaneError,
    ControlPlanePaths,
)
from ccm.testing.controlplane.processes import _safe_file_name


class ControlPlaneIdentities(ControlPlanePaths):
    """Certificates, users, tokens and admin requests of a :class:`ControlPlane` (its base)."""

    _client_ca: certs.KeyPair | None
    _admin_client: BlockingClient | None
    _admin_client_lock: threading.Lock

    # ---- identities ----------------------------------------------------------------------------

    def add_user(self, name: str, groups: Sequence[str] = ()) -> Path:
        """Issue a client cert ``CN=name, O=groups…`` from the client CA; return its kubeconfig.

        The user is authenticated but has no RBAC bindings beyond what its groups grant
        (``system:authenticated`` only, unless e.g. ``system:masters`` is given). Useful to test a
        ClusterRole, or a Node identity (``system:node:<name>`` in group ``system:nodes``). The
        kubeconfig embeds its data; the cert and key also sit beside it as ``<name>.crt/.key``.
        """
        layout = self._require()
        if self._client_ca is None:
            raise ControlPlaneError("the control plane is not started")
        pair = certs.issue(self._client_ca, name, usage="client", organizations=groups)
        folder = layout.data_dir / "users"
        folder.mkdir(exist_ok=True)
        base = _safe_file_name(name)
        pair.write(folder / f"{base}.crt", folder / f"{base}.key")
        path = folder / f"{base}.kubeconfig"
        self._write_kubeconfig(path, name, pair)
        return path

    def metrics_reader_token(self, name: str = "ccm-metrics-reader") -> str:
        """A token of ServiceAccount ``kube-system/<name>``, bound (created if missing) to a
        ClusterRole that may ``get`` the non-resource URL ``/metrics`` — what a Prometheus scraper
        of ccm needs under delegated authorization."""
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        for path, body in (
            ("/api/v1/namespaces/kube-system/serviceaccounts", {"metadata": {"name": name}}),
            (
                f"{rbac}/clusterroles",
                {
                    "metadata": {"name": name},
                    "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
                },
            ),
            (
                f"{rbac}/clusterrolebindings",
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": name,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}
                    ],
                },
            ),
        ):
            status, raw = self.request("POST", path, body)
            if status not in (201, 409):
                raise ControlPlaneError(f"POST {path}: HTTP {status}: {raw[:300]!r}")
        return self.service_account_token("kube-system", name)

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        audiences: Sequence[str] = (),
        expiration_seconds: int = 3600,
        create: bool = True,
    ) -> str:
        """Return a bound token for ServiceAccount ``namespace/name``, obtained by TokenRequest.

        With ``create`` (default) the namespace and the ServiceAccount are created when missing.
        ``audiences`` defaults to the apiserver's (the issuer URL); ``expiration_seconds`` >= 600.
        """
        quoted_ns, quoted_name = urllib.parse.quote(namespace), urllib.parse.quote(name)
        if create:
            for path, body in (
                ("/api/v1/namespaces", {"metadata": {"name": namespace}}),
                (f"/api/v1/namespaces/{quoted_ns}/serviceaccounts", {"metadata": {"name": name}}),
            ):
                status, raw = self.request("POST", path, body)
                if status not in (201, 409):
                    raise ControlPlaneError(f"POST {path} answered {status}: {raw[:500]!r}")
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        path = f"/api/v1/namespaces/{quoted_ns}/serviceaccounts/{quoted_name}/token"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        status, raw = self.request("POST", path, request)
        if status != 201:
            raise ControlPlaneError(
                f"TokenRequest for {namespace}/{name} answered {status}: {raw[:500]!r}"
            )
        token: str = json.loads(raw)["status"]["token"]
        return token

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """Send one request as admin; return (HTTP status, body bytes), whatever the status.

        ``body``, when given, is sent as JSON. Meant for set-up and probes, not for code under
        test. Raises :class:`ApiserverUnreachableError` (an :class:`OSError`) when no answer came:
        the apiserver is not up yet, is stopped, or did not answer within ``timeout`` seconds.
        """
        try:
            return self._admin().request(method, path, body, timeout=timeout)
        except errors.KubeError as exc:
            raise ApiserverUnreachableError(f"{method} {path}: {exc}") from exc

    # ---- internals -----------------------------------------------------------------------------
    def _admin(self) -> BlockingClient:
        """The admin's client, made on first use after each start (on the kubeconfig it wrote)."""
        self._require()
        with self._admin_client_lock:
            if self._admin_client is None:
                self._admin_client = BlockingClient(
                    str(self.kubeconfig_path), user_agent="ccm-controlplane", request_timeout=10.0
                )
            return self._admin_client

    def _close_admin(self) -> None:
        # Without the lock: this also runs in the SIGTERM handler, maybe while _admin holds it.
        client, self._admin_client = self._admin_client, None
        if client is not None:
            client.close()

    def _write_certificates(self) -> None:
        folder = self._require().certs
        folder.mkdir(mode=0o700)
        serving_ca = certs.new_ca("ccm-test-serving-ca")
        serving_ca.write(folder / "serving-ca.crt", folder / "serving-ca.key")
        serving = certs.issue(
            serving_ca,
            "kube-apiserver",
            usage="server",
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=[
                "127.0.0.1",
                next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts()),
            ],
        )
        serving.write(folder / "serving.crt", folder / "serving.key")
        self._client_ca = certs.new_ca("ccm-test-client-ca")
        self._client_ca.write(folder / "client-ca.crt", folder / "client-ca.key")
        admin = certs.issue(
            self._client_ca, "admin", usage="client", organizations=["system:masters"]
        )
        admin.write(self.admin_cert_path, self.admin_key_path)
        sa_key = certs.new_key()
        certs.write_key(self.service_account_key_path, sa_key)
        (folder / "sa.pub").write_bytes(certs.public_key_to_pem(sa_key))
        self._write_kubeconfig(self.kubeconfig_path, "admin", admin)

    def _write_kubeconfig(self, path: Path, user: str, pair: certs.KeyPair) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ccm-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64(self.ca_cert_path.read_bytes()),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(pair.cert_pem),
                        "client-key-data": b64(pair.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "ccm-test", "context": {"cluster": "ccm-test", "user": user}}],
            "current-context": "ccm-test",
            "preferences": {},
        }
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
