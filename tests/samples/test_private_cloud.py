"""The private-cloud sample: its provider against its own HTTP API (in-process, on 127.0.0.1).

Checks the contract points a provider author must get right: a stopped machine exists, a deleted
one does not; errors are ``ccm.errors`` types; 5xx and connection errors are retried a bounded
number of times and 4xx never; load balancers are idempotent and give their VIP back; routes are
scoped by cluster; the state survives a restart of the API (SQLite).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from private_cloud import api as apimod
from private_cloud.config import PrivateCloudConfig
from private_cloud.driver import PrivateCloudDriver, driver_factory
from private_cloud.provider import PrivateCloudProvider, factory
from private_cloud.testing import AdminClient

from ccm.cloudprovider import Node, NodeAddress, Route, Service, init_cloud_provider
from ccm.errors import (
    CloudProviderError,
    ConfigError,
    InstanceNotFoundError,
    RetryAfterError,
)

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "kubernetes"


def _config(url: str, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "endpoint": url,
        "region": "region-1",
        "retries": {"attempts": 3, "initialBackoff": 0.01, "maxBackoff": 0.02},
        "timeouts": {"request": 2, "connect": 1},
    }
    doc.update(extra)
    return yaml.safe_dump(doc).encode()


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[apimod.ApiServer]:
    async with apimod.serve(tmp_path / "cloud.db", vip_pool="192.0.2.0/30") as server:
        yield server


@pytest.fixture
async def provider(cloud: apimod.ApiServer) -> AsyncIterator[PrivateCloudProvider]:
    p = factory(_config(cloud.url))
    try:
        yield p
    finally:
        await p.aclose()


@pytest.fixture
def admin(cloud: apimod.ApiServer) -> Callable[..., Any]:
    """``await admin("method", *args)``: the operator's client, run off the event loop."""
    client = AdminClient(cloud.url)

    async def call(method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(client, method), *args, **kwargs)

    return call


def node(name: str, provider_id: str = "", internal_ip: str = "") -> Node:
    addresses = [{"type": "InternalIP", "address": internal_ip}] if internal_ip else []
    return Node(
        {
            "metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {"providerID": provider_id} if provider_id else {},
            "status": {"addresses": addresses},
        }
    )


def service(name: str, uid: str, ports: tuple[int, ...] = (80,)) -> Service:
    return Service(
        {
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {
                "type": "LoadBalancer",
                "ports": [{"port": p, "protocol": "TCP", "nodePort": 30000 + p} for p in ports],
            },
        }
    )


