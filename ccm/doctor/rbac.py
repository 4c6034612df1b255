"""The RBAC self-check: may the ccm's ServiceAccount make every call the ccm makes?

:data:`CLUSTER_RULES` and :data:`NAMESPACE_RULES` restate ``manifests/base/rbac.yaml`` (a unit test
keeps them equal); each verb becomes one SubjectAccessReview for the user the ccm runs as. A
SubjectAccessReview needs no impersonation right, only ``create subjectaccessreviews`` for the
user running the doctor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ccm import errors, names
from ccm.doctor import model
from ccm.doctor.model import Finding, Verdict
from ccm.kube import client as kclient

__all__ = ["CLUSTER_RULES", "LEASE_NAME", "NAMESPACE_RULES", "Permission", "permissions", "rbac"]

# Stands for the leader-election Lease name (--leader-elect-resource-name) in the table.
LEASE_NAME = "<lease>"

# (apiGroup, resource[/subresource], verbs, resourceNames), as in the ClusterRole.
CLUSTER_RULES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("", "nodes", ("get", "list", "watch", "patch", "delete"), ()),
    ("", "nodes/status", ("patch",), ()),
    ("", "services", ("list", "watch"), ()),
    ("", "services/status", ("patch",), ()),
    ("", "events", ("create", "patch"), ()),
    ("authentication.k8s.io", "tokenreviews", ("create",), ()),
    ("authorization.k8s.io", "subjectaccessreviews", ("create",), ()),
)
_CLIENTS = tuple(sorted({c.client_name for c in names.CONTROLLERS}))
# The same, for the Role in the leader-election namespace.
NAMESPACE_RULES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("coordination.k8s.io", "leases", ("create",), ()),
    ("coordination.k8s.io", "leases", ("get", "update", "watch"), (LEASE_NAME,)),
    ("", "serviceaccounts", ("create",), ()),
    ("", "serviceaccounts", ("get",), _CLIENTS),
    ("", "serviceaccounts/token", ("create",), _CLIENTS),
)


@dataclass(frozen=True, slots=True)
class Permission:
    group: str
    resource: str  # with its subresource: "nodes/status"
    verb: str
    name: str = ""
    namespace: str = ""

    def __str__(self) -> str:
        where = f" -n {self.namespace}" if self.namespace else ""
        named = f"/{self.name}" if self.name else ""
        group = f".{self.group}" if self.group else ""
        return f"{self.verb} {self.resource}{group}{named}{where}"

    def attributes(self) -> dict[str, Any]:
        resource, _, sub = self.resource.partition("/")
        attrs: dict[str, Any] = {"group": self.group, "resource": resource, "verb": self.verb}
        for key, value in (
            ("subresource", sub),
            ("name", self.name),
            ("namespace", self.namespace),
        ):
            if value:
                attrs[key] = value
        return attrs


def permissions(scope: model.Scope) -> Iterator[Permission]:
    """Every permission the ccm needs, with the scope's Lease name and namespace."""
    for group, resource, verbs, resource_names in CLUSTER_RULES:
        for verb in verbs:
            for name in resource_names or ("",):
                yield Permission(group, resource, verb, name)
    for group, resource, verbs, resource_names in NAMESPACE_RULES:
        for verb in verbs:
            for name in resource_names or ("",):
                name = scope.lease_name if name == LEASE_NAME else name
                yield Permission(group, resource, verb, name, scope.lease_namespace)


def _groups(user: str) -> list[str]:
    """The groups the apiserver gives a ServiceAccount's token (none for another user)."""
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return [
            "system:serviceaccounts",
            f"system:serviceaccounts:{parts[2]}",
            "system:authenticated",
        ]
    return ["system:authenticated"]


async def rbac(ctx: model.Context) -> Finding:
    user = ctx.scope.rbac_user
    question = f"May {user} make every call the ccm makes?"
    denied = []
    wanted = list(permissions(ctx.scope))
    for perm in wanted:
        body = {
            "apiVersion": kclient.SUBJECTACCESSREVIEWS.api_version,
            "kind": kclient.SUBJECTACCESSREVIEWS.kind,
            "spec": {
                "user": user,
                "groups": _groups(user),
                "resourceAttributes": perm.attributes(),
            },
        }
        review = await ctx.client.create(kclient.SUBJECTACCESSREVIEWS, body)
        status = review.get("status") if isinstance(review, dict) else None
        if not isinstance(status, dict) or "allowed" not in status:
            raise errors.KubeError("SubjectAccessReview answered without status.allowed")
        if not status.get("allowed"):
            denied.append(str(perm))
    if not denied:
        return Finding(
            check="rbac",
            question=question,
            verdict=Verdict.OK,
            summary=f"all {len(wanted)} permission(s) granted",
        )
    return Finding(
        check="rbac",
        question=question,
        verdict=Verdict.FAIL,
        summary=f"{len(denied)} of {len(wanted)} permission(s) denied",
        objects=tuple(denied),
        fix=(
            "apply manifests/base/rbac.yaml (Role resourceNames must list "
            "--leader-elect-resource-name); --as names the user to check"
        ),
    )
