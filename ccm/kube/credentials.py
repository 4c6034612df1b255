"""``--use-service-account-credentials``: one ServiceAccount identity per controller.

Ports the behaviour of upstream's dynamic client builder (controller-manager ``pkg/clientbuilder``):
for each controller client name (``node-controller``, ``service-controller``, ``route-controller``)
ensure a ServiceAccount of that name exists in ``kube-system``, obtain a bound token for it with
TokenRequest, and talk to the apiserver with that token alone, so the apiserver's audit log and RBAC
see ``system:serviceaccount:kube-system:<name>``. Tokens are refreshed at 80% of their lifetime. The
daemon's own identity needs ``get``/``create`` on serviceaccounts and ``create`` on
serviceaccounts/token in kube-system.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from ccm import clock
from ccm.errors import KubeError, NotFoundError
from ccm.kube import client as kclient

__all__ = ["ServiceAccountClients"]

_log = logging.getLogger("ccm.kube.credentials")


@dataclasses.dataclass(slots=True)
class _Entry:
    name: str
    transport: kclient.TokenTransport
    client: kclient.KubeClient
    refresh_at: float


class ServiceAccountClients:
    """Builds and refreshes per-controller clients authenticated as ServiceAccounts."""

    def __init__(
        self,
        root: kclient.KubeClient,
        *,
        namespace: str = "kube-system",
        expiration_seconds: int = 3600,
        retry_delay: float = 10.0,
    ) -> None:
        self._root = root
        self._namespace = namespace
        self._expiration = max(600, expiration_seconds)
        self._retry_delay = retry_delay
        self._entries: dict[str, _Entry] = {}
        self._changed = asyncio.Event()

    async def client(self, name: str) -> kclient.KubeClient:
        """The client for controller client name ``name`` (created on first use)."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry.client
        await self._ensure_service_account(name)
        token, lifetime = await self._request_token(name)
        transport = self._root.transport.with_bearer_token(token)
        client = kclient.KubeClient(
            transport,
            user_agent=f"{self._root.base_user_agent}/{name}",
            request_timeout=self._root.request_timeout,
            limiter=self._root.limiter,
        )
        self._entries[name] = _Entry(name, transport, client, clock.monotonic() + 0.8 * lifetime)
        self._changed.set()
        _log.info("Using ServiceAccount %s/%s credentials for %s", self._namespace, name, name)
        return client

    async def _ensure_service_account(self, name: str) -> None:
        try:
            await self._root.get(kclient.SERVICEACCOUNTS, name, namespace=self._namespace)
            return
        except NotFoundError:
            pass
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": self._namespace},
        }
        try:
            await self._root.create(kclient.SERVICEACCOUNTS, body, namespace=self._namespace)
        except KubeError as exc:
            if getattr(exc, "reason", "") != "AlreadyExists":
                raise

    async def _request_token(self, name: str) -> tuple[str, float]:
        review = await self._root.create(
            kclient.SERVICEACCOUNTS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": self._expiration},
            },
            namespace=self._namespace,
            subresource="token",
            name=name,
        )
        status = review.get("status") or {}
        token = str(status.get("token") or "")
        if not token:
            raise KubeError(f"TokenRequest for {self._namespace}/{name} returned no token")
        lifetime = float((review.get("spec") or {}).get("expirationSeconds") or self._expiration)
        return token, lifetime

    async def run(self) -> None:
        """Refresh each token at 80% of its lifetime until cancelled."""
        while True:
            now = clock.monotonic()
            due = [e for e in self._entries.values() if e.refresh_at <= now]
            for entry in due:
                try:
                    token, lifetime = await self._request_token(entry.name)
                except KubeError as exc:
                    _log.warning("refreshing the token of %s failed: %s", entry.name, exc)
                    entry.refresh_at = clock.monotonic() + self._retry_delay
                    continue
                entry.transport.set_token(token)
                entry.refresh_at = clock.monotonic() + 0.8 * lifetime
            waits = [e.refresh_at - clock.monotonic() for e in self._entries.values()]
            self._changed.clear()
            timeout = max(0.0, min(waits)) if waits else None
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def aclose(self) -> None:
        for entry in self._entries.values():
            await entry.transport.aclose()
        self._entries.clear()
