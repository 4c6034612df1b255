"""The private cloud's HTTP handlers (the resources :mod:`private_cloud.api` documents): machines,
the VIP pool and load balancers, per-cluster routes, and the test hooks (injected faults, request
counts), behind one middleware that checks the bearer token and plays the faults."""

from __future__ import annotations

import ipaddress
import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from private_cloud.store import MACHINE_STATES, CloudDB, lb_json, machine_json, route_json

__all__ = ["ApiError", "CloudApi"]


class ApiError(Exception):
    """An HTTP error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _str(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string")
    if required and not value:
        raise ApiError(400, f"{key} is required")
    return value


def _addresses(data: dict[str, Any]) -> list[dict[str, str]]:
    raw = data.get("addresses", [])
    if not isinstance(raw, list):
        raise ApiError(400, "addresses must be a list")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not item.get("type") or not item.get("address"):
            raise ApiError(400, "each address needs a type and an address")
        out.append({"type": str(item["type"]), "address": str(item["address"])})
    return out


@dataclass
class _Fault:
    method: str
    prefix: str
    status: int
    remaining: int
    retry_after: str = ""


@dataclass
class CloudApi:
    db: CloudDB
    token: str | None = None
    faults: list[_Fault] = field(default_factory=list)
    requests: int = 0
    faulted: int = 0

    # -- middleware ---------------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            self.requests += 1
            if self.token is not None and request.headers.get("Authorization", "") != (
                f"Bearer {self.token}"
            ):
                return web.json_response({"error": "unauthorized"}, status=401)
            for fault in self.faults:
                if (
                    fault.remaining > 0
                    and fault.method in ("*", request.method)
                    and request.path.startswith(fault.prefix)
                ):
                    fault.remaining -= 1
                    self.faulted += 1
                    return web.json_response(
                        {"error": f"injected fault {fault.status}"},
                        status=fault.status,
                        headers={"Retry-After": fault.retry_after} if fault.retry_after else None,
                    )
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)

    # -- machines -----------------------------------------------------------------------------

    async def list_machines(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        include_deleted = request.query.get("all") == "true"

        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sql, args = "SELECT * FROM machines", []
            where = []
            if name is not None:
                where.append("name = ?")
                args.append(name)
            if not include_deleted:
                where.append("state != 'deleted'")
            if where:
                sql += " WHERE " + " AND ".join(where)
            return [machine_json(r) for r in conn.execute(sql + " ORDER BY name, id", args)]

        return web.json_response({"machines": await self.db.run(q)})

    async def create_machine(self, request: web.Request) -> web.Response:
        data = await _body(request)
        name = _str(data, "name", required=True)
        mid = _str(data, "id") or f"m-{secrets.token_hex(6)}"
        state = _str(data, "state") or "running"
        if state not in MACHINE_STATES:
            raise ApiError(400, f"state must be one of {', '.join(MACHINE_STATES)}")
        row = (
            mid,
            name,
            _str(data, "type"),
            _str(data, "zone"),
            _str(data, "region"),
            json.dumps(_addresses(data)),
            state,
        )

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            try:
                conn.execute("INSERT INTO machines VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError as exc:
                raise ApiError(409, f"machine {mid} already exists") from exc
            return machine_json(
                conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            )

        return web.json_response(await self.db.run(q), status=201)

    async def get_machine(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            if row is None:
                raise ApiError(404, f"machine {mid} not found")
            return machine_json(row)

        return web.json_response(await self.db.run(q))

    async def _set_state(self, mid: str, state: str) -> dict[str, Any]:
        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            if row is None:
                raise ApiError(404, f"machine {mid} not found")
            if row["state"] == "deleted" and state != "deleted":
                raise ApiError(409, f"machine {mid} is deleted")
            conn.execute("UPDATE machines SET state = ? WHERE id = ?", (state, mid))
            return machine_json(
                conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            )

        return await self.db.run(q)

    async def patch_machine(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        addresses = json.dumps(_addresses(await _body(request)))

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            cur = conn.execute("UPDATE machines SET addresses = ? WHERE id = ?", (addresses, mid))
            if cur.rowcount == 0:
                raise ApiError(404, f"machine {mid} not found")
            return machine_json(
                conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            )

        return web.json_response(await self.db.run(q))

    async def stop_machine(self, request: web.Request) -> web.Response:
        return web.json_response(await self._set_state(request.match_info["id"], "stopped"))

    async def start_machine(self, request: web.Request) -> web.Response:
        return web.json_response(await self._set_state(request.match_info["id"], "running"))

    async def delete_machine(self, request: web.Request) -> web.Response:
        return web.json_response(await self._set_state(request.match_info["id"], "deleted"))

    # -- VIPs and load balancers ---------------------------------------------------------------

    async def list_vips(self, request: web.Request) -> web.Response:
        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT address, lb FROM vips").fetchall()
            rows.sort(key=lambda r: ipaddress.ip_address(r["address"]))
            return [{"address": r["address"], "loadBalancer": r["lb"]} for r in rows]

        return web.json_response({"vips": await self.db.run(q)})

    async def add_vips(self, request: web.Request) -> web.Response:
        data = await _body(request)
        raw = data.get("addresses")
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "addresses must be a non-empty list")
        try:
            addresses = [str(ipaddress.ip_address(str(a))) for a in raw]
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc

        def q(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO vips (address, lb) VALUES (?, NULL)",
                [(a,) for a in addresses],
            )
            return conn.total_changes - before

        added = await self.db.run(q)
        return web.json_response({"added": added}, status=201)

    async def list_lbs(self, request: web.Request) -> web.Response:
        cluster = request.query.get("cluster")

        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            if cluster is None:
                rows = conn.execute("SELECT * FROM load_balancers ORDER BY name")
            else:
                rows = conn.execute(
                    "SELECT * FROM load_balancers WHERE cluster = ? ORDER BY name", (cluster,)
                )
            return [lb_json(r) for r in rows]

        return web.json_response({"loadBalancers": await self.db.run(q)})

    async def get_lb(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM load_balancers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ApiError(404, f"load balancer {name} not found")
            return lb_json(row)

        return web.json_response(await self.db.run(q))

    async def put_lb(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = await _body(request)
        cluster = _str(data, "cluster", required=True)
        service = _str(data, "service")
        ports, nodes = data.get("ports", []), data.get("nodes", [])
        if not isinstance(ports, list) or not isinstance(nodes, list):
            raise ApiError(400, "ports and nodes must be lists")

        def q(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            row = conn.execute("SELECT * FROM load_balancers WHERE name = ?", (name,)).fetchone()
            created = row is None
            if row is None:
                free = [
                    r["address"] for r in conn.execute("SELECT address FROM vips WHERE lb IS NULL")
                ]
                if not free:
                    raise ApiError(409, "VIP pool exhausted")
                vip = min(free, key=ipaddress.ip_address)
                conn.execute("UPDATE vips SET lb = ? WHERE address = ?", (name, vip))
            else:
                vip = row["vip"]
            conn.execute(
                "INSERT OR REPLACE INTO load_balancers VALUES (?, ?, ?, ?, ?, ?)",
                (name, cluster, service, vip, json.dumps(ports), json.dumps(nodes)),
            )
            new = conn.execute("SELECT * FROM load_balancers WHERE name = ?", (name,)).fetchone()
            return lb_json(new), created

        lb, created = await self.db.run(q)
        return web.json_response(lb, status=201 if created else 200)

    async def delete_lb(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def q(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT * FROM load_balancers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ApiError(404, f"load balancer {name} not found")
            conn.execute("DELETE FROM load_balancers WHERE name = ?", (name,))
            conn.execute("UPDATE vips SET lb = NULL WHERE lb = ?", (name,))

        await self.db.run(q)
        return web.Response(status=204)

    # -- routes ---------------------------------------------------------------------------------

    async def list_routes(self, request: web.Request) -> web.Response:
        cluster = request.match_info["cluster"]

        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT * FROM routes WHERE cluster = ? ORDER BY cidr, id", (cluster,)
            )
            return [route_json(r) for r in rows]

        return web.json_response({"routes": await self.db.run(q)})

    async def create_route(self, request: web.Request) -> web.Response:
        cluster = request.match_info["cluster"]
        data = await _body(request)
        target = _str(data, "target", required=True)
        hint = _str(data, "nameHint")
        try:
            cidr = str(ipaddress.ip_network(_str(data, "cidr", required=True)))
        except ValueError as exc:
            raise ApiError(400, f"cidr: {exc}") from exc

        def q(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            row = conn.execute(
                "SELECT * FROM routes WHERE cluster = ? AND cidr = ?", (cluster, cidr)
            ).fetchone()
            if row is not None:
                if row["target"] != target:
                    raise ApiError(409, f"route for {cidr} already targets {row['target']}")
                return route_json(row), False
            rid = f"r-{secrets.token_hex(6)}"
            conn.execute(
                "INSERT INTO routes VALUES (?, ?, ?, ?, ?)", (rid, cluster, cidr, target, hint)
            )
            return route_json(
                conn.execute("SELECT * FROM routes WHERE id = ?", (rid,)).fetchone()
            ), True

        route, created = await self.db.run(q)
        return web.json_response(route, status=201 if created else 200)

    async def delete_route(self, request: web.Request) -> web.Response:
        cluster, rid = request.match_info["cluster"], request.match_info["id"]

        def q(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM routes WHERE cluster = ? AND id = ?", (cluster, rid))
            if cur.rowcount == 0:
                raise ApiError(404, f"route {rid} not found in cluster {cluster}")

        await self.db.run(q)
        return web.Response(status=204)

    # -- admin ----------------------------------------------------------------------------------

    async def add_fault(self, request: web.Request) -> web.Response:
        data = await _body(request)
        try:
            fault = _Fault(
                method=str(data.get("method", "*")).upper(),
                prefix=str(data.get("pathPrefix", "/v1/")),
                status=int(data.get("status", 503)),
                remaining=int(data.get("times", 1)),
                retry_after=str(data.get("retryAfter", "")),
            )
        except (TypeError, ValueError) as exc:
            raise ApiError(400, str(exc)) from exc
        self.faults.append(fault)
        return web.json_response({"faults": len(self.faults)}, status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "faulted": self.faulted})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/v1/machines", self.list_machines)
        r.add_post("/v1/machines", self.create_machine)
        r.add_get("/v1/machines/{id}", self.get_machine)
        r.add_patch("/v1/machines/{id}", self.patch_machine)
        r.add_post("/v1/machines/{id}/stop", self.stop_machine)
        r.add_post("/v1/machines/{id}/start", self.start_machine)
        r.add_delete("/v1/machines/{id}", self.delete_machine)
        r.add_get("/v1/vips", self.list_vips)
        r.add_post("/v1/vips", self.add_vips)
        r.add_get("/v1/loadbalancers", self.list_lbs)
        r.add_get("/v1/loadbalancers/{name}", self.get_lb)
        r.add_put("/v1/loadbalancers/{name}", self.put_lb)
        r.add_delete("/v1/loadbalancers/{name}", self.delete_lb)
        r.add_get("/v1/clusters/{cluster}/routes", self.list_routes)
        r.add_post("/v1/clusters/{cluster}/routes", self.create_route)
        r.add_delete("/v1/clusters/{cluster}/routes/{id}", self.delete_route)
        r.add_post("/admin/faults", self.add_fault)
        r.add_delete("/admin/faults", self.clear_faults)
        r.add_get("/admin/stats", self.stats)
        return app
