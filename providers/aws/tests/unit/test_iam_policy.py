"""``iam-policy.json`` lists exactly the AWS actions the provider calls.

Every call of every capability is made here against moto and recorded through botocore's
``before-call`` event: nothing called may be missing from the policy, and nothing in the policy may
go uncalled. (The session-wide action log of the conftest checks the first half for every other
test too, daemons and ``ccm conformance`` subprocesses included.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ccm_aws.testing import Ec2Console

from ccm.cloudprovider import Node, Route

from ..conftest import policy_actions

MakeProvider = Callable[..., Awaitable[Any]]


async def test_the_policy_allows_exactly_what_the_provider_calls(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    console.create_route_table(network["vpc"], cluster_id)
    subnet = next(iter(network["subnets"].values()))
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    provider = await make_provider()
    used: set[str] = set()
    provider.api.observe(
        lambda model, **_: used.add(f"{model.service_model.signing_name}:{model.name}")
    )
    by_name = Node({"metadata": {"name": instance["PrivateDnsName"]}})
    v2, batch, routes = provider.instances_v2(), provider.instances_batch(), provider.routes()
    md = await v2.instance_metadata(by_name)
    by_id = Node({"metadata": {"name": "n"}, "spec": {"providerID": md.provider_id}})
    assert await v2.instance_exists(by_id)
    assert not await v2.instance_shutdown(by_id)
    assert await batch.instance_exists_batch([by_id, by_name]) == [True, True]
    await batch.instance_metadata_batch([by_id])
    route = Route(target_node=by_name.name, destination_cidr="10.250.0.0/24")
    await routes.create_route("kubernetes", "uid", route)
    (listed,) = await routes.list_routes("kubernetes")
    await routes.delete_route("kubernetes", listed)

    assert used == policy_actions()


async def test_role_arn_assumes_the_role_for_every_call(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    subnet = next(iter(network["subnets"].values()))
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    provider = await make_provider(RoleARN="arn:aws:iam::123456789012:role/ccm")
    used: list[str] = []
    provider.api.observe(lambda model, **_: used.append(model.name))
    view = Node({"metadata": {"name": instance["PrivateDnsName"]}})
    assert (await provider.instances_v2().instance_metadata(view)).provider_id
    # botocore signs after its before-call event: the role is assumed while signing the call.
    assert sorted(used) == ["AssumeRole", "DescribeAvailabilityZones", "DescribeInstances"]
    credentials = provider.api.session.get_credentials().get_frozen_credentials()
    assert credentials.access_key != "testing"  # the role's, not the base identity's
