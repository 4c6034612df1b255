"""A fake Azure Resource Manager on 127.0.0.1 over TLS, for the provider's tests and its
conformance driver.

It keeps state (virtual machines, network interfaces, public IP addresses, route tables) as the
JSON bodies ARM would return, built by the tests from the SDK's own model classes
(:meth:`FakeArm.put_resource`). It answers the REST paths the SDK sends (any ``api-version``; each
one seen is recorded in :attr:`FakeArm.api_versions`) with ARM's behaviour:

- ``GET`` of a missing resource: 404 with ``{"error": {"code": "ResourceNotFound", ...}}``;
- ``$expand=instanceView`` adds the VM's instance view (power state, fault domain);
- ``PUT`` with ``If-Match`` that is not the resource's etag: 412 ``PreconditionFailed``; every
  write gives the resource a new etag;
- ``DELETE`` and the VM actions (``deallocate``, ``powerOff``, ``start``) answer 202 with an
  ``Azure-AsyncOperation`` URL that reports ``InProgress`` once, then ``Succeeded``;
- faults injected with :meth:`FakeArm.inject` (429 with ``Retry-After``, 5xx, 412) are served
  first, to the next matching requests or to a share of them (``every``).

It also serves a token endpoint (``/<tenant>/oauth2/v2.0/token``) for ``ClientSecretCredential``
and the cloud metadata (``/metadata/endpoints``) that points the provider at it, so the real
bearer-token policy of the SDK stays in the loop: ARM paths refuse a request without the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ccm import certs

__all__ = ["FakeArm", "Fault", "serve_in_thread"]

_ACTION = re.compile(
    r"^(?P<id>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"virtualMachines/[^/]+)/(?P<action>deallocate|powerOff|start)$",
    re.IGNORECASE,
)
# A scale set's NICs or public IPs, held under its instances.
_VMSS_LIST = re.compile(
    r"^(?P<ss>/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"virtualMachineScaleSets/[^/]+)/(?P<kind>networkInterfaces|publicIPAddresses)$",
    re.IGNORECASE,
)
# A collection: .../providers/<namespace>/<type>[/<name>/<child type>]
_COLLECTION = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/[^/]+(/[^/]+/[^/]+)?$",
    re.IGNORECASE,
)


@dataclass
class Fault:
    """An answer served instead of the real one to the next ``times`` matching requests (with
    ``every``: to every ``every``-th one, a share of the calls)."""

    method: str
    path_contains: str
    status: int
    times: int = 1
    retry_after: str | None = None
    code: str = ""
    every: int = 1
    seen: int = field(default=0)
    matched: int = field(default=0)


class FakeArm:
    """The fake ARM server; ``async with FakeArm() as arm:`` starts it on a free port."""

    def __init__(self, *, tenant_id: str = "tenant-1", client_id: str = "client-1",
                 client_secret: str = "secret-1") -> None:  # fmt: skip
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token = secrets.token_urlsafe(24)
        self.resources: dict[str, dict[str, Any]] = {}
        self.power: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.api_versions: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.tokens_issued = 0
        self._operations: dict[str, int] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="fake-arm-")
        self.ca_path = Path(self._dir.name) / "ca.pem"
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeArm:
        ca = certs.new_ca("fake-arm-ca")
        leaf = certs.issue(ca, "127.0.0.1", usage="server", ip_addresses=["127.0.0.1"])
        self.ca_path.write_bytes(ca.cert_pem)
        cert, key = Path(self._dir.name) / "tls.crt", Path(self._dir.name) / "tls.key"
        leaf.write(cert, key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._dir.cleanup()

    # -- the tests' side -----------------------------------------------------------------------

    def put_resource(self, resource_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``body`` (an SDK model's ``as_dict()`` / ``serialize()``) under ``resource_id``
        with ARM's read-only fields (id, name, type, etag)."""
        parts = resource_id.strip("/").split("/")
        stored = copy.deepcopy(dict(body))
        stored["id"] = resource_id
        stored["name"] = parts[-1]
        stored["type"] = "/".join([parts[5], *parts[6:-1:2]])
        stored["etag"] = f'W/"{secrets.token_hex(8)}"'
        stored.setdefault("properties", {}).setdefault("provisioningState", "Succeeded")
        self.resources[resource_id.lower()] = stored
        return stored

    def get_resource(self, resource_id: str) -> dict[str, Any] | None:
        return self.resources.get(resource_id.lower())

    def delete_resource(self, resource_id: str) -> None:
        self.resources.pop(resource_id.lower(), None)
        self.power.pop(resource_id.lower(), None)

    def set_power(self, vm_id: str, state: str) -> None:
        """The VM's power state: ``running``, ``stopped``, ``deallocated``, ``deallocating``."""
        self.power[vm_id.lower()] = state

    def inject(
        self,
        method: str,
        path_contains: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        code: str = "",
        every: int = 1,
    ) -> Fault:
        fault = Fault(
            method.upper(), path_contains.lower(), status, times, retry_after, code, every
        )
        self.faults.append(fault)
        return fault

    # -- the HTTP side -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/metadata/endpoints":
            return web.json_response(
                {
                    "resourceManager": self.url,
                    "authentication": {"loginEndpoint": self.url, "audiences": [self.url]},
                }
            )
        if path.endswith("/oauth2/v2.0/token") and request.method == "POST":
            return await self._token(request, path)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "InvalidAuthenticationToken", "no valid bearer token")
        version = request.query.get("api-version", "")
        if not version:
            return _error(400, "MissingApiVersionParameter", "api-version is required")
        self.api_versions.add(version)
        self.calls[f"{request.method} {_kind(path)}"] += 1
        for fault in self.faults:
            if (
                fault.seen < fault.times
                and fault.method == request.method
                and fault.path_contains in path.lower()
            ):
                fault.matched += 1
                if fault.matched % fault.every:
                    continue
                fault.seen += 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                code = fault.code or ("TooManyRequests" if fault.status == 429 else "Fault")
                return _error(fault.status, code, "injected fault", headers)
        if path.startswith("/operations/"):
            return self._operation(path.rsplit("/", 1)[-1])
        action = _ACTION.match(path)
        if action and request.method == "POST":
            return self._action(action["id"], action["action"])
        if request.method == "GET":
            return self._get(path, request.query.get("$expand", ""))
        if request.method == "PUT":
            return await self._put(request, path)
        if request.method == "DELETE":
            if self.resources.pop(path.lower(), None) is None:
                return web.Response(status=204)
            self.power.pop(path.lower(), None)
            return self._accepted()
        return _error(405, "MethodNotAllowed", request.method)

    async def _token(self, request: web.Request, path: str) -> web.Response:
        form = await request.post()
        tenant = path.strip("/").split("/")[0]
        if (
            tenant != self.tenant_id
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                status=401,
            )
        self.tokens_issued += 1
        return web.json_response(
            {"access_token": self.token, "token_type": "Bearer", "expires_in": 3600}
        )

    def _get(self, path: str, expand: str) -> web.Response:
        key = path.lower()
        if (nested := _VMSS_LIST.match(path)) is not None:
            prefix = nested["ss"].lower() + "/virtualmachines/"
            kind = "/" + nested["kind"].lower() + "/"
            items = [
                self._view(r, expand)
                for k, r in sorted(self.resources.items())
                if k.startswith(prefix) and kind in k and "/" not in k.rsplit(kind, 1)[1]
            ]
            return web.json_response({"value": items})
        if _COLLECTION.match(path) and key not in self.resources:
            if (missing := self._parent_missing(path)) is not None:
                return missing
            prefix = key + "/"
            items = [
                self._view(r, expand)
                for k, r in sorted(self.resources.items())
                if k.startswith(prefix) and "/" not in k[len(prefix) :]
            ]
            return web.json_response({"value": items})
        found = self.resources.get(key)
        if found is None:
            kind = _kind(path).rsplit("/", 1)[-1]
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource '{kind}/{path.rsplit('/', 1)[-1]}' under resource group was not"
                " found.",
            )
        return web.json_response(self._view(found, expand))

    def _view(self, resource: dict[str, Any], expand: str) -> dict[str, Any]:
        out = copy.deepcopy(resource)
        key = str(resource["id"]).lower()
        if "instanceview" in expand.lower() and "/virtualmachines/" in key:
            view = out["properties"].setdefault("instanceView", {})
            statuses = [
                s for s in view.get("statuses", []) if not s["code"].startswith("PowerState/")
            ]
            statuses.insert(
                0, {"code": f"ProvisioningState/{out['properties']['provisioningState']}"}
            )
            if key in self.power:
                statuses.append({"code": f"PowerState/{self.power[key]}"})
            view["statuses"] = statuses
        else:
            out.get("properties", {}).pop("instanceView", None)
        return out

    def _parent_missing(self, path: str) -> web.Response | None:
        """A child resource (``routeTables/<t>/routes/<r>``) of a parent ARM does not have."""
        parts = path.strip("/").split("/")
        parent = "/" + "/".join(parts[:8])
        if len(parts) >= 9 and parent.lower() not in self.resources:
            return _error(404, "ResourceNotFound", f"The Resource '{parent}' was not found.")
        return None

    async def _put(self, request: web.Request, path: str) -> web.Response:
        if (missing := self._parent_missing(path)) is not None:
            return missing
        current = self.resources.get(path.lower())
        match = request.headers.get("If-Match")
        if match and match != "*" and (current is None or current.get("etag") != match):
            return _error(412, "PreconditionFailed", "the etag does not match")
        if request.headers.get("If-None-Match") == "*" and current is not None:
            return _error(412, "PreconditionFailed", "the resource exists")
        body = await request.json()
        if current is not None:
            # ARM keeps what a client cannot write (the read-only parts it left out).
            for key, value in current.items():
                body.setdefault(key, value)
            view = current.get("properties", {}).get("instanceView")
            if view is not None:
                body.setdefault("properties", {}).setdefault("instanceView", view)
        _allocate(path, body)
        stored = self.put_resource(path, body)
        if "/virtualmachines/" in path.lower():
            self.power.setdefault(path.lower(), "running")
        return web.json_response(stored, status=200 if current else 201)

    def _action(self, vm_id: str, action: str) -> web.Response:
        key = vm_id.lower()
        if key not in self.resources:
            return _error(404, "ResourceNotFound", f"The Resource '{vm_id}' was not found.")
        self.power[key] = {"start": "running", "powerOff": "stopped"}.get(action, "deallocated")
        return self._accepted()

    def _accepted(self) -> web.Response:
        op = secrets.token_hex(8)
        self._operations[op] = 1
        location = f"{self.url}operations/{op}?api-version=2024-01-01"
        return web.Response(
            status=202,
            headers={"Azure-AsyncOperation": location, "Location": location, "Retry-After": "0"},
        )

    def _operation(self, op: str) -> web.Response:
        remaining = self._operations.get(op)
        if remaining is None:
            return _error(404, "ResourceNotFound", f"no operation {op}")
        if remaining > 0:
            self._operations[op] = remaining - 1
            return web.json_response({"status": "InProgress"}, headers={"Retry-After": "0"})
        return web.json_response({"status": "Succeeded"})