async def machine(admin: Callable[..., Any], name: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("type", "standard-2")
    fields.setdefault("zone", "zone-a")
    fields.setdefault("addresses", [{"type": "InternalIP", "address": "10.0.0.5"}])
    created: dict[str, Any] = await admin("create_machine", name, **fields)
    return created


# -- configuration ------------------------------------------------------------------------------


def test_config_defaults_and_durations() -> None:
    cfg = PrivateCloudConfig.parse(
        b"endpoint: http://127.0.0.1:1/\ntimeouts: {request: 1500ms}\nretries: {maxBackoff: 1m}\n"
    )
    assert cfg.endpoint == "http://127.0.0.1:1"
    assert cfg.timeouts.request == 1.5
    assert cfg.retries.max_backoff == 60.0
    assert cfg.retries.attempts == 4
    assert cfg.token is None


def test_config_in_the_ini_shape_and_a_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRIVATE_CLOUD_TEST_TOKEN", "from-env")
    cfg = PrivateCloudConfig.parse(
        b"""
; the same settings as the YAML, in gcfg's INI dialect
[Global]
Endpoint = http://127.0.0.1:1
ClusterName = "blue"
[Credentials]
Token = env:PRIVATE_CLOUD_TEST_TOKEN
[Timeouts]
Request = 1m30s
[Retries]
Attempts = 2
initial-backoff = 50ms
""",
    )
    assert (cfg.endpoint, cfg.cluster_name) == ("http://127.0.0.1:1", "blue")
    assert cfg.token == "from-env"
    assert cfg.timeouts.request == 90.0
    assert (cfg.retries.attempts, cfg.retries.initial_backoff) == (2, 0.05)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(b"", "needs --cloud-config", id="no config"),
        pytest.param(b"- a list", "a mapping at the top", id="not a mapping"),
        pytest.param(b"endpoint: ftp://x", "http(s) URL", id="bad endpoint"),
        pytest.param(b"endpoint: http://x\nretries: {attempts: 0}", "attempts", id="attempts"),
        pytest.param(
            b"endpoint: http://x\ntimeouts: {request: soon}", "timeouts.request", id="dur"
        ),
        pytest.param(
            b"endpoint: http://x\ncredentials: {tokenFile: /nonexistent/token}",
            "credentials.tokenFile",
            id="missing token file",
        ),
    ],
)
def test_config_errors_are_one_line_config_errors(text: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        PrivateCloudConfig.parse(text)
    assert "\n" not in str(exc.value)


def test_the_private_cloud_overlay_ships_a_valid_config(tmp_path: Path) -> None:
    """manifests/overlays/private-cloud/cloud-config.yaml is in this provider's format."""
    path = REPO / "manifests/overlays/private-cloud/cloud-config.yaml"
    doc = yaml.safe_load(path.read_text())
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    doc["credentials"]["tokenFile"] = str(token)
    cfg = PrivateCloudConfig.parse(yaml.safe_dump(doc).encode())
    assert cfg.endpoint.startswith("https://")
    assert cfg.token == "s3cret"
    assert cfg.region == "region-1"


async def test_registered_as_entry_point(cloud: apimod.ApiServer, tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_bytes(_config(cloud.url))
    provider = await init_cloud_provider("private-cloud", str(path))
    try:
        assert isinstance(provider, PrivateCloudProvider)
        assert provider.instances_v2() is provider
        assert provider.load_balancer() is provider
        assert provider.routes() is provider
        assert provider.instances() is None
        assert provider.zones() is None
        assert provider.clusters() is None
    finally:
        await provider.aclose()


# -- InstancesV2 ------------------------------------------------------------------------------


async def test_running_machine_exists_and_has_metadata(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    m = await machine(admin, "worker-1", region="")
    n = node("worker-1")
    assert await provider.instance_exists(n) is True
    assert await provider.instance_shutdown(n) is False
    meta = await provider.instance_metadata(n)
    assert meta is not None
    assert meta.provider_id == f"private-cloud://{m['id']}"
    assert (meta.instance_type, meta.zone) == ("standard-2", "zone-a")
    assert meta.region == "region-1"  # the config's region fills a machine without one
    assert meta.node_addresses == (NodeAddress(type="InternalIP", address="10.0.0.5"),)
    # By providerID too, even if the Node is renamed.
    assert await provider.instance_exists(node("renamed", provider_id=meta.provider_id))


async def test_a_stopped_machine_exists_and_is_shut_down(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    m = await machine(admin, "worker-1")
    await admin("stop_machine", m["id"])
    for n in (node("worker-1"), node("x", provider_id=f"private-cloud://{m['id']}")):
        assert await provider.instance_exists(n) is True
        assert await provider.instance_shutdown(n) is True
        assert await provider.instance_metadata(n) is not None


async def test_a_deleted_machine_does_not_exist(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    m = await machine(admin, "worker-1")
    await admin("delete_machine", m["id"])
    by_id = node("worker-1", provider_id=f"private-cloud://{m['id']}")
    for n in (node("worker-1"), by_id, node("never-existed"), node("x", "private-cloud://m-none")):
        assert await provider.instance_exists(n) is False
        with pytest.raises(InstanceNotFoundError):
            await provider.instance_metadata(n)
        with pytest.raises(InstanceNotFoundError):
            await provider.instance_shutdown(n)


async def test_doubtful_lookups_raise_instead_of_answering_gone(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    """A foreign or malformed providerID, or two machines with the Node's name: raise (the
    lifecycle controller then leaves the Node alone) rather than say "does not exist"."""
    await machine(admin, "twin")
    await machine(admin, "twin")
    for n in (node("twin"), node("a", provider_id="aws:///i-1"), node("b", provider_id="junk")):
        with pytest.raises(CloudProviderError) as exc:
            await provider.instance_exists(n)
        assert not isinstance(exc.value, InstanceNotFoundError)


# -- retries and error translation ------------------------------------------------------------


async def test_transient_5xx_is_retried_then_succeeds(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    await machine(admin, "worker-1")
    before = (await admin("stats"))["requests"]
    await admin("inject_fault", status=503, times=2)
    assert await provider.instance_exists(node("worker-1")) is True
    assert (await admin("stats"))["requests"] - before == 3


async def test_persistent_5xx_gives_up_after_the_configured_attempts(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    before = (await admin("stats"))["requests"]
    await admin("inject_fault", status=500, times=100)
    with pytest.raises(CloudProviderError, match="gave up after 3 attempts"):
        await provider.instance_exists(node("worker-1"))
    assert (await admin("stats"))["requests"] - before == 3


@pytest.mark.parametrize("status", [400, 403, 409])
async def test_4xx_is_never_retried(
    provider: PrivateCloudProvider, admin: Callable[..., Any], status: int
) -> None:
    before = (await admin("stats"))["requests"]
    await admin("inject_fault", status=status, times=100)
    with pytest.raises(CloudProviderError, match=f"HTTP {status}"):
        await provider.list_routes(CLUSTER)
    assert (await admin("stats"))["requests"] - before == 1


async def test_429_becomes_retry_after(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    before = (await admin("stats"))["requests"]
    await admin("inject_fault", status=429, times=1, retry_after="7")
    with pytest.raises(RetryAfterError) as exc:
        await provider.list_routes(CLUSTER)
    assert exc.value.delay == 7.0  # the API's Retry-After
    assert (await admin("stats"))["requests"] - before == 1  # not retried in the provider


async def test_connection_refused_is_retried_and_translated(tmp_path: Path) -> None:
    async with apimod.serve(tmp_path / "gone.db") as server:
        url = server.url  # a port that was just released
    provider = factory(_config(url))
    try:
        with pytest.raises(CloudProviderError, match="gave up after 3 attempts"):
            await provider.instance_exists(node("worker-1"))
    finally:
        await provider.aclose()


async def test_a_call_is_cancellable_while_it_backs_off(
    cloud: apimod.ApiServer, admin: Callable[..., Any]
) -> None:
    """Cancellation (the controllers' --cloud-call-timeout) ends a call even mid-retry."""
    p = factory(_config(cloud.url, retries={"attempts": 5, "initialBackoff": 30, "maxBackoff": 60}))
    try:
        await admin("inject_fault", status=503, times=1000)
        task = asyncio.create_task(p.instance_exists(node("worker-1")))
        while (await admin("stats"))["faulted"] < 1:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await admin("stats"))["faulted"] == 1  # cancelled in its first backoff
    finally:
        await p.aclose()


async def test_bearer_token_is_sent(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with apimod.serve(tmp_path / "cloud.db", token="s3cret") as server:
        good = factory(_config(server.url, credentials={"tokenFile": str(token)}))
        bad = factory(_config(server.url))
        try:
            assert await good.list_routes(CLUSTER) == []
            with pytest.raises(CloudProviderError, match="HTTP 401"):
                await bad.list_routes(CLUSTER)
        finally:
            await good.aclose()
            await bad.aclose()


# -- LoadBalancer -------------------------------------------------------------------------------


async def test_load_balancer_lifecycle_and_vip_pool(
    provider: PrivateCloudProvider, admin: Callable[..., Any]
) -> None:
    svc = service("web", "1111-2222")
    nodes = [node("b", internal_ip="10.0.0.2"), node("a", internal_ip="10.0.0.1")]
    assert await provider.get_load_balancer(CLUSTER, svc) is None

    first = await provider.ensure_load_balancer(CLUSTER, svc, nodes)
    again = await provider.ensure_load_balancer(CLUSTER, svc, nodes)
    assert first == again  # idempotent: same VIP, one load balancer
    vip = first.ingress[0].ip
    assert vip == "192.0.2.1"
    lbs = await admin("load_balancers")
    assert len(lbs) == 1
    assert lbs[0]["name"] == provider.get_load_balancer_name(CLUSTER, svc)
    assert lbs[0]["service"] == "default/web"
    assert lbs[0]["cluster"] == CLUSTER
    assert [n["name"] for n in lbs[0]["nodes"]] == ["a", "b"]
    assert lbs[0]["ports"][0]["nodePort"] == 30080
    assert await provider.get_load_balancer(CLUSTER, svc) == first

    await provider.update_load_balancer(CLUSTER, svc, nodes[:1])
    assert [n["name"] for n in (await admin("load_balancers"))[0]["nodes"]] == ["b"]

    await provider.ensure_load_balancer_deleted(CLUSTER, svc)
    await provider.ensure_load_balancer_deleted(CLUSTER, svc)  # idempotent
    assert await admin("load_balancers") == []
    assert all(v["loadBalancer"] is None for v in await admin("vips"))
    assert await provider.get_load_balancer(CLUSTER, svc) is None


async def test_update_of_a_missing_load_balancer_is_an_error(
    provider: PrivateCloudProvider,
) -> None:
    with pytest.raises(CloudProviderError, match="does not exist"):
        await provider.update_load_balancer(CLUSTER, service("web", "1"), [])


async def test_an_exhausted_vip_pool_is_reported(provider: PrivateCloudProvider) -> None:
    for i in range(2):  # 192.0.2.0/30 has two host addresses
        await provider.ensure_load_balancer(CLUSTER, service(f"s{i}", f"uid-{i}"), [])
    with pytest.raises(CloudProviderError, match="VIP pool exhausted"):
        await provider.ensure_load_balancer(CLUSTER, service("s2", "uid-2"), [])
    await provider.ensure_load_balancer_deleted(CLUSTER, service("s0", "uid-0"))
    status = await provider.ensure_load_balancer(CLUSTER, service("s2", "uid-2"), [])
    assert status.ingress[0].ip == "192.0.2.1"  # the released VIP is reused


async def test_arguments_are_not_mutated(provider: PrivateCloudProvider) -> None:
    svc = service("web", "3333")
    nodes = [node("a", internal_ip="10.0.0.1")]
    before = (svc.to_dict(), [n.to_dict() for n in nodes])
    await provider.ensure_load_balancer(CLUSTER, svc, nodes)
    assert (svc.to_dict(), [n.to_dict() for n in nodes]) == before


# -- Routes ---------------------------------------------------------------------------------------


async def test_routes_round_trip_scoped_by_cluster(provider: PrivateCloudProvider) -> None:
    v4 = Route(target_node="a", destination_cidr="10.244.1.0/24")
    v6 = Route(target_node="a", destination_cidr="fd00:10:244:1::/64")
    for r in (v4, v6, v4):  # the second create of v4 is a no-op
        await provider.create_route(CLUSTER, "uid-a", r)
    await provider.create_route(
        "other", "uid-z", Route(target_node="z", destination_cidr="10.9.0.0/24")
    )
    listed = await provider.list_routes(CLUSTER)
    assert sorted((r.target_node, r.destination_cidr) for r in listed) == [
        ("a", "10.244.1.0/24"),
        ("a", "fd00:10:244:1::/64"),
    ]
    assert all(r.name for r in listed)
    for r in listed:
        await provider.delete_route(CLUSTER, r)
        await provider.delete_route(CLUSTER, r)  # idempotent
    assert await provider.list_routes(CLUSTER) == []
    assert [r.target_node for r in await provider.list_routes("other")] == ["z"]
    # A delete in one cluster never touches another's routes.
    await provider.delete_route(CLUSTER, Route(target_node="z", destination_cidr="10.9.0.0/24"))
    assert len(await provider.list_routes("other")) == 1


async def test_cluster_name_of_the_config_overrides(cloud: apimod.ApiServer) -> None:
    p = factory(_config(cloud.url, clusterName="prod"))
    try:
        await p.create_route(CLUSTER, "uid", Route(target_node="a", destination_cidr="10.0.0.0/24"))
        assert [r.target_node for r in await p.list_routes("anything")] == ["a"]
        assert len(await asyncio.to_thread(AdminClient(cloud.url).routes, "prod")) == 1
    finally:
        await p.aclose()


async def test_a_route_to_another_node_for_the_same_cidr_is_refused(
    provider: PrivateCloudProvider,
) -> None:
    await provider.create_route(
        CLUSTER, "u", Route(target_node="a", destination_cidr="10.1.0.0/24")
    )
    with pytest.raises(CloudProviderError, match="HTTP 409"):
        await provider.create_route(
            CLUSTER, "u", Route(target_node="b", destination_cidr="10.1.0.0/24")
        )


# -- the API itself ------------------------------------------------------------------------------


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "cloud.db"
    async with apimod.serve(db, vip_pool="192.0.2.8/29") as server:
        p = factory(_config(server.url))
        await asyncio.to_thread(AdminClient(server.url).create_machine, "m1")
        await p.ensure_load_balancer(CLUSTER, service("web", "uid-1"), [])
        await p.aclose()
    async with apimod.serve(db) as server:
        admin = AdminClient(server.url)
        assert [m["name"] for m in await asyncio.to_thread(admin.machines)] == ["m1"]
        lbs = await asyncio.to_thread(admin.load_balancers)
        assert [lb["vip"] for lb in lbs] == ["192.0.2.9"]


async def test_the_conformance_driver_acts_without_the_provider(
    provider: PrivateCloudProvider,
) -> None:
    driver = driver_factory(provider)
    assert isinstance(driver, PrivateCloudDriver)
    m = await driver.create_machine("drv-1")
    n = node("drv-1")
    first = await provider.instance_metadata(n)
    assert first is not None
    assert first.provider_id == m.provider_id
    await driver.stop_machine("drv-1")
    assert await provider.instance_shutdown(n) is True
    await driver.start_machine("drv-1")
    assert await provider.instance_shutdown(n) is False
    new = await driver.change_addresses("drv-1")
    meta = await provider.instance_metadata(n)
    assert meta is not None
    assert meta.node_addresses == new
    await provider.ensure_load_balancer(CLUSTER, service("web", "uid-9"), [n])
    lbs = await driver.load_balancers()
    assert lbs is not None
    assert [(lb.service, lb.nodes) for lb in lbs] == [("default/web", ("drv-1",))]
    await provider.create_route(
        CLUSTER, "u", Route(target_node="drv-1", destination_cidr="10.2.0.0/24")
    )
    routes = await driver.routes(CLUSTER)
    assert routes is not None
    assert [(r.cluster_name, r.target_node) for r in routes] == [(CLUSTER, "drv-1")]
    await driver.cleanup()
    await driver.cleanup()  # idempotent
    assert await provider.instance_exists(n) is False


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("POST", "/v1/machines", {"type": "x"}, 400, id="machine without a name"),
        pytest.param("POST", "/v1/machines", {"name": "a", "state": "on"}, 400, id="bad state"),
        pytest.param(
            "POST", "/v1/machines", {"name": "a", "addresses": [{}]}, 400, id="bad address"
        ),
        pytest.param("GET", "/v1/machines/m-nope", None, 404, id="unknown machine"),
        pytest.param("POST", "/v1/machines/m-nope/stop", None, 404, id="stop unknown machine"),
        pytest.param("POST", "/v1/vips", {"addresses": ["not-an-ip"]}, 400, id="bad vip"),
        pytest.param("PUT", "/v1/loadbalancers/x", {"ports": []}, 400, id="lb without cluster"),
        pytest.param("DELETE", "/v1/loadbalancers/x", None, 404, id="delete unknown lb"),
        pytest.param(
            "POST", "/v1/clusters/c/routes", {"cidr": "10.0.0.1/8", "target": "a"}, 400, id="host"
        ),
        pytest.param("POST", "/v1/clusters/c/routes", {"cidr": "x", "target": "a"}, 400, id="bad"),
        pytest.param("DELETE", "/v1/clusters/c/routes/r-nope", None, 404, id="unknown route"),
    ],
)
async def test_api_validates_requests(
    cloud: apimod.ApiServer, method: str, path: str, body: Any, status: int
) -> None:
    got, answer = await asyncio.to_thread(AdminClient(cloud.url).request, method, path, body)
    assert got == status, answer
    if status >= 400:
        assert answer["error"]


async def test_a_deleted_machine_cannot_be_started(admin: Callable[..., Any]) -> None:
    m = await machine(admin, "w")
    await admin("delete_machine", m["id"])
    status, answer = await admin("request", "POST", f"/v1/machines/{m['id']}/start")
    assert status == 409, answer
    listed = await admin("machines", include_deleted=True)
    assert [(x["name"], x["state"]) for x in listed] == [("w", "deleted")]
    assert await admin("machines") == []
