"""Synchronous helpers for tests and the demo: run the API as a process, act on it as an admin.

``ApiProcess`` runs ``python -m private_cloud.api`` on a free 127.0.0.1 port (dies with its parent);
``AdminClient`` is a tiny urllib client of the API — the cloud operator's console, independent of
the provider.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["AdminClient", "ApiProcess", "write_cloud_config"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AdminClient:
    """Blocking JSON client of the private cloud API."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else None
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {answer}")
        return answer

    # conveniences
    def create_machine(self, name: str, **fields: Any) -> dict[str, Any]:
        machine: dict[str, Any] = self.call("POST", "/v1/machines", {"name": name, **fields})
        return machine

    def machines(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        path = "/v1/machines?all=true" if include_deleted else "/v1/machines"
        machines: list[dict[str, Any]] = self.call("GET", path)["machines"]
        return machines

    def machine_by_name(self, name: str) -> dict[str, Any]:
        found = self.call("GET", f"/v1/machines?name={name}")["machines"]
        if len(found) != 1:
            raise RuntimeError(f"{len(found)} live machines named {name}")
        machine: dict[str, Any] = found[0]
        return machine

    def delete_machine(self, machine_id: str) -> None:
        self.call("DELETE", f"/v1/machines/{machine_id}")

    def stop_machine(self, machine_id: str) -> None:
        self.call("POST", f"/v1/machines/{machine_id}/stop")

    def vips(self) -> list[dict[str, Any]]:
        vips: list[dict[str, Any]] = self.call("GET", "/v1/vips")["vips"]
        return vips

    def load_balancers(self) -> list[dict[str, Any]]:
        lbs: list[dict[str, Any]] = self.call("GET", "/v1/loadbalancers")["loadBalancers"]
        return lbs

    def routes(self, cluster: str) -> list[dict[str, Any]]:
        routes: list[dict[str, Any]] = self.call("GET", f"/v1/clusters/{cluster}/routes")["routes"]
        return routes

    def inject_fault(
        self,
        *,
        status: int,
        times: int,
        method: str = "*",
        prefix: str = "/v1/",
        retry_after: str = "",
    ) -> None:
        self.call(
            "POST",
            "/admin/faults",
            {
                "status": status,
                "times": times,
                "method": method,
                "pathPrefix": prefix,
                "retryAfter": retry_after,
            },
        )

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.call("GET", "/admin/stats")
        return stats


class ApiProcess:
    """``python -m private_cloud.api`` on a free port; ``with ApiProcess(db) as api: api.url``."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        vip_pool: str | None = None,
        token_file: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else self.db_path.with_suffix(".log")
        args = [sys.executable, "-m", "private_cloud.api", f"--port={self.port}"]
        args.append(f"--db={self.db_path}")
        if vip_pool:
            args.append(f"--vip-pool={vip_pool}")
        if token_file:
            args.append(f"--token-file={token_file}")
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.token = Path(token_file).read_text().strip() if token_file else None

    def start(self, timeout: float = 20.0) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"private cloud API exited with {self.process.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"private cloud API not healthy after {timeout:.0f}s")

    def admin(self) -> AdminClient:
        return AdminClient(self.url, self.token)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> ApiProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_cloud_config(path: str | Path, url: str, **extra: Any) -> Path:
    """Write a provider cloud config pointing at ``url`` (fast retries, for tests and the demo)."""
    doc: dict[str, Any] = {
        "endpoint": url,
        "region": "region-1",
        "timeouts": {"request": 5, "connect": 2},
        "retries": {"attempts": 4, "initialBackoff": 0.05, "maxBackoff": 0.5},
    }
    doc.update(extra)
    out = Path(path)
    out.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return out
