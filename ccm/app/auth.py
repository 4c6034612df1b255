"""Delegated authentication and authorization for the secure port, as upstream serves ``/metrics``.

Ports the behaviour of k8s.io/apiserver's delegating authenticator and authorizer used by
``app/serve.go``: a bearer token is checked with a TokenReview, the user is checked with a
SubjectAccessReview for the request's non-resource path and verb, members of ``system:masters`` are
always allowed, and both answers are cached for 10 seconds (allowed and denied alike). The health
paths never reach this code (``SecureServer``'s always-allowed paths). No token → 401; a token the
apiserver does not accept → 401; a user without the RBAC grant → 403. When the apiserver cannot be
asked, the request is refused (401/403), never let through.

Client-certificate authentication (the ``extension-apiserver-authentication`` CA) is not
implemented: scrapers authenticate with a ServiceAccount token.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web

from ccm import clock
from ccm.errors import KubeError
from ccm.kube import client as kclient

__all__ = ["DelegatedAuth", "UserInfo"]

_log = logging.getLogger("ccm.app.auth")

#: Upstream's always-allowed group.
ALWAYS_ALLOW_GROUPS = ("system:masters",)
_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "post",
    "PUT": "put",
    "PATCH": "patch",
    "DELETE": "delete",
    "OPTIONS": "options",
}


class ReviewClient(Protocol):
    async def create(
        self,
        res: kclient.Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


class _TTLCache:
    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._data: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> tuple[bool, Any]:
        hit = self._data.get(key)
        if hit is None or hit[0] < clock.monotonic():
            self._data.pop(key, None)
            return False, None
        return True, hit[1]

    def put(self, key: str, value: Any) -> None:
        if len(self._data) >= self._max:
            self._data.clear()
        self._data[key] = (clock.monotonic() + self._ttl, value)


class DelegatedAuth:
    """The ``authorizer`` hook of :class:`ccm.app.serving.SecureServer`."""

    def __init__(
        self,
        client: ReviewClient,
        *,
        authz_client: ReviewClient | None = None,
        cache_ttl: float = 10.0,
        always_allow_groups: Sequence[str] = ALWAYS_ALLOW_GROUPS,
    ) -> None:
        self._client = client
        self._authz_client = authz_client or client
        self._tokens = _TTLCache(cache_ttl)
        self._decisions = _TTLCache(cache_ttl)
        self._always_allow_groups = frozenset(always_allow_groups)

    async def __call__(self, request: web.Request) -> int | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return HTTPStatus.UNAUTHORIZED
        user = await self.authenticate(token.strip())
        if user is None:
            return HTTPStatus.UNAUTHORIZED
        verb = _VERBS.get(request.method.upper(), request.method.lower())
        if await self.authorize(user, verb=verb, path=request.path):
            return None
        _log.info("Forbidden: user %r may not %s %s", user.name, verb, request.path)
        return HTTPStatus.FORBIDDEN

    async def authenticate(self, token: str) -> UserInfo | None:
        """The user a bearer token belongs to (TokenReview), or None."""
        key = hashlib.sha256(token.encode()).hexdigest()
        hit, cached = self._tokens.get(key)
        if hit:
            user: UserInfo | None = cached
            return user
        try:
            review = await self._client.create(
                kclient.TOKENREVIEWS,
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
            )
        except KubeError as exc:
            _log.warning("TokenReview failed: %s", exc)
            return None  # not cached: ask again next time
        status = review.get("status") or {}
        user = None
        if status.get("authenticated"):
            u = status.get("user") or {}
            user = UserInfo(
                name=str(u.get("username", "")),
                uid=str(u.get("uid", "")),
                groups=tuple(u.get("groups") or ()),
                extra={k: tuple(v) for k, v in (u.get("extra") or {}).items()},
            )
        self._tokens.put(key, user)
        return user

    async def authorize(self, user: UserInfo, *, verb: str, path: str) -> bool:
        """Whether ``user`` may ``verb`` the non-resource URL ``path`` (SubjectAccessReview)."""
        if self._always_allow_groups.intersection(user.groups):
            return True
        key = f"{user.name}\x00{','.join(user.groups)}\x00{verb}\x00{path}"
        hit, cached = self._decisions.get(key)
        if hit:
            return bool(cached)
        spec: dict[str, Any] = {
            "user": user.name,
            "groups": list(user.groups),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}
        try:
            review = await self._authz_client.create(
                kclient.SUBJECTACCESSREVIEWS,
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                },
            )
        except KubeError as exc:
            _log.warning("SubjectAccessReview failed: %s", exc)
            return False
        allowed = bool((review.get("status") or {}).get("allowed"))
        self._decisions.put(key, allowed)
        return allowed
