"""Secure serving on the real control plane: health paths are open; /metrics needs a token whose
user has ``get`` on the non-resource URL /metrics (delegated TokenReview + SubjectAccessReview)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon

from .conftest import FakeCloudFiles


def test_metrics_requires_delegated_authn_and_authz(
    control_plane: ControlPlane,
    k8s_admin: Any,
    kube_namespace: str,
    unique_name: Callable[..., str],
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
) -> None:
    from kubernetes import client

    reader, other = unique_name("reader"), unique_name("other")
    core = client.CoreV1Api(k8s_admin)
    for sa in (reader, other):
        core.create_namespaced_service_account(kube_namespace, {"metadata": {"name": sa}})
    role = unique_name("metrics-reader")
    rbac = client.RbacAuthorizationV1Api(k8s_admin)
    rbac.create_cluster_role(
        {
            "metadata": {"name": role},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": reader, "namespace": kube_namespace}],
        }
    )
    try:
        good = control_plane.service_account_token(kube_namespace, reader)
        bad = control_plane.service_account_token(kube_namespace, other)
        daemon = daemon_factory(fake_cloud_files())

        assert daemon.get("/healthz")[0] == 200
        # /readyz waits for the informers of the leader: give them their first list.
        deadline = time.monotonic() + 30
        while daemon.get("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemon.get("/readyz")[0] == 200
        assert daemon.get("/livez")[0] == 200
        assert daemon.get("/metrics")[0] == 401
        assert daemon.get("/metrics", token="not-a-real-token")[0] == 401
        assert daemon.get("/metrics", token=bad)[0] == 403
        status, body = daemon.get("/metrics", token=good)
        assert status == 200
        assert "workqueue_adds_total" in body
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
