"""The fake cloud's files: the state file it re-reads and the status file it writes (shared by
several processes with ``sharedStatus``)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ccm.cloudprovider import NodeAddress, Route
from ccm.errors import ConfigError
from ccm.testing.fake_cloud.core import FakeCloudCore
from ccm.testing.fake_cloud.documents import FakeCloudStateSpec, FakeCloudStatus, _read_state_file
from ccm.testing.fake_cloud.faults import ErrorRule
from ccm.testing.fake_cloud.model import DefaultInstance, FakeInstance, FakeLoadBalancer, FakePort

_log = logging.getLogger("ccm.testing.fake_cloud")


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: How long a call waits for another process's hold of the shared status lock (sharedStatus).
SHARED_LOCK_WAIT = 1.0


def _file_key(path: Path) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of ``path``, None if it does not exist: a change detector."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _atomic_write(path: Path, data: bytes, *, newer: bool = False) -> None:
    """Replace ``path`` with ``data`` via a temporary file and rename.

    ``newer``: give the new file an mtime strictly after the old one's. File times come from a
    coarse clock and a freed inode number may be reused at once, so two quick writes of the same
    size could otherwise look unchanged to a reader that compares (mtime, size, inode).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if newer:
            try:
                previous = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                previous = 0
            stamp = max(time.time_ns(), previous + 1_000)
            os.utime(tmp, ns=(stamp, stamp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FakeCloudFiles(FakeCloudCore):
    """The state file and the status file of :class:`FakeCloud`."""

    def _apply_section(self, section: str, spec: FakeCloudStateSpec) -> None:
        if section == "instances":
            specs = spec.instances or {}
            self.instance_table = {n: FakeInstance.from_spec(n, s) for n, s in specs.items()}
        elif section == "default_instance":
            default = spec.default_instance
            self.default_instance = None if default is None else DefaultInstance.from_spec(default)
        elif section == "errors":
            self.errors = [ErrorRule.from_spec(s) for s in spec.errors or ()]
        elif section == "latency":
            self.latency = dict(spec.latency or {})
        elif section == "ignore_cancellation":
            self.ignore_cancellation = set(spec.ignore_cancellation or ())
        elif section == "rate_limit":
            limit = spec.rate_limit
            if limit is None:
                self.set_rate_limit(None)
            else:
                self.set_rate_limit(limit.qps, limit.burst, reject=limit.reject)
        elif section == "routes":
            self.route_table = {}
            for r in spec.routes or ():
                name = r.name or self._route_name(r.cluster, r.target_node, r.destination_cidr)
                self.route_table.setdefault(r.cluster, {})[name] = Route(
                    name=name,
                    target_node=r.target_node,
                    destination_cidr=r.destination_cidr,
                    blackhole=r.blackhole,
                    target_node_addresses=tuple(
                        NodeAddress(type=a.type, address=a.address) for a in r.target_node_addresses
                    ),
                )
        else:  # pragma: no cover - guarded by _STATE_SECTIONS
            raise AssertionError(section)

    def reload_state(self) -> bool:
        """Re-read the state file now if it changed; True when a new version was applied."""
        return self._reload_state(strict=False)

    def _reload_state(self, *, strict: bool) -> bool:
        path = self.state_file
        if path is None:
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._state_key = None
            return False
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._state_key:
            return False
        self._state_key = key
        try:
            spec = _read_state_file(path)
        except (ConfigError, OSError) as exc:
            message = str(exc)
            if strict:
                raise ConfigError(message) from None
            _log.warning("ignoring fake cloud state file: %s", message)
            self.state_error = message
            self._status_changed()
            return False
        for section in spec.model_fields_set:
            canonical = json.dumps(
                spec.model_dump(include={section}, mode="json"), sort_keys=True, default=str
            )
            if self._applied.get(section) != canonical:
                self._apply_section(section, spec)
                self._applied[section] = canonical
        for section in set(self._applied) - spec.model_fields_set:
            del self._applied[section]  # gone from the file: re-applied if it comes back
        self.state_generation += 1
        self.state_error = None
        _log.info("applied fake cloud state file %s (generation %d)", path, self.state_generation)
        self._status_changed()
        return True

    # ---- status file

    def status(self) -> dict[str, Any]:
        """The status document (the status file's content)."""
        return {
            "provider": self.name,
            "initialized": self.initialized,
            "clusterName": self.initialized_cluster_name or "",
            "closed": self.closed,
            "loadBalancers": {
                lb.name: {
                    "name": lb.name,
                    "service": lb.service,
                    "serviceUID": lb.service_uid,
                    "clusterName": lb.cluster_name,
                    "ports": [
                        {
                            "name": p.name,
                            "protocol": p.protocol,
                            "port": p.port,
                            "nodePort": p.node_port,
                        }
                        for p in lb.ports
                    ],
                    "nodes": list(lb.nodes),
                    "ip": lb.ip,
                    "ingress": self._lb_status(lb).to_dict().get("ingress", []),
                }
                for lb in sorted(self.load_balancers.values(), key=lambda lb: lb.name)
            },
            "routes": {
                cluster: [
                    {
                        "name": r.name,
                        "targetNode": r.target_node,
                        "destinationCIDR": r.destination_cidr,
                        "blackhole": r.blackhole,
                        "targetNodeAddresses": [a.to_dict() for a in r.target_node_addresses],
                    }
                    for r in sorted(table.values(), key=lambda r: r.name)
                ]
                for cluster, table in sorted(self.route_table.items())
            },
            "calls": dict(sorted(self.call_counts.items())),
            "callsByKey": {
                m: dict(sorted(c.items())) for m, c in sorted(self._calls_by_key.items())
            },
            "totalCalls": self.total_calls,
            "batchItems": dict(sorted(self.batch_items.items())),
            "stateGeneration": self.state_generation,
            "stateError": self.state_error,
        }

    def _status_changed(self, *, urgent: bool = False) -> None:
        """Schedule a status write (coalesced over ``status_interval``; at once when urgent)."""
        if self.status_file is None or not self._active:
            return
        self._status_dirty = True
        if urgent or self.status_interval <= 0 or self.shared_status:
            self._write_status()
            return
        if self._status_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write_status()
                return
            self._status_handle = loop.call_later(self.status_interval, self._flush_status)

    def _flush_status(self) -> None:
        self._status_handle = None
        if self._status_dirty:
            self._write_status()

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        if self._status_handle is not None:
            self._status_handle.cancel()
            self._status_handle = None
        self._status_dirty = False
        # Shared: under the lock, and over the current cloud (a change made in this step holds
        # the lock since its reload, so nothing is reloaded over it).
        self._sync_shared()
        data = json.dumps(self.status(), indent=1, sort_keys=False).encode() + b"\n"
        try:
            _atomic_write(self.status_file, data, newer=self.shared_status)
            self._status_key = _file_key(self.status_file)
        except OSError as exc:
            _log.warning("cannot write fake cloud status file %s: %s", self.status_file, exc)
        finally:
            if not _in_event_loop():
                self._unlock_shared()  # no step to wait for

    def _lock_shared(self) -> None:
        """With ``shared_status``: hold the status file's lock (``flock`` on ``<status>.lock``)
        until the current step of the event loop ends.

        A change is one synchronous step (reload, change, write), so holding the lock for the step
        makes it atomic across processes: without it, two processes could each reload, change and
        write, and the later write would drop the other's change. Waits at most
        :data:`SHARED_LOCK_WAIT` seconds (a process stopped while holding it must not freeze the
        others), then goes on without it.
        """
        if not self.shared_status or self.status_file is None or self._lock_held:
            return
        if self._lock_fd is None:
            lock_path = self.status_file.with_name(self.status_file.name + ".lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + SHARED_LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    _log.warning("fake cloud status lock busy for %ss; going on", SHARED_LOCK_WAIT)
                    return
                time.sleep(0.001)
        self._lock_held = True
        if _in_event_loop():  # else the write that follows releases it
            asyncio.get_running_loop().call_soon(self._unlock_shared)

    def _unlock_shared(self) -> None:
        if self._lock_held and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._lock_held = False

    def _sync_shared(self) -> None:
        """With ``shared_status``: reload load balancers and routes if another process wrote (under
        the lock, held until the end of this step, so the change that follows is not lost)."""
        if not self.shared_status or self.status_file is None:
            return
        self._lock_shared()
        current = _file_key(self.status_file)
        if current is not None and current != self._status_key:
            self._restore_from_status()
            self._status_key = current

    def _restore_from_status(self) -> None:
        if self.status_file is None:
            return
        try:
            status = FakeCloudStatus.read(self.status_file)
        except (OSError, ValueError) as exc:
            _log.warning("cannot restore from fake cloud status file %s: %s", self.status_file, exc)
            return
        if status is None:
            return
        self.load_balancers = {}
        self._lb_ips = {}
        self.route_table = {}
        for saved in status.load_balancers.values():
            lb = FakeLoadBalancer(
                name=saved.name,
                service=saved.service,
                service_uid=saved.service_uid,
                cluster_name=saved.cluster_name,
                ports=tuple(
                    FakePort(name=p.name, protocol=p.protocol, port=p.port, node_port=p.node_port)
                    for p in saved.ports
                ),
                nodes=tuple(saved.nodes),
                ip=saved.ip,
            )
            self.load_balancers[lb.name] = lb
            if lb.ip:
                self._lb_ips[lb.ip] = lb.name
        for cluster, routes in status.routes.items():
            table = self.route_table.setdefault(cluster, {})
            for r in routes:
                table[r.name] = Route(
                    name=r.name,
                    target_node=r.target_node,
                    destination_cidr=r.destination_cidr,
                    blackhole=r.blackhole,
                    target_node_addresses=tuple(
                        NodeAddress(type=a.type, address=a.address) for a in r.target_node_addresses
                    ),
                )
