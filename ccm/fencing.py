"""Fencing: a replica that may no longer be the leader writes nothing.

A leader can be paused past its lease (SIGSTOP, a frozen VM, a blocked event loop) and resume
after a standby took over. Its controllers then still hold work decided on the old state: a Node
patch, a route deletion, a load balancer update. client-go's answer is a leader check right before
acting; ccm makes it one gate that every write passes:

* the Kubernetes client's write verbs (create, update, patch, delete: :mod:`ccm.kube.client`);
* the cloud calls that change the cloud (:data:`MUTATING_CLOUD_CALLS`, checked by
  ``ccm.controllers.base.call_cloud``).

The gate is a context variable. The controller manager installs the leader elector's check with
:func:`guard` at the start of the code that runs while leading; every task created from there
(controllers, event recorders, the provider's own tasks) inherits it, while the elector's Lease
renewals, which run outside, are never gated. Without leader election nothing is installed and
:func:`check` does nothing. A refused write raises :class:`NotLeaderError`; the check that refused
it also makes the elector step down (the process exits 1, as on any lost lease).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Final

from ccm.errors import KubeError

__all__ = ["MUTATING_CLOUD_CALLS", "NotLeaderError", "check", "guard"]

#: The cloud calls (by the name ``call_cloud`` is given) that change the cloud.
MUTATING_CLOUD_CALLS: Final = frozenset(
    {
        "ensure_load_balancer",
        "update_load_balancer",
        "ensure_load_balancer_deleted",
        "create_route",
        "delete_route",
    }
)

_GUARD: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "ccm_write_guard", default=None
)


class NotLeaderError(KubeError):
    """A write was refused: this replica's lease lapsed (or it stopped leading) before it acted.

    A :class:`ccm.errors.KubeError` (a request that never reached the apiserver), so every caller
    that copes with a failed write (event recorders, credential refresh, the controllers' retry
    switch) copes with this one; retrying it is pointless, the process is stepping down.
    """


def check() -> None:
    """Raise :class:`NotLeaderError` if the installed guard refuses writes; else return."""
    current = _GUARD.get()
    if current is not None:
        current()


@contextlib.contextmanager
def guard(check_fn: Callable[[], None]) -> Iterator[None]:
    """Gate every write made in this context (and the tasks created in it) by ``check_fn``, which
    raises :class:`NotLeaderError` to refuse."""
    token = _GUARD.set(check_fn)
    try:
        yield
    finally:
        _GUARD.reset(token)
