"""The private cloud's state: the SQLite schema, the one thread every transaction runs on
(:class:`CloudDB`, so the event loop never blocks on disk) and the rows as the API's JSON
objects."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["MACHINE_STATES", "CloudDB", "lb_json", "machine_json", "route_json"]

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


def machine_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "zone": row["zone"],
        "region": row["region"],
        "addresses": json.loads(row["addresses"]),
        "state": row["state"],
    }


def lb_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "cluster": row["cluster"],
        "service": row["service"],
        "vip": row["vip"],
        "ports": json.loads(row["ports"]),
        "nodes": json.loads(row["nodes"]),
    }


def route_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "cidr": row["cidr"],
        "target": row["target"],
        "nameHint": row["name_hint"],
    }
