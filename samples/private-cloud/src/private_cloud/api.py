"""The private cloud itself: a small HTTP API over SQLite, standing in for a real cloud's API.

Run it with ``python -m private_cloud.api --port 8780 --db /tmp/cloud.db`` (binds 127.0.0.1), or
in-process with :func:`serve` (tests). Every resource is JSON; errors are ``{"error": "..."}`` with
a 4xx/5xx status. When started with a token, every ``/v1`` request needs
``Authorization: Bearer <token>``.

Machines (the inventory)::

    GET    /v1/machines[?name=N][&all=true]   {"machines": [...]}  (deleted ones only with all=true)
    POST   /v1/machines                       {name, type, zone, region, addresses, [id]} -> 201
    GET    /v1/machines/{id}                  a machine (also when deleted); 404 when unknown
    PATCH  /v1/machines/{id}                  {addresses} replaces the addresses
    POST   /v1/machines/{id}/stop|start       running <-> stopped; 409 when deleted
    DELETE /v1/machines/{id}                  state becomes "deleted" (kept, as clouds do)

    machine = {id, name, type, zone, region, addresses: [{type, address}], state}
    state   = running | stopped | deleted

VIP pool and load balancers::

    GET    /v1/vips                           {"vips": [{"address", "loadBalancer"}]}
    POST   /v1/vips                           {"addresses": [...]} adds free VIPs to the pool
    GET    /v1/loadbalancers[?cluster=C]      {"loadBalancers": [...]}
    GET    /v1/loadbalancers/{name}           404 when absent
    PUT    /v1/loadbalancers/{name}           {cluster, service, ports, nodes} -> 201 new / 200
                                              (keeps its VIP); 409 when the VIP pool is exhausted
    DELETE /v1/loadbalancers/{name}           releases the VIP to the pool; 404 when absent

Routes, scoped by cluster name::

    GET    /v1/clusters/{cluster}/routes      {"routes": [{id, cidr, target, nameHint}]}
    POST   /v1/clusters/{cluster}/routes      {cidr, target, nameHint} -> 201; the same cidr and
                                              target again -> 200; another target -> 409
    DELETE /v1/clusters/{cluster}/routes/{id} 204; 404 when absent

Test hooks (no token needed)::

    POST   /admin/faults   {method, pathPrefix, status, times, retryAfter}  the next ``times``
                           matching requests fail with ``status`` (e.g. 503) before touching the
                           database, with a ``Retry-After: retryAfter`` header when given
    DELETE /admin/faults   clears them
    GET    /admin/stats    {"requests": n, "faulted": n}
    GET    /healthz

SQLite is used through the standard library ``sqlite3`` on one dedicated thread, so every request's
transaction is serialised and the event loop never blocks on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import secrets
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

__all__ = ["ApiServer", "CloudDB", "main", "serve"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL DEFAULT '',
    zone TEXT NOT NULL DEFAULT '', region TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '[]', state TEXT NOT NULL DEFAULT 'running'
);
CREATE INDEX IF NOT EXISTS machines_name ON machines(name);
CREATE TABLE IF NOT EXISTS vips (address TEXT PRIMARY KEY, lb TEXT);
CREATE TABLE IF NOT EXISTS load_balancers (
    name TEXT PRIMARY KEY, cluster TEXT NOT NULL, service TEXT NOT NULL, vip TEXT NOT NULL,
    ports TEXT NOT NULL, nodes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS routes (
    id TEXT PRIMARY KEY, cluster TEXT NOT NULL, cidr TEXT NOT NULL, target TEXT NOT NULL,
    name_hint TEXT NOT NULL DEFAULT '', UNIQUE (cluster, cidr)
);
"""

MACHINE_STATES = ("running", "stopped", "deleted")


class ApiError(Exception):
    """An HTTP error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CloudDB:
    """The cloud's state in one SQLite file, used from a single worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="private-cloud-db")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction on the database thread."""

        def work() -> T:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


def _machine(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "zone": row["zone"],
        "region": row["region"],
        "addresses": json.loads(row["addresses"]),
        "state": row["state"],
    }


