"""pytest plugin of ccm: a real kube-apiserver and etcd as fixtures (entry point ``pytest11: ccm``).

Fixtures:

``control_plane`` (session)
    A started :class:`ccm.testing.controlplane.ControlPlane`, one per session (per xdist worker),
    started the first time a test asks for it and stopped at the end of the session. Override the
    session fixture ``control_plane_kwargs`` to pass constructor arguments (e.g.
    ``{"extra_apiserver_args": ["--max-requests-inflight=0"]}``).
``k8s_admin`` (function)
    An official ``kubernetes.client.ApiClient`` authenticated as the admin (``system:masters``);
    closed after the test. The synchronous ``kubernetes`` package is the tests' independent observer
    of what ccm (built on ``kubernetes_asyncio``) did.
``kube_core`` (function)
    A ``kubernetes.client.CoreV1Api`` on ``k8s_admin``; after the test, deletes the Nodes that
    :func:`ccm.testing.kubelet.register_node` registered through it.
``kube_namespace`` (function)
    The name of a fresh namespace holding a ``default`` ServiceAccount. Removed after the test with
    :func:`purge_namespace`, since no kube-controller-manager runs to finalise namespaces.
``unique_name`` (function)
    A factory ``unique_name(prefix="") -> str`` of DNS-1035 labels (valid names for namespaces,
    Services, Nodes…), unique within the session and readable: ``svc-lb-is-created-3f2a-0``.

Also registers the ``e2e`` marker. When the selected tests need the control plane, the binaries are
found (or built, minutes on the first run) right after collection, outside any per-test timeout.
The ``kubernetes`` package is imported lazily, so this plugin loads without the dev extras.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ccm import errors
from ccm.testing import assets, controlplane, kubelet

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "control_plane",
    "control_plane_kwargs",
    "k8s_admin",
    "kube_core",
    "kube_namespace",
    "purge_namespace",
    "unique_name",
]

_ASSETS_ERROR = pytest.StashKey[errors.CCMError]()
_SESSION_TOKEN = secrets.token_hex(2)
_SEQUENCE = itertools.count()
_MAX_LABEL = 63
_DISCOVERY_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``e2e`` marker."""
    config.addinivalue_line(
        "markers", "e2e: needs the real kube-apiserver and etcd (ccm.testing.controlplane)"
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Find or build the binaries before any test runs, if a selected test needs the control plane.

    A cold build takes minutes; done here it is visible and not charged to a test's timeout. A
    failure is remembered and reported by the ``control_plane`` fixture, so that unit tests still
    run.
    """
    config = session.config
    if config.option.collectonly:
        return
    if not any("control_plane" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    try:
        if capture is not None:
            with capture.global_and_fixture_disabled():
                assets.find_assets()
        else:
            assets.find_assets()
    except errors.CCMError as exc:
        config.stash[_ASSETS_ERROR] = exc


@pytest.fixture(scope="session")
def control_plane_kwargs() -> dict[str, Any]:
    """Keyword arguments for the session's :class:`ControlPlane`; override it in a conftest."""
    return {}


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, control_plane_kwargs: dict[str, Any]
) -> Iterator[controlplane.ControlPlane]:
    """The session's real control plane (etcd + kube-apiserver on 127.0.0.1), started lazily."""
    if (error := request.config.stash.get(_ASSETS_ERROR, None)) is not None:
        pytest.fail(f"control-plane binaries unavailable: {error}", pytrace=False)
    plane = controlplane.ControlPlane(**control_plane_kwargs)
    try:
        plane.start()
    except errors.CCMError as exc:
        pytest.fail(f"control plane did not start: {exc}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def k8s_admin(control_plane: controlplane.ControlPlane) -> Iterator[ApiClient]:
    """An official ``kubernetes`` ``ApiClient`` for the admin user; closed after the test."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = control_plane.url
    configuration.ssl_ca_cert = str(control_plane.ca_cert_path)
    configuration.cert_file = str(control_plane.admin_cert_path)
    configuration.key_file = str(control_plane.admin_key_path)
    api_client = client.ApiClient(configuration)
    try:
        yield api_client
    finally:
        api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def kube_core(k8s_admin: ApiClient) -> Iterator[Any]:
    """A ``CoreV1Api`` for the admin; deletes the Nodes registered through it after the test."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    try:
        yield core
    finally:
        kubelet.delete_registered(core)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory of DNS-1035 labels, unique in the session, carrying the test's name."""
    base = _label(request.node.name.removeprefix("test_"))

    def make(prefix: str = "") -> str:
        suffix = f"{_SESSION_TOKEN}-{next(_SEQUENCE)}"
        room = _MAX_LABEL - len(suffix) - 2  # a separator, and a letter if the name needs one
        head = _label(prefix)[:room].strip("-")
        room -= len(head) + 1 if head else 0
        middle = base[: max(room, 0)].strip("-")
        name = "-".join(part for part in (head, middle, suffix) if part)
        return name if name[0].isalpha() else f"x{name}"

    return make


@pytest.fixture
def kube_namespace(
    request: pytest.FixtureRequest, k8s_admin: ApiClient, unique_name: Callable[..., str]
) -> Iterator[str]:
    """A fresh namespace (with a ``default`` ServiceAccount); purged after the test."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    name = unique_name("ns")
    annotations = {"ccm.testing/test": request.node.nodeid}
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, annotations=annotations))
    )
    try:
        # The service-account controller of kube-controller-manager would create it; Pods need it
        # because the ServiceAccount admission plugin is on.
        core.create_namespaced_service_account(
            name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
        )
        yield name
    finally:
        purge_namespace(k8s_admin, name)


def purge_namespace(api_client: ApiClient, name: str) -> None:
    """Delete a namespace and everything in it, now, without kube-controller-manager.

    Does what the namespace controller would: deletes every namespaced resource type's collection
    (grace period 0, so Pods bound to a node without kubelet go too), strips the finalizers of
    objects that stay (a controller under test may have left some), then deletes the namespace and
    finalises it. Informers of a later test therefore never see this test's objects.
    """
    options = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    quoted = urllib.parse.quote(name)
    for prefix, resource in _namespaced_resources(api_client):
        path = f"{prefix}/namespaces/{quoted}/{resource}"
        status, deleted = _call(api_client, "DELETE", path, body=options)
        if status == 404:
            continue
        for item in (deleted or {}).get("items") or ():
            if item.get("metadata", {}).get("finalizers"):
                item_name = urllib.parse.quote(item["metadata"]["name"])
                _call(
                    api_client,
                    "PATCH",
                    f"{path}/{item_name}",
                    body={"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json",
                )
    status, namespace = _call(api_client, "DELETE", f"/api/v1/namespaces/{quoted}", body=options)
    if status == 404:
        return
    status, namespace = _call(api_client, "GET", f"/api/v1/namespaces/{quoted}")
    if status == 404:
        return
    namespace.setdefault("spec", {})["finalizers"] = []
    _call(api_client, "PUT", f"/api/v1/namespaces/{quoted}/finalize", body=namespace)


def _namespaced_resources(api_client: ApiClient) -> list[tuple[str, str]]:
    """(path prefix, resource) of every namespaced type that can be listed and deleted in bulk."""
    found: list[tuple[str, str]] = []
    for root in ("/api", "/apis"):
        _, discovery = _call(api_client, "GET", root, accept=_DISCOVERY_ACCEPT)
        for group in discovery.get("items") or ():
            versions = group.get("versions") or ()
            if not versions:
                continue
            preferred = versions[0]  # aggregated discovery lists the preferred version first
            group_name = group.get("metadata", {}).get("name", "")
            prefix = f"/apis/{group_name}/{preferred['version']}" if group_name else "/api/v1"
            for resource in preferred.get("resources") or ():
                verbs = resource.get("verbs") or ()
                if resource.get("scope") == "Namespaced" and "deletecollection" in verbs:
                    found.append((prefix, resource["resource"]))
    return found


def _call(
    api_client: ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
) -> tuple[int, Any]:
    """One raw request through the official client: (status, parsed JSON); 404 is (404, None)."""
    from kubernetes.client.exceptions import ApiException

    api: Any = api_client  # the two generations of the client have different signatures
    headers = {"Accept": accept, "Content-Type": content_type}
    if hasattr(api, "param_serialize"):  # kubernetes >= 37 (openapi-generator v7)
        request = api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = api.call_api(*request)
        data = response.read()
        status = int(response.status)
    else:  # kubernetes < 37 (python-legacy generator); raises ApiException on non-2xx
        try:
            response, status, _ = api.call_api(
                path,
                method,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            status, data = 404, b""
        else:
            data = response.data
    if status == 404:
        return 404, None
    if status >= 400:
        raise ApiException(status=status, reason=f"{method} {path}: {data[:500]!r}")
    return status, json.loads(data or b"null")


def _label(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")
