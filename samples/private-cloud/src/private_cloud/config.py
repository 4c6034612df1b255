"""The provider's ``--cloud-config`` file (YAML)::

    endpoint: http://127.0.0.1:8780    # the private cloud API (required)
    region: region-1                   # reported for machines that have no region of their own
    clusterName: ""                    # overrides --cluster-name for load balancers and routes
    credentials:
      tokenFile: /etc/ccm/token        # bearer token sent to the API (optional)
    timeouts:
      request: 10                      # seconds for one HTTP request
      connect: 5                       # seconds to connect
    retries:
      attempts: 4                      # tries of one call on 5xx / connection errors (>= 1)
      initialBackoff: 0.2              # seconds, doubled each try (with jitter)
      maxBackoff: 2                    # seconds, the backoff's ceiling

Durations are numbers of seconds or Go-style strings (``10s``, ``500ms``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ccm.errors import ConfigError

__all__ = ["PrivateCloudConfig"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"cloud config: {key} must be a duration, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if match is None:
            raise ConfigError(f"cloud config: {key}: invalid duration {value!r}")
        seconds = (
            float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
        )
    if seconds <= 0:
        raise ConfigError(f"cloud config: {key} must be positive")
    return seconds


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"cloud config: {key} must be a mapping")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateCloudConfig:
    endpoint: str
    region: str = ""
    cluster_name: str = ""
    token: str | None = None
    request_timeout: float = 10.0
    connect_timeout: float = 5.0
    retry_attempts: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 2.0

    @classmethod
    def parse(cls, data: bytes | None) -> PrivateCloudConfig:
        """Parse the bytes of ``--cloud-config``; raise ConfigError (one line) when invalid."""
        if not data:
            raise ConfigError("the private-cloud provider needs --cloud-config (endpoint: URL)")
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())  # one line: the parser's message spans several
            raise ConfigError(f"cloud config is not valid YAML: {detail}") from exc
        if not isinstance(doc, dict):
            raise ConfigError("cloud config must be a YAML mapping")
        endpoint = str(doc.get("endpoint") or "").rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"cloud config: endpoint must be an http(s) URL, got {endpoint!r}")
        creds, timeouts, retries = (
            _section(doc, "credentials"),
            _section(doc, "timeouts"),
            _section(doc, "retries"),
        )
        token: str | None = None
        if creds.get("tokenFile"):
            path = Path(str(creds["tokenFile"]))
            try:
                token = path.read_text().strip()
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
                reason = getattr(exc, "strerror", None) or exc
                raise ConfigError(f"cloud config: credentials.tokenFile {path}: {reason}") from exc
        attempts = retries.get("attempts", 4)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError("cloud config: retries.attempts must be an integer >= 1")
        return cls(
            endpoint=endpoint,
            region=str(doc.get("region") or ""),
            cluster_name=str(doc.get("clusterName") or ""),
            token=token,
            request_timeout=_seconds(timeouts.get("request", 10), "timeouts.request"),
            connect_timeout=_seconds(timeouts.get("connect", 5), "timeouts.connect"),
            retry_attempts=attempts,
            initial_backoff=_seconds(retries.get("initialBackoff", 0.2), "retries.initialBackoff"),
            max_backoff=_seconds(retries.get("maxBackoff", 2), "retries.maxBackoff"),
        )