def _lb(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "cluster": row["cluster"],
        "service": row["service"],
        "vip": row["vip"],
        "ports": json.loads(row["ports"]),
        "nodes": json.loads(row["nodes"]),
    }


def _route(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "cidr": row["cidr"],
        "target": row["target"],
        "nameHint": row["name_hint"],
    }


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
class _Api:
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
            return [_machine(r) for r in conn.execute(sql + " ORDER BY name, id", args)]

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
            return _machine(conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone())

        return web.json_response(await self.db.run(q), status=201)

    async def get_machine(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            if row is None:
                raise ApiError(404, f"machine {mid} not found")
            return _machine(row)

        return web.json_response(await self.db.run(q))

    async def _set_state(self, mid: str, state: str) -> dict[str, Any]:
        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone()
            if row is None:
                raise ApiError(404, f"machine {mid} not found")
            if row["state"] == "deleted" and state != "deleted":
                raise ApiError(409, f"machine {mid} is deleted")
            conn.execute("UPDATE machines SET state = ? WHERE id = ?", (state, mid))
            return _machine(conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone())

        return await self.db.run(q)

    async def patch_machine(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        addresses = json.dumps(_addresses(await _body(request)))

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            cur = conn.execute("UPDATE machines SET addresses = ? WHERE id = ?", (addresses, mid))
            if cur.rowcount == 0:
                raise ApiError(404, f"machine {mid} not found")
            return _machine(conn.execute("SELECT * FROM machines WHERE id = ?", (mid,)).fetchone())

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
            return [_lb(r) for r in rows]

        return web.json_response({"loadBalancers": await self.db.run(q)})

    async def get_lb(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM load_balancers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ApiError(404, f"load balancer {name} not found")
            return _lb(row)

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
            return _lb(new), created

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
            return [_route(r) for r in rows]

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
                return _route(row), False
            rid = f"r-{secrets.token_hex(6)}"
            conn.execute(
                "INSERT INTO routes VALUES (?, ?, ?, ?, ?)", (rid, cluster, cidr, target, hint)
            )
            return _route(
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


@dataclass
class ApiServer:
    """A running API: ``url`` is ``http://127.0.0.1:<port>``."""

    url: str
    port: int
    db: CloudDB
    runner: web.AppRunner

    async def aclose(self) -> None:
        await self.runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)


def _seed_vips(cidr: str) -> Callable[[sqlite3.Connection], None]:
    net = ipaddress.ip_network(cidr, strict=False)
    hosts = [str(h) for h in net.hosts()]

    def q(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO vips (address, lb) VALUES (?, NULL)", [(h,) for h in hosts]
        )

    return q


async def start(
    db_path: str | Path,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    vip_pool: str | None = None,
) -> ApiServer:
    """Start the API in the running event loop (port 0 picks a free port). ``vip_pool`` (a CIDR)
    adds its host addresses to the VIP pool."""
    db = CloudDB(db_path)
    await db.run(lambda conn: None)  # create the schema now: fail fast on a bad path
    if vip_pool:
        await db.run(_seed_vips(vip_pool))
    runner = web.AppRunner(_Api(db, token=token).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return ApiServer(url=f"http://{host}:{bound}", port=bound, db=db, runner=runner)


@contextlib.asynccontextmanager
async def serve(
    db_path: str | Path, *, port: int = 0, token: str | None = None, vip_pool: str | None = None
) -> AsyncIterator[ApiServer]:
    """``async with serve(tmp_path / "cloud.db") as api:`` — the API on 127.0.0.1 for a test."""
    api = await start(db_path, port=port, token=token, vip_pool=vip_pool)
    try:
        yield api
    finally:
        await api.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="private-cloud-api", description="The sample private cloud's HTTP API (127.0.0.1)."
    )
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument("--db", default="private-cloud.db", help="SQLite file holding the state")
    parser.add_argument("--token-file", default="", help="require this bearer token on /v1")
    parser.add_argument("--vip-pool", default="", help="CIDR whose addresses join the VIP pool")
    args = parser.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else None

    async def run() -> None:
        api = await start(args.db, port=args.port, token=token, vip_pool=args.vip_pool or None)
        print(f"private cloud API listening on {api.url} (db {args.db})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await api.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
