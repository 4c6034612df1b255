"""The test side of the fake cloud's state file: :class:`FakeCloudState`."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError

from ccm.cloudprovider import NodeAddress
from ccm.testing.fake_cloud.documents import (
    DefaultInstanceSpec,
    ErrorKind,
    ErrorSpec,
    FakeCloudStateSpec,
    InstanceSpec,
    RateLimitSpec,
    RouteSpec,
    _Model,
    _one_line,
    _parse_document,
)
from ccm.testing.fake_cloud.files import _atomic_write
from ccm.testing.fake_cloud.methods import _check_method

_rule_ids = itertools.count(1)


def _spec_dump(model: type[_Model], fields: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parsed = model.model_validate(dict(fields))
    except ValidationError as exc:
        raise ValueError(f"invalid {model.__name__}: {_one_line(exc)}") from None
    dumped: dict[str, Any] = parsed.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    return dumped


class FakeCloudState:
    """Build and write the fake's state file from a test, without hand-writing JSON.

    ::

        state = FakeCloudState()
        state.add_instance("node-1", instance_type="m5.large", zone="zone-a")
        state.inject_error("instance-metadata", key="node-2", message="boom", times=2)
        state.write(tmp_path / "state.json")  # atomic; the fake picks it up on its next call
        state.remove_instance("node-1"); state.clear_errors(); state.write(...)

    Keyword arguments are the snake_case field names of the config schema. Only the sections
    touched are written, so the fake leaves the others alone (see :mod:`ccm.testing.fake_cloud`).
    """

    _SECTION_ALIASES: ClassVar[dict[str, str]] = {
        name: info.alias or name for name, info in FakeCloudStateSpec.model_fields.items()
    }

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        doc = json.loads(json.dumps(dict(document or {})))
        try:
            FakeCloudStateSpec.model_validate(doc)
        except ValidationError as exc:
            raise ValueError(f"invalid fake cloud state: {_one_line(exc)}") from None
        # normalise snake_case section names to the aliases
        self._doc: dict[str, Any] = {self._SECTION_ALIASES.get(k, k): v for k, v in doc.items()}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FakeCloudState:
        """Read a state file (JSON or YAML)."""
        return cls(_parse_document(Path(path).read_bytes(), f"fake cloud state file {path}"))

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(json.dumps(self._doc))
        return result

    def write(self, path: str | os.PathLike[str]) -> None:
        """Validate and write the state atomically: YAML for ``.yaml``/``.yml``, JSON otherwise."""
        FakeCloudStateSpec.model_validate(self._doc)
        target = Path(path)
        if target.suffix in (".yaml", ".yml"):
            data = yaml.safe_dump(self._doc, sort_keys=True).encode()
        else:
            data = json.dumps(self._doc, indent=1, sort_keys=True).encode() + b"\n"
        _atomic_write(target, data, newer=True)

    # instances

    def add_instance(self, name: str, **fields: Any) -> FakeCloudState:
        """Add or replace instance ``name``.

        Fields: provider_id, instance_type, zone, region, addresses (dicts ``{"type", "address"}``
        or NodeAddress), exists, shutdown, labels.
        """
        if "addresses" in fields:
            fields["addresses"] = [
                a.to_dict() if isinstance(a, NodeAddress) else dict(a) for a in fields["addresses"]
            ]
        instances = self._doc.get("instances") or {}
        instances[name] = _spec_dump(InstanceSpec, fields)
        self._doc["instances"] = instances
        return self

    def update_instance(self, name: str, **changes: Any) -> FakeCloudState:
        """Change some fields of instance ``name`` (which must exist in this state)."""
        current = (self._doc.get("instances") or {}).get(name)
        if current is None:
            raise KeyError(f"no instance {name!r} in this state")
        merged = {**InstanceSpec.model_validate(current).model_dump(), **changes}
        return self.add_instance(name, **merged)

    def remove_instance(self, name: str) -> FakeCloudState:
        instances = self._doc.get("instances") or {}
        instances.pop(name, None)
        self._doc["instances"] = instances
        return self

    def set_default_instance(self, **fields: Any) -> FakeCloudState:
        self._doc["defaultInstance"] = _spec_dump(DefaultInstanceSpec, fields)
        return self

    def clear_default_instance(self) -> FakeCloudState:
        self._doc["defaultInstance"] = None
        return self

    # errors, latency, rate limit

    def inject_error(
        self,
        method: str,
        kind: ErrorKind = "cloud",
        *,
        key: str | None = None,
        message: str | None = None,
        times: int | None = None,
        retry_after: float | None = None,
    ) -> FakeCloudState:
        """Append an error rule (kinds: see :mod:`ccm.testing.fake_cloud`).

        Each call labels its rule with a new ``id``, so injecting a rule identical to one that has
        already fired arms it again, while rewriting the file for other reasons does not.
        """
        fields: dict[str, Any] = {
            "method": method,
            "id": f"e{next(_rule_ids)}",
            "kind": kind,
            "key": key,
            "message": message,
        }
        fields["times"] = times
        if retry_after is not None:
            fields["retry_after"] = retry_after
        rule = _spec_dump(ErrorSpec, fields)
        self._doc["errors"] = [*(self._doc.get("errors") or []), rule]
        return self

    def clear_errors(self, method: str | None = None, key: str | None = None) -> FakeCloudState:
        """Remove every error rule, or those of ``method`` and/or ``key``."""
        kept = [
            r
            for r in self._doc.get("errors") or []
            if not (
                (method is None or r.get("method") == method)
                and (key is None or r.get("key") == key)
            )
        ]
        self._doc["errors"] = kept
        return self

    def set_latency(self, method: str, seconds: float) -> FakeCloudState:
        _check_method(method)
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._doc["latency"] = {**(self._doc.get("latency") or {}), method: seconds}
        return self

    def clear_latency(self) -> FakeCloudState:
        self._doc["latency"] = {}
        return self

    def set_ignore_cancellation(self, *methods: str) -> FakeCloudState:
        """The latency of these methods (``"*"``: every cloud call) ignores cancellation; no
        methods: every call honours it again."""
        for method in methods:
            _check_method(method)
        self._doc["ignoreCancellation"] = sorted(methods)
        return self

    def set_rate_limit(self, qps: float, burst: int = 1, reject: bool = False) -> FakeCloudState:
        self._doc["rateLimit"] = _spec_dump(
            RateLimitSpec, {"qps": qps, "burst": burst, "reject": reject}
        )
        return self

    def clear_rate_limit(self) -> FakeCloudState:
        self._doc["rateLimit"] = None
        return self

    # routes (setting them replaces the fake's whole route table when written)

    def add_route(
        self,
        target_node: str,
        destination_cidr: str,
        *,
        cluster: str = "kubernetes",
        name: str = "",
        blackhole: bool = False,
    ) -> FakeCloudState:
        route = _spec_dump(
            RouteSpec,
            {
                "cluster": cluster,
                "name": name,
                "target_node": target_node,
                "destination_cidr": destination_cidr,
                "blackhole": blackhole,
            },
        )
        self._doc["routes"] = [*(self._doc.get("routes") or []), route]
        return self

    def clear_routes(self) -> FakeCloudState:
        self._doc["routes"] = []
        return self
