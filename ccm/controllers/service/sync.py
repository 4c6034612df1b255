"""One Service's sync (upstream ``syncService``), as a sequence of named steps.

:meth:`ServiceSync.sync_service` takes a key and follows one of two paths:

- the Service is gone from the informer: delete the load balancer of the copy the controller
  kept (:meth:`~ServiceSync._process_service_deletion`);
- it is there (:meth:`~ServiceSync._sync_load_balancer_if_needed`), and either it no longer wants
  a load balancer (delete if it exists → remove our finalizer → clear the status), or it does
  (add our finalizer → ensure the load balancer on the backend Nodes → write the status).

Every step that fails raises a :class:`ServiceSyncError` naming the step (a
:class:`ccm.errors.RetryAfterError` keeps its type, so the failure switch requeues it after its
delay); the caller records it as a Warning Event ``SyncLoadBalancerFailed``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Mapping
from typing import Any

from ccm import clock, logs, wellknown
from ccm.cloudprovider import LoadBalancerStatus, Service
from ccm.controllers import failures, servicehelpers
from ccm.controllers.service.state import ServiceState, ServiceSyncError
from ccm.errors import ImplementedElsewhereError, NotFoundError
from ccm.kube import client as kclient

__all__ = ["Operation", "ServiceSync"]

_log = logging.getLogger("ccm.controllers.service")


class Operation(enum.Enum):
    DELETE = "delete"
    ENSURE = "ensure"


def _failed(step: str, exc: BaseException) -> Exception:
    """The error of a failed step: ``step: exc``, typed as :func:`failures.with_context` says."""
    return failures.with_context(f"{step}: {exc}", exc, ServiceSyncError)


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class ServiceSync(ServiceState):
    """The Service path of the service controller."""

    async def sync_service(self, key: str) -> None:
        """Reconcile one Service key (upstream ``syncService``)."""
        start = clock.monotonic()
        try:
            servicehelpers.split_key(key)
            svc = self._services.get(key)
            if svc is None:
                await self._process_service_deletion(key)
            else:
                await self._process_service_create_or_update(svc, key)
        finally:
            _log.log(
                logs.v(4),
                'Finished syncing service "%s" (%.3fs)',
                key,
                clock.monotonic() - start,
            )

    # --- the Service is gone ----------------------------------------------------------------------

    async def _process_service_deletion(self, key: str) -> None:
        cached = self.cache.get(key)
        if cached is None:
            return  # never had a load balancer, or it is deleted already
        _log.log(
            logs.v(2),
            "Service %s has been deleted. Attempting to cleanup load balancer resources",
            key,
        )
        async with self._lock(key):
            await self._process_load_balancer_delete(cached, key)
        self._forget(key)

    async def _process_load_balancer_delete(self, svc: Mapping[str, Any], key: str) -> None:
        """Delete the load balancer of a Service we no longer see (legacy, cache-based path)."""
        if not servicehelpers.wants_load_balancer(svc):
            return
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_DELETING_LB,
            wellknown.EVENT_MESSAGE_DELETING_LB,
        )
        try:
            await self._call(
                self._balancer.ensure_load_balancer_deleted(self._cluster_name, Service(svc)),
                "ensure_load_balancer_deleted",
            )
        except Exception as exc:
            self._event(
                svc,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_DELETE_LB_FAILED,
                f"Error deleting load balancer: {exc}",
            )
            raise
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_DELETED_LB,
            wellknown.EVENT_MESSAGE_DELETED_LB,
        )

    # --- the Service is there ---------------------------------------------------------------------

    async def _process_service_create_or_update(self, svc: Mapping[str, Any], key: str) -> None:
        async with self._lock(key):
            cached = self.cache.get(key)
            if cached is not None and _uid(cached) != _uid(svc):
                # Deleted and re-created under the same name (possible without the finalizer):
                # the old load balancer goes first.
                await self._process_load_balancer_delete(cached, key)
            # Always cache: a delete whose Service is already gone needs this copy.
            self.cache[key] = svc
            urgent = (
                self.gate.urgent()
                if not servicehelpers.is_served(svc)
                else contextlib.nullcontext()
            )
            try:
                with urgent:
                    op = await self._sync_load_balancer_if_needed(svc, key)
            except Exception as exc:
                self._event(
                    svc,
                    wellknown.EVENT_WARNING,
                    wellknown.EVENT_REASON_SYNC_LB_FAILED,
                    f"Error syncing load balancer: {exc}",
                )
                raise
        if op is Operation.DELETE:
            self._forget(key)  # only after the load balancer is really gone

    async def _sync_load_balancer_if_needed(self, svc: Mapping[str, Any], key: str) -> Operation:
        """Upstream ``syncLoadBalancerIfNeeded``: the delete path or the ensure path, each a
        sequence of steps that ends with the Service status."""
        view = Service(svc)
        if servicehelpers.should_delete_load_balancer(svc):
            await self._delete_load_balancer_if_exists(svc, view, key)
            # The finalizer goes only once the load balancer is gone.
            try:
                await self._remove_finalizer(svc)
            except Exception as exc:
                raise _failed("failed to remove load balancer cleanup finalizer", exc) from exc
            self._event(
                svc,
                wellknown.EVENT_NORMAL,
                wellknown.EVENT_REASON_DELETED_LB,
                wellknown.EVENT_MESSAGE_DELETED_LB,
            )
            await self._write_status(svc, {})
            return Operation.DELETE

        _log.log(logs.v(2), "Ensuring load balancer for service %s", key)
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_ENSURING_LB,
            wellknown.EVENT_MESSAGE_ENSURING_LB,
        )
        # The finalizer comes before any cloud call: no load balancer can outlive its Service.
        try:
            await self._add_finalizer(svc)
        except Exception as exc:
            raise _failed("failed to add load balancer cleanup finalizer", exc) from exc
        try:
            status = await self._ensure_load_balancer(svc, view, key)
        except ImplementedElsewhereError:
            _log.log(
                logs.v(4),
                "LoadBalancer for service %s implemented by a different controller %s, "
                "Ignoring error",
                key,
                self._cloud.provider_name,
            )
            return Operation.ENSURE
        except Exception as exc:
            raise _failed("failed to ensure load balancer", exc) from exc
        if status is None:
            raise ServiceSyncError("service status returned by EnsureLoadBalancer is nil")
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_ENSURED_LB,
            wellknown.EVENT_MESSAGE_ENSURED_LB,
        )
        await self._write_status(svc, status.to_dict())
        return Operation.ENSURE

    # --- the steps --------------------------------------------------------------------------------

    async def _delete_load_balancer_if_exists(
        self, svc: Mapping[str, Any], view: Service, key: str
    ) -> None:
        try:
            status = await self._call(
                self._balancer.get_load_balancer(self._cluster_name, view), "get_load_balancer"
            )
        except Exception as exc:
            raise _failed("failed to check if load balancer exists before cleanup", exc) from exc
        if status is None:
            return
        _log.log(logs.v(2), "Deleting existing load balancer for service %s", key)
        self._event(
            svc,
            wellknown.EVENT_NORMAL,
            wellknown.EVENT_REASON_DELETING_LB,
            wellknown.EVENT_MESSAGE_DELETING_LB,
        )
        try:
            await self._call(
                self._balancer.ensure_load_balancer_deleted(self._cluster_name, view),
                "ensure_load_balancer_deleted",
            )
        except ImplementedElsewhereError:
            _log.log(
                logs.v(4),
                "LoadBalancer for service %s implemented by a different controller %s, "
                "Ignoring error on deletion",
                key,
                self._cloud.provider_name,
            )
        except Exception as exc:
            raise _failed("failed to delete load balancer", exc) from exc

    async def _ensure_load_balancer(
        self, svc: Mapping[str, Any], view: Service, key: str
    ) -> LoadBalancerStatus | None:
        nodes = self.backend_nodes()
        if not nodes:
            self._event(
                svc,
                wellknown.EVENT_WARNING,
                wellknown.EVENT_REASON_UNAVAILABLE_LB,
                wellknown.EVENT_MESSAGE_UNAVAILABLE_LB,
            )
        self.last_synced_nodes[key] = nodes
        status: LoadBalancerStatus | None = await self._call(
            self._balancer.ensure_load_balancer(self._cluster_name, view, self._views(nodes)),
            "ensure_load_balancer",
        )
        return status

    async def _write_status(self, svc: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        previous: Mapping[str, Any] = (svc.get("status") or {}).get("loadBalancer") or {}
        try:
            await self._patch_status(svc, previous, new)
        except NotFoundError:
            pass  # the Service went away right after its finalizer was removed
        except Exception as exc:
            raise _failed("failed to update load balancer status", exc) from exc

    async def _patch(self, svc: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        meta = svc.get("metadata") or {}
        await self._client.patch(
            kclient.SERVICES,
            str(meta.get("name")),
            body,
            namespace=str(meta.get("namespace")),
            subresource="status",
            patch_type="strategic",
        )

    async def _add_finalizer(self, svc: Mapping[str, Any]) -> None:
        if servicehelpers.has_lb_finalizer(svc):
            return
        _log.log(logs.v(2), "Adding finalizer to service %s", servicehelpers.service_key(svc))
        await self._patch(svc, servicehelpers.add_finalizer_patch())

    async def _remove_finalizer(self, svc: Mapping[str, Any]) -> None:
        if not servicehelpers.has_lb_finalizer(svc):
            return
        _log.log(logs.v(2), "Removing finalizer from service %s", servicehelpers.service_key(svc))
        await self._patch(svc, servicehelpers.remove_finalizer_patch())

    async def _patch_status(
        self, svc: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        if servicehelpers.load_balancer_status_equal(previous, new):
            return
        _log.log(logs.v(2), "Patching status for service %s", servicehelpers.service_key(svc))
        await self._patch(svc, servicehelpers.status_patch(new))
