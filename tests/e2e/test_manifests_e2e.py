"""The shipped manifests on the real control plane: every rendered object of every overlay is
accepted by kube-apiserver (server-side apply, ``dryRun=All``: validation, defaulting and admission
run, nothing is stored), and what the manifests rely on without shipping it exists there: the
bootstrapped per-controller roles used with ``--use-service-account-credentials``, the
``extension-apiserver-authentication-reader`` Role and the ``system-cluster-critical``
PriorityClass."""

from __future__ import annotations

from typing import Any

import pytest

from ccm import names
from ccm.testing import assets
from devtools import helm, manifests

OVERLAYS = ["fake", "private-cloud"]
#: The kustomize overlays and the Helm chart's example value sets ("helm:<name>").
RENDERINGS = [*OVERLAYS, *(f"helm:{name}" for name in helm.EXAMPLE_VALUES)]
FIELD_MANAGER = "ccm-manifests-e2e"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    assets.find_kustomize()
    out = {overlay: manifests.render(overlay) for overlay in OVERLAYS}
    for name, values in helm.EXAMPLE_VALUES.items():
        out[f"helm:{name}"] = helm.render(values)
    return out


@pytest.fixture
def dynamic(k8s_admin: Any) -> Any:
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(k8s_admin)


def _dry_run_apply(dynamic: Any, obj: dict[str, Any]) -> Any:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    return dynamic.server_side_apply(
        resource,
        body=obj,
        namespace=obj["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        dry_run="All",
    )


@pytest.mark.parametrize("overlay", RENDERINGS)
def test_every_rendered_object_is_accepted_by_the_apiserver(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], dynamic: Any
) -> None:
    from kubernetes.dynamic.exceptions import NotFoundError

    objects = rendered[overlay]
    assert objects
    for obj in objects:
        answer = _dry_run_apply(dynamic, obj).to_dict()
        assert answer["kind"] == obj["kind"]
        assert answer["metadata"]["name"] == obj["metadata"]["name"]
        assert answer["metadata"].get("namespace") == obj["metadata"].get("namespace")
        managers = {m["manager"] for m in answer["metadata"].get("managedFields") or ()}
        assert FIELD_MANAGER in managers, obj["kind"]

    ds = manifests.daemonset(objects)
    answer = _dry_run_apply(dynamic, ds).to_dict()
    # Defaulted by the apiserver, so the object really went through the storage path.
    assert answer["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert answer["spec"]["revisionHistoryLimit"] == 10
    # dryRun=All stored nothing.
    daemonsets = dynamic.resources.get(api_version="apps/v1", kind="DaemonSet")
    with pytest.raises(NotFoundError):
        daemonsets.get(name=ds["metadata"]["name"], namespace=ds["metadata"]["namespace"])


def test_dry_run_apply_rejects_an_invalid_daemonset(
    rendered: dict[str, list[dict[str, Any]]], dynamic: Any
) -> None:
    """The negative control: the same path refuses what the apiserver would refuse."""
    from kubernetes.dynamic.exceptions import UnprocessibleEntityError

    ds = manifests.daemonset(rendered["fake"])
    broken = {**ds, "spec": {**ds["spec"], "selector": {"matchLabels": {"k8s-app": "other"}}}}
    with pytest.raises(UnprocessibleEntityError, match="selector"):
        _dry_run_apply(dynamic, broken)


def _allowed(
    k8s_admin: Any, user: str, verb: str, resource: str, namespace: str, group: str = ""
) -> bool:
    from kubernetes import client

    res, _, sub = resource.partition("/")
    review = client.AuthorizationV1Api(k8s_admin).create_subject_access_review(
        {
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": res,
                    "subresource": sub,
                    "namespace": namespace,
                    "name": "x",
                },
            }
        }
    )
    return bool(review.status.allowed)


# The writes each controller makes under its own identity with --use-service-account-credentials
# (ccm/names.py client names): granted by roles kube-apiserver bootstraps, not by the manifests.
_CONTROLLER_WRITES = {
    "node-controller": [
        ("get", "nodes", ""),
        ("patch", "nodes", ""),
        ("delete", "nodes", ""),
        ("patch", "nodes/status", ""),
    ],
    "service-controller": [("patch", "services/status", "default")],
    "route-controller": [("patch", "nodes/status", "")],
}


@pytest.mark.parametrize("client_name", sorted(_CONTROLLER_WRITES))
def test_per_controller_identities_are_granted_by_bootstrapped_roles(
    client_name: str, k8s_admin: Any
) -> None:
    assert client_name in {c.client_name for c in names.CONTROLLERS}
    user = f"system:serviceaccount:kube-system:{client_name}"
    for verb, resource, namespace in [
        *_CONTROLLER_WRITES[client_name],
        ("create", "events", "default"),
        ("patch", "events", "default"),
    ]:
        assert _allowed(k8s_admin, user, verb, resource, namespace), (verb, resource)
    # and nothing as broad as secrets
    assert not _allowed(k8s_admin, user, "get", "secrets", "kube-system")


def test_cluster_objects_the_manifests_reference_exist(k8s_admin: Any) -> None:
    from kubernetes import client

    role = client.RbacAuthorizationV1Api(k8s_admin).read_namespaced_role(
        "extension-apiserver-authentication-reader", "kube-system"
    )
    assert any("configmaps" in (r.resources or ()) for r in role.rules)
    priority = client.SchedulingV1Api(k8s_admin).read_priority_class("system-cluster-critical")
    assert priority.value > 0
