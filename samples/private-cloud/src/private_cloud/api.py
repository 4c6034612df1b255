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
transaction is serialised and the event loop never blocks on disk. Modules:
:mod:`private_cloud.store` (the schema and the database thread), :mod:`private_cloud.handlers` (the
handlers above); this one starts and serves them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from private_cloud.handlers import CloudApi
from private_cloud.store import CloudDB

__all__ = ["ApiServer", "CloudDB", "main", "serve", "start"]


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
    runner = web.AppRunner(CloudApi(db, token=token).app(), access_log=None)
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
