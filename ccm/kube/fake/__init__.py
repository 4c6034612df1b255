"""An in-memory Kubernetes apiserver and the :class:`FakeKubeClient` built on it, for unit tests.

Ports the role of client-go's ``kubernetes/fake`` clientset (recorded actions, injectable errors,
reactors, a working watch) but keeps the real request path: :class:`FakeKubeClient` *is* a
:class:`ccm.kube.client.KubeClient` whose transport is :class:`FakeApiServer`, so paths, query
parameters, JSON encoding, error translation (a ``Status`` body → :class:`ccm.errors.NotFoundError`
…) and watch decoding are the production code. Objects cross the boundary as JSON: nothing a test or
a controller does to a returned dict can change the stored object.

Modules: :mod:`~ccm.kube.fake.server` (the apiserver), :mod:`~ccm.kube.fake.store` (its objects,
history and watches), :mod:`~ccm.kube.fake.patches`, :mod:`~ccm.kube.fake.selectors`,
:mod:`~ccm.kube.fake.status`; :class:`FakeKubeClient` is here.

Use it with the real :class:`ccm.kube.informer.Informer`::

    kube = FakeKubeClient()
    kube.put_object(client.NODES, {"metadata": {"name": "n1"}})   # seed; no action recorded
    nodes = informer.Informer(kube, client.NODES)
    ...                                                          # run the controller
    assert ("patch", "nodes", "n1", "status") in kube.actions
    kube.inject_error("patch", "nodes", 409, times=1)            # next patch of a node conflicts
    kube.get_object(client.NODES, "n1")                          # the stored object (a copy)

``actions`` holds ``Action(verb, resource, name, subresource)`` tuples with Kubernetes verbs:
``get list watch create update patch delete`` (``replace()`` is ``update``). ``requests`` holds the
full :class:`FakeRequest` (namespace, decoded body, patch type, query, User-Agent).

What it does like the apiserver: resourceVersion from one global counter (a no-op write keeps it);
uid, creationTimestamp, generation; 404 NotFound, 409 AlreadyExists, 409 Conflict on a stale
``metadata.resourceVersion`` (update, and patches that carry one); the ``status`` subresource of
nodes, services and namespaces (main writes keep the old status, status writes change only
status); finalizers (delete sets ``deletionTimestamp``; removing the last finalizer deletes; no new
finalizers while deleting); label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
``!key``) and field selectors (``=``, ``==``, ``!=`` on any dotted path) for list and watch; paged
lists (``limit``/``continue``; an expired token gives 410); watch from a resourceVersion with the
history of events, 410 Expired for one older than :meth:`FakeApiServer.compact`, ``""``/``"0"`` for
synthetic ADDED events, bookmarks on :meth:`FakeApiServer.send_bookmarks`, server-side
``timeoutSeconds`` on the loop clock; ``serviceaccounts/token``, TokenReview (not authenticated)
and SubjectAccessReview (allowed) answered by default reactors; ``/healthz``, ``/readyz``,
``/livez``, ``/version``.

Limits (by design): no admission, defaulting or validation beyond the above (objects may be created
in namespaces that do not exist; create keeps a given status); lists ignore ``resourceVersion`` and
pages are not a snapshot; strategic merge patch knows the merge keys controllers use —
``metadata.finalizers`` (set), ``metadata.ownerReferences`` (uid), ``spec.podCIDRs`` (set),
``spec.ports`` (port), ``spec.containers`` (name), ``status.addresses`` and ``status.conditions``
(type) — every other list is replaced, as for ``spec.taints`` upstream; it honours ``null``,
``$patch: replace|delete``, ``$retainKeys`` and ``$deleteFromPrimitiveList`` and ignores
``$setElementOrder``; server-side apply is approximated by a strategic merge of the applied object
(creating it if absent), without field ownership; JSON patch supports add, remove, replace, move,
copy and test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube.fake.patches import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from ccm.kube.fake.selectors import match_field_selector, match_label_selector
from ccm.kube.fake.server import DEFAULT_RESOURCES, WRITE_VERBS, FakeApiServer
from ccm.kube.fake.status import Obj
from ccm.kube.fake.store import Action, FakeRequest, Reactor

__all__ = [
    "DEFAULT_RESOURCES",
    "Action",
    "FakeApiServer",
    "FakeKubeClient",
    "FakeRequest",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "match_field_selector",
    "match_label_selector",
]


class FakeKubeClient(kclient.KubeClient):
    """A :class:`ccm.kube.client.KubeClient` over an in-memory :class:`FakeApiServer`.

    No client-side throttling unless ``qps`` is given. :meth:`for_component` clients share the
    server (and so the recorded actions; ``requests[i].user_agent`` tells them apart).
    """

    def __init__(
        self,
        *,
        server: FakeApiServer | None = None,
        qps: float = 0.0,
        burst: int = 1,
        user_agent: str = "ccm",
        request_timeout: float = 30.0,
    ) -> None:
        self.server = server if server is not None else FakeApiServer()
        super().__init__(
            self.server,
            qps=qps,
            burst=burst,
            user_agent=user_agent,
            request_timeout=request_timeout,
        )

    # Conveniences, all delegating to the server.

    @property
    def actions(self) -> list[Action]:
        """``Action(verb, resource, name, subresource)`` of every request so far."""
        return self.server.actions

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def writes(self) -> list[Action]:
        """The actions that change something (create, update, patch, delete)."""
        return [a for a in self.server.actions if a.verb in WRITE_VERBS]

    def clear_actions(self) -> None:
        self.server.clear_actions()

    def inject_error(
        self,
        verb: str,
        resource: str,
        error: errors.KubeError | int,
        *,
        name: str | None = None,
        subresource: str | None = None,
        times: int | None = None,
    ) -> None:
        self.server.inject_error(
            verb, resource, error, name=name, subresource=subresource, times=times
        )

    def clear_errors(self) -> None:
        self.server.clear_errors()

    def add_reactor(self, verb: str, resource: str, reactor: Reactor) -> None:
        self.server.add_reactor(verb, resource, reactor)

    def put_object(self, res: kclient.Resource, obj: Mapping[str, Any]) -> Obj:
        return self.server.put_object(res, obj)

    def remove_object(self, res: kclient.Resource, name: str, namespace: str | None = None) -> bool:
        return self.server.remove_object(res, name, namespace)

    def get_object(
        self, res: kclient.Resource, name: str, namespace: str | None = None
    ) -> Obj | None:
        return self.server.get_object(res, name, namespace)

    def list_objects(self, res: kclient.Resource, namespace: str | None = None) -> list[Obj]:
        return self.server.list_objects(res, namespace)