def _allocate(path: str, body: dict[str, Any]) -> None:
    """What ARM allocates on a write: a public IP's address, a private frontend's address."""
    props = body.setdefault("properties", {})
    kind = path.lower()

    def address(first: int) -> str:
        a, b, c = (secrets.randbelow(250) for _ in range(3))
        return f"{first}.{a}.{b}.{c + 2}"

    if "/publicipaddresses/" in kind and not props.get("ipAddress"):
        props["ipAddress"] = address(52)
    if "/loadbalancers/" in kind:
        for frontend in props.get("frontendIPConfigurations", []):
            fprops = frontend.setdefault("properties", {})
            if fprops.get("subnet") and not fprops.get("privateIPAddress"):
                fprops["privateIPAddress"] = address(10)


def _kind(path: str) -> str:
    """``GET virtualMachines`` style name of a path, for :attr:`FakeArm.calls`."""
    parts = path.strip("/").split("/")
    if "providers" in parts:
        rest = parts[parts.index("providers") + 2 :]
        return "/".join(rest[0::2])
    return parts[0] if parts else ""


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=headers,
    )


@contextlib.contextmanager
def serve_in_thread(**kwargs: Any) -> Iterator[FakeArm]:
    """A :class:`FakeArm` serving from an event loop of its own thread, for tests whose own loop
    blocks (a subprocess they wait for) or that have none."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-arm", daemon=True)
    thread.start()
    arm = FakeArm(**kwargs)
    try:
        asyncio.run_coroutine_threadsafe(arm.__aenter__(), loop).result(30)
        try:
            yield arm
        finally:
            asyncio.run_coroutine_threadsafe(arm.__aexit__(None, None, None), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
