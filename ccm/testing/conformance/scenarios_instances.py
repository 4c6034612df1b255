"""InstancesV2 scenarios: node initialization, address refresh, existence, shutdown, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ccm import errors, wellknown
from ccm.cloudprovider import NodeAddress
from ccm.kube import client as kclient
from ccm.testing.conformance.context import Context, node_view
from ccm.testing.conformance.registry import _offered, scenario
from ccm.testing.conformance.results import NotOffered, RuleViolation

CAP = "instances-v2"


async def _record_versions(
    ctx: Context, name: str, created: dict[str, Any], seen: list[dict[str, Any]]
) -> None:
    """Record every version of Node ``name`` after ``created`` (to check the update order)."""
    rv = created.get("metadata", {}).get("resourceVersion", "0")
    with contextlib.suppress(errors.CCMError):
        async with contextlib.aclosing(
            ctx.client.watch(
                kclient.NODES,
                resource_version=rv,
                field_selector=f"metadata.name={name}",
                timeout_seconds=int(ctx.config.wait_timeout) + 5,
            )
        ) as events:
            async for event in events:
                if event.get("type") in ("ADDED", "MODIFIED"):
                    seen.append(event["object"])


def _taints(node: dict[str, Any]) -> set[str]:
    return {t.get("key", "") for t in node.get("spec", {}).get("taints") or []}


def _addresses(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(a["type"], a["address"]) for a in node.get("status", {}).get("addresses") or []}


async def _wait_initialized(ctx: Context, names: list[str]) -> None:
    """Wait until the Nodes lost the uninitialized taint; fail at once when node-initialization
    already failed in this run (waiting again would only repeat the same timeout)."""
    if ctx.notes.get("init-failed"):
        raise RuleViolation(
            "taint-removed", f"Nodes are not initialized: {ctx.notes['init-failed']}"
        )

    async def done() -> bool:
        for name in names:
            node = await ctx.get_node(name)
            if node is None or wellknown.TAINT_UNINITIALIZED in _taints(node):
                return False
        return True

    await ctx.wait_for(done, "taint-removed", f"Nodes {names} were not initialized")


@scenario(CAP, "node-initialization")
async def node_initialization(ctx: Context) -> None:
    """A tainted Node of a new machine gets providerID, addresses, type/zone/region labels, and
    loses the uninitialized taint (only once its labels are set)."""
    try:
        await _node_initialization(ctx)
    except RuleViolation as exc:
        ctx.notes["init-failed"] = str(exc)
        raise


async def _node_initialization(ctx: Context) -> None:
    cap = _offered(ctx, CAP)
    driver = ctx.need_driver()
    machine = await driver.create_machine(ctx.name("init"))
    prefix = f"{ctx.provider.provider_name}://"
    meta = await ctx.call("instance_metadata", cap.instance_metadata(node_view(machine.name)))
    if meta is None or not meta.provider_id:
        raise RuleViolation(
            "providerID-not-empty",
            f"instance_metadata for a Node without providerID returned an empty provider_id "
            f"(machine {machine.name})",
        )
    if not meta.provider_id.startswith(prefix):
        raise RuleViolation(
            "providerID-format",
            f"provider_id {meta.provider_id!r} does not start with {prefix!r}",
        )
    created = await ctx.create_node(machine)
    seen: list[dict[str, Any]] = []
    watcher = asyncio.create_task(_record_versions(ctx, machine.name, created, seen))

    async def initialized() -> dict[str, Any] | None:
        node = await ctx.get_node(machine.name)
        if node is None or wellknown.TAINT_UNINITIALIZED in _taints(node):
            return None
        return node

    node = await ctx.wait_for(
        initialized,
        "taint-removed",
        f"Node {machine.name} kept the {wellknown.TAINT_UNINITIALIZED} taint",
    )
    pid = node.get("spec", {}).get("providerID", "")
    if not pid:
        raise RuleViolation("providerID-not-empty", f"Node {machine.name} has no spec.providerID")
    if machine.provider_id and pid != machine.provider_id:
        raise RuleViolation(
            "providerID-matches-machine",
            f"Node {machine.name} got providerID {pid!r}, the machine is {machine.provider_id!r}",
        )
    labels = node.get("metadata", {}).get("labels") or {}
    expected = {
        wellknown.LABEL_INSTANCE_TYPE: machine.instance_type,
        wellknown.LABEL_ZONE: machine.zone,
        wellknown.LABEL_REGION: machine.region,
        **dict(machine.labels),
    }
    await asyncio.sleep(0.5)  # let the watch deliver the last versions
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    for version in seen:
        if wellknown.TAINT_UNINITIALIZED in _taints(version):
            continue
        version_labels = version.get("metadata", {}).get("labels") or {}
        if machine.instance_type is not None and (
            version_labels.get(wellknown.LABEL_INSTANCE_TYPE) != machine.instance_type
        ):
            raise RuleViolation(
                "labels-before-taint-removal",
                f"a version of Node {machine.name} had no uninitialized taint but no instance-type "
                "label yet: the taint must go only once the labels are set",
            )
    for key, value in expected.items():
        if value is not None and labels.get(key) != value:
            raise RuleViolation(
                "labels-before-taint-removal",
                f"Node {machine.name} lost its taint without label {key}={value!r} "
                f"(has {labels.get(key)!r})",
            )
    # Upstream writes status.addresses in a second request right after the one that removes the
    # taint, so the Node as it was at taint removal may not have them yet: wait for them.
    want = {(a.type, a.address) for a in machine.addresses}

    async def addressed() -> set[tuple[str, str]] | None:
        current = await ctx.get_node(machine.name)
        got = _addresses(current) if current is not None else set()
        return got if got and want <= got else None

    got: set[tuple[str, str]] = set()
    try:
        got = await ctx.wait_for(addressed, "addresses-set", "")
    except RuleViolation:
        current = await ctx.get_node(machine.name)
        got = _addresses(current) if current is not None else set()
    if not got:
        raise RuleViolation("addresses-set", f"Node {machine.name} has no status.addresses")
    missing = want - got
    if missing:
        raise RuleViolation(
            "addresses-set", f"Node {machine.name} lacks the machine's addresses {sorted(missing)}"
        )
    await ctx.delete_node(machine.name)


@scenario(CAP, "address-refresh")
async def address_refresh(ctx: Context) -> None:
    """When the machine's addresses change in the cloud, the Node's status.addresses follow."""
    _offered(ctx, CAP)
    driver = ctx.need_driver()
    machine = await driver.create_machine(ctx.name("addr"))
    await ctx.create_node(machine)
    await _wait_initialized(ctx, [machine.name])
    try:
        new = await driver.change_addresses(machine.name)
    except NotImplementedError:
        raise NotOffered("the driver cannot change a machine's addresses") from None
    want = {(a.type, a.address) for a in new}

    async def refreshed() -> bool:
        node = await ctx.get_node(machine.name)
        return node is not None and want <= _addresses(node)

    await ctx.wait_for(
        refreshed,
        "address-refresh",
        f"Node {machine.name} never got the new addresses {sorted(want)}",
    )
    await ctx.delete_node(machine.name)


async def _machine_and_view(ctx: Context, prefix: str) -> tuple[Any, Any, Any]:
    cap = _offered(ctx, CAP)
    driver = ctx.need_driver()
    machine = await driver.create_machine(ctx.name(prefix))
    meta = await ctx.call("instance_metadata", cap.instance_metadata(node_view(machine.name)))
    pid = machine.provider_id or (meta.provider_id if meta else "")
    return cap, machine, node_view(machine.name, pid, machine.addresses)


@scenario(CAP, "running-instance-exists")
async def running_exists(ctx: Context) -> None:
    """instance_exists is True and instance_shutdown False for a running machine."""
    cap, machine, view = await _machine_and_view(ctx, "run")
    if not await ctx.call("instance_exists", cap.instance_exists(view)):
        raise RuleViolation(
            "running-instance-exists", f"running machine {machine.name} reported as non-existent"
        )
    if await ctx.call("instance_shutdown", cap.instance_shutdown(view)):
        raise RuleViolation(
            "shutdown-detection", f"running machine {machine.name} reported as shut down"
        )


@scenario(CAP, "stopped-instance-exists")
async def stopped_exists(ctx: Context) -> None:
    """A stopped machine still exists (else the lifecycle controller deletes a live Node) and is
    reported shut down; started again, it is no longer shut down."""
    cap, machine, view = await _machine_and_view(ctx, "stop")
    driver = ctx.need_driver()
    await driver.stop_machine(machine.name)
    if not await ctx.call("instance_exists", cap.instance_exists(view)):
        raise RuleViolation(
            "stopped-instance-exists",
            f"stopped machine {machine.name} reported as non-existent: a stopped instance must "
            "still exist, or its Node is deleted",
        )
    if not await ctx.call("instance_shutdown", cap.instance_shutdown(view)):
        raise RuleViolation(
            "shutdown-detection", f"stopped machine {machine.name} not reported as shut down"
        )
    await driver.start_machine(machine.name)
    if await ctx.call("instance_shutdown", cap.instance_shutdown(view)):
        raise RuleViolation(
            "shutdown-detection", f"restarted machine {machine.name} still reported as shut down"
        )


@scenario(CAP, "deleted-instance-does-not-exist")
async def deleted_gone(ctx: Context) -> None:
    """instance_exists is False (not an error) for a deleted machine; instance_metadata raises
    InstanceNotFoundError."""
    cap, machine, view = await _machine_and_view(ctx, "del")
    await ctx.need_driver().delete_machine(machine.name)
    try:
        exists = await ctx.call("instance_exists", cap.instance_exists(view))
    except errors.CCMError as exc:
        raise RuleViolation(
            "deleted-instance-not-exists",
            f"instance_exists raised {exc!r} for a deleted machine instead of returning False",
        ) from None
    if exists:
        raise RuleViolation(
            "deleted-instance-not-exists", f"deleted machine {machine.name} reported as existing"
        )
    try:
        await ctx.call("instance_metadata", cap.instance_metadata(view))
    except errors.InstanceNotFoundError:
        return
    except Exception as exc:
        raise RuleViolation(
            "instance-not-found-error",
            f"instance_metadata of a deleted machine raised {type(exc).__name__}, "
            "not InstanceNotFoundError",
        ) from None
    raise RuleViolation(
        "instance-not-found-error",
        "instance_metadata of a deleted machine returned instead of raising InstanceNotFoundError",
    )


@scenario(CAP, "lifecycle-deletion")
async def lifecycle(ctx: Context) -> None:
    """A NotReady Node whose machine was deleted is deleted; a NotReady Node whose machine is only
    stopped is kept and gets the shutdown taint."""
    _offered(ctx, CAP)
    driver = ctx.need_driver()
    stopped = await driver.create_machine(ctx.name("lc-stopped"))
    deleted = await driver.create_machine(ctx.name("lc-deleted"))
    for m in (stopped, deleted):
        await ctx.create_node(m)

    await _wait_initialized(ctx, [stopped.name, deleted.name])
    await driver.stop_machine(stopped.name)
    await driver.delete_machine(deleted.name)
    for m in (stopped, deleted):
        await ctx.set_ready(m.name, False)

    async def gone() -> bool:
        return await ctx.get_node(deleted.name) is None

    await ctx.wait_for(
        gone,
        "lifecycle-deletes-deleted",
        f"the NotReady Node {deleted.name} of a deleted machine was not deleted",
    )
    ctx.nodes.discard(deleted.name)

    async def shutdown_tainted() -> bool:
        node = await ctx.get_node(stopped.name)
        if node is None:
            raise RuleViolation(
                "stopped-instance-exists",
                f"the Node {stopped.name} of a stopped machine was deleted: "
                "a stopped instance must still exist",
            )
        return wellknown.TAINT_SHUTDOWN in _taints(node)

    await ctx.wait_for(
        shutdown_tainted,
        "shutdown-detection",
        f"the Node {stopped.name} of a stopped machine never got the shutdown taint",
    )
    await ctx.delete_node(stopped.name)


@scenario(CAP, "provider-id-wins-over-name")
async def provider_id_wins(ctx: Context) -> None:
    """A Node's spec.providerID, when set, names its machine whatever the Node's name says. For a
    Node named after machine A whose providerID is machine B's (as when a machine is re-created
    under the same name while its Node still carries the old machine's ID): instance_metadata
    describes B, instance_shutdown follows B's power state, and once B is deleted instance_exists is
    False (A still runs) and instance_metadata raises InstanceNotFoundError, so that the lifecycle
    controller deletes the stale Node."""
    cap, a, _ = await _machine_and_view(ctx, "pid-a")
    _, b, b_view = await _machine_and_view(ctx, "pid-b")
    driver = ctx.need_driver()
    if not b_view.provider_id:
        raise RuleViolation("providerID-not-empty", f"no provider ID known for machine {b.name}")
    mixed = node_view(a.name, b_view.provider_id, b.addresses)
    story = f"Node {a.name!r} with providerID {b_view.provider_id!r} (machine {b.name})"
    meta = await ctx.call("instance_metadata", cap.instance_metadata(mixed))
    if meta is None or meta.provider_id != b_view.provider_id:
        got = meta.provider_id if meta is not None else None
        raise RuleViolation(
            "lookup-by-provider-id",
            f"instance_metadata of {story} describes {got!r}: the provider looked the machine "
            "up by the Node's name; spec.providerID must win when it is set",
        )
    await driver.stop_machine(b.name)
    if not await ctx.call("instance_shutdown", cap.instance_shutdown(mixed)):
        raise RuleViolation(
            "lookup-by-provider-id",
            f"instance_shutdown of {story} is False though {b.name} is stopped: the provider "
            f"answered for {a.name} (found by name)",
        )
    await driver.delete_machine(b.name)
    if await ctx.call("instance_exists", cap.instance_exists(mixed)):
        raise RuleViolation(
            "lookup-by-provider-id",
            f"instance_exists of {story} is True though {b.name} is deleted: the provider found "
            f"{a.name} by name, and the stale Node would never be deleted",
        )
    try:
        await ctx.call("instance_metadata", cap.instance_metadata(mixed))
    except errors.InstanceNotFoundError:
        return
    except errors.CCMError as exc:
        raise RuleViolation(
            "instance-not-found-error",
            f"instance_metadata of {story} after {b.name} was deleted raised {exc!r}, "
            "not InstanceNotFoundError",
        ) from None
    raise RuleViolation(
        "lookup-by-provider-id",
        f"instance_metadata of {story} returned after {b.name} was deleted: the provider found "
        f"{a.name} by name",
    )


@scenario(CAP, "stale-node-of-recreated-machine")
async def stale_node(ctx: Context) -> None:
    """Through the node lifecycle controller: a NotReady Node named after running machine A but
    carrying the providerID of machine B, which is deleted (the Node of a machine re-created under
    the same name, still naming the old one), is deleted."""
    _, a, _ = await _machine_and_view(ctx, "stale-a")
    _, b, b_view = await _machine_and_view(ctx, "stale-b")
    if not b_view.provider_id:
        raise RuleViolation("providerID-not-empty", f"no provider ID known for machine {b.name}")
    await ctx.create_node(a, provider_id=b_view.provider_id, tainted=False)
    await ctx.set_ready(a.name, False)
    await ctx.need_driver().delete_machine(b.name)

    async def gone() -> bool:
        return await ctx.get_node(a.name) is None

    await ctx.wait_for(
        gone,
        "lookup-by-provider-id",
        f"the NotReady Node {a.name} with providerID {b_view.provider_id!r} of deleted machine "
        f"{b.name} was not deleted: the provider answered for machine {a.name} (found by name)",
    )
    ctx.nodes.discard(a.name)


_BATCH_METHODS = ("instance_exists", "instance_shutdown", "instance_metadata")


async def _outcome(ctx: Context, what: str, awaitable: Any) -> Any:
    """The value of a provider call, or the exception it raised (timeouts stay violations)."""
    try:
        return await ctx.call(what, awaitable)
    except RuleViolation:
        raise
    except Exception as exc:
        return exc


def _describe(answer: Any) -> str:
    if isinstance(answer, BaseException):
        return f"{type(answer).__name__}({answer})"
    return repr(answer)


def _agrees(single: Any, batched: Any) -> bool:
    if isinstance(single, BaseException):
        if not isinstance(batched, Exception):
            return False
        if isinstance(single, errors.InstanceNotFoundError):
            return isinstance(batched, errors.InstanceNotFoundError)
        return True
    return not isinstance(batched, BaseException) and bool(batched == single)


@scenario(CAP, "batch-agrees-with-single-calls")
async def batch_agrees(ctx: Context) -> None:
    """When the provider offers the optional InstancesBatch: ``max_batch_size`` is >= 1, each batch
    method returns one answer per Node in input order, and every answer agrees with the single
    InstancesV2 call for that Node (a running, a stopped and a deleted machine, and a Node that
    never had one): the same value, or an exception where the single call raises
    (InstanceNotFoundError where it raises InstanceNotFoundError). For a provider without
    InstancesBatch the scenario is "not offered" (the capability is optional and the single calls
    are used), never passed."""
    cap = _offered(ctx, CAP)
    batch = ctx.provider.instances_batch()
    if batch is None:
        raise NotOffered("the provider does not offer the optional InstancesBatch")
    size = getattr(batch, "max_batch_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise RuleViolation("batch-max-size", f"max_batch_size is {size!r}, not an int >= 1")
    driver = ctx.need_driver()
    _, running, running_view = await _machine_and_view(ctx, "b-run")
    _, stopped, stopped_view = await _machine_and_view(ctx, "b-stop")
    _, deleted, deleted_view = await _machine_and_view(ctx, "b-del")
    await driver.stop_machine(stopped.name)
    await driver.delete_machine(deleted.name)
    views = [running_view, stopped_view, deleted_view, node_view(ctx.name("b-missing"))]
    labels = [running.name, f"{stopped.name} (stopped)", f"{deleted.name} (deleted)", "missing"]
    for method in _BATCH_METHODS:
        single = [await _outcome(ctx, method, getattr(cap, method)(v)) for v in views]
        for start in range(0, len(views), size):
            chunk = views[start : start + size]
            what = f"{method}_batch"
            answers = await ctx.call(what, getattr(batch, what)(chunk))
            try:
                answers = list(answers)
            except TypeError:
                answers = None
            if answers is None or len(answers) != len(chunk):
                got = "no sequence" if answers is None else f"{len(answers)} answers"
                raise RuleViolation(
                    "batch-one-answer-per-node",
                    f"{what} returned {got} for {len(chunk)} nodes: it must return exactly one "
                    "answer per input Node, in order",
                )
            for offset, answer in enumerate(answers):
                i = start + offset
                if not _agrees(single[i], answer):
                    raise RuleViolation(
                        "batch-agrees-with-single",
                        f"{what} answered {_describe(answer)} for {labels[i]}, but {method} "
                        f"answers {_describe(single[i])}",
                    )


__all__ = ["NodeAddress"]
