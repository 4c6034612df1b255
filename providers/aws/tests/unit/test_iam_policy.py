"""``iam-policy.json`` lists exactly the AWS actions the provider calls.

Every call of every capability is made here against moto and recorded through botocore's
``before-call`` event: nothing called may be missing from the policy, and nothing in the policy may
go uncalled. (The session-wide action log of the conftest checks the first half for every other
test too, daemons and ``ccm conformance`` subprocesses included.)"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest
from ccm_aws.api import source_headers
from ccm_aws.provider import factory
from ccm_aws.testing import Ec2Console, cloud_config, patched_environ

from ccm.cloudprovider import Node, Route
from ccm.errors import CloudProviderError, ConfigError

from ..conftest import POLICY, policy_actions
from .test_elb import service, subnet_cidr

#: Permissions AWS checks on top of a call's own action (the call is recorded, not these): tags
#: given to a create call need elasticloadbalancing:AddTags or ec2:CreateTags.
IMPLIED = {
    "elasticloadbalancing:CreateLoadBalancer": {"elasticloadbalancing:AddTags"},
    "elasticloadbalancing:CreateTargetGroup": {"elasticloadbalancing:AddTags"},
    "elasticloadbalancing:CreateListener": {"elasticloadbalancing:AddTags"},
    "ec2:CreateSecurityGroup": {"ec2:CreateTags"},
}

MakeProvider = Callable[..., Awaitable[Any]]


async def workload(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> set[str]:
    """Every call of every capability (with the updates that need the rarer actions); returns
    the IAM actions the providers called."""
    console.create_route_table(network["vpc"], cluster_id)
    console.make_public(network["vpc"])
    zone, subnet = sorted(network["subnets"].items())[0]
    instance = console.run_instance(subnet, cluster_id=cluster_id)
    other = console.run_instance(subnet, cluster_id=cluster_id)
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

    lb = provider.load_balancer()
    nodes = [by_id, Node({"metadata": {"name": "o"}, "spec": {"providerID": other["InstanceId"]}})]
    svc = service()
    await lb.ensure_load_balancer("kubernetes", svc, nodes)
    # A better subnet in the zone (role tag): attached, the old one detached.
    better = console.ec2.create_subnet(
        VpcId=network["vpc"], CidrBlock=subnet_cidr(console, network["vpc"]), AvailabilityZone=zone
    )["Subnet"]["SubnetId"]
    console.ec2.create_tags(
        Resources=[better], Tags=[{"Key": "kubernetes.io/role/elb", "Value": "1"}]
    )
    changed = service(
        uid=svc.uid,
        ports=((80, 30099),),
        ranges=("198.51.100.0/24",),
        annotations={
            "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "1"
        },
    )
    await lb.ensure_load_balancer("kubernetes", changed, nodes)
    await lb.update_load_balancer("kubernetes", changed, nodes[:1])
    shared_group = console.ec2.create_security_group(
        GroupName="shared-elb", Description="shared", VpcId=network["vpc"]
    )["GroupId"]
    shared = await make_provider(ElbSecurityGroup=shared_group)
    shared.api.observe(
        lambda model, **_: used.add(f"{model.service_model.signing_name}:{model.name}")
    )
    await shared.load_balancer().ensure_load_balancer("kubernetes", changed, nodes[:1])
    await lb.ensure_load_balancer_deleted("kubernetes", changed)
    # An NLB: created, a node port changed (a new target group, the listener modified), a
    # Node gone (deregistered), a health check changed in place, deleted.
    nlb_type = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    nlb = service(ports=((80, 30080), (81, 30081)), annotations=nlb_type)
    await lb.ensure_load_balancer("kubernetes", nlb, nodes)
    moved = service(uid=nlb.uid, ports=((80, 30090),), annotations=nlb_type)
    await lb.ensure_load_balancer("kubernetes", moved, nodes)
    threshold = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold"
    moved = service(uid=nlb.uid, ports=((80, 30090),), annotations={**nlb_type, threshold: "5"})
    await lb.ensure_load_balancer("kubernetes", moved, nodes)
    await lb.update_load_balancer("kubernetes", moved, nodes[:1])
    await lb.ensure_load_balancer_deleted("kubernetes", moved)
    return used


async def test_the_policy_allows_exactly_what_the_provider_calls(
    make_provider: MakeProvider, console: Ec2Console, network: dict[str, Any], cluster_id: str
) -> None:
    used = await workload(make_provider, console, network, cluster_id)
    implied = {a for call, actions in IMPLIED.items() if call in used for a in actions}
    assert used | implied == policy_actions()


@pytest.fixture(scope="module")
def enforcing_moto() -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server of its own that enforces IAM (``INITIAL_NO_AUTH_ACTION_COUNT``, read when
    moto starts), with an administrator's keys; the shared server enforces nothing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
        # The three unauthenticated calls moto allows: an administrator and its keys.
        iam.create_user(UserName="admin")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="admin",
            PolicyName="admin",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        yield url, {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}
    finally:
        process.terminate()
        process.wait(timeout=10)


def _user_with(url: str, admin: dict[str, str], policy: str) -> dict[str, str | None]:
    """A new IAM user allowed ``policy``; the environment that makes the provider use it."""
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=admin["access_key"],
        aws_secret_access_key=admin["secret_key"],
    )
    name = f"ccm-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="ccm", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
    }


@pytest.mark.parametrize("without", [None, "ec2:CreateRoute"])
async def test_the_policy_is_enough_where_iam_is_enforced(
    enforcing_moto: tuple[str, dict[str, str]], without: str | None
) -> None:
    url, admin = enforcing_moto
    doc = json.loads(POLICY.read_text())
    if without is not None:
        doc["Statement"][0]["Action"].remove(without)
    console = Ec2Console(url, **admin)
    cluster_id = f"c{uuid.uuid4().hex[:8]}"
    network = console.create_network(cluster_id, cidr="10.91.0.0/16")
    built: list[Any] = []

    async def make(**fields: str) -> Any:
        provider = await factory(
            cloud_config(url, KubernetesClusterID=cluster_id, **fields).encode()
        )
        built.append(provider)
        return provider

    try:
        with patched_environ(_user_with(url, admin, json.dumps(doc))):
            if without is None:
                await workload(make, console, network, cluster_id)
            else:
                # The control: moto does deny what the policy lacks.
                with pytest.raises(CloudProviderError, match=f"AccessDenied.*{without}"):
                    await workload(make, console, network, cluster_id)
    finally:
        for provider in built:
            await provider.aclose()


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


def test_assume_role_sends_upstreams_source_headers() -> None:
    role = "arn:aws:iam::123456789012:role/ccm"
    assert source_headers(role, "") == {"x-amz-source-account": "123456789012"}
    assert source_headers(role, "arn:aws:eks:us-east-1:1:cluster/x") == {
        "x-amz-source-account": "123456789012",
        "x-amz-source-arn": "arn:aws:eks:us-east-1:1:cluster/x",
    }
    with pytest.raises(ConfigError, match="RoleARN: not an ARN"):
        source_headers("ccm", "")


_ASSUMED = """<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>ASIAFAKE</AccessKeyId>
<SecretAccessKey>secret</SecretAccessKey><SessionToken>token</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/ccm/ccm-aws</Arn>
<AssumedRoleId>AROAFAKE:ccm-aws</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>
</AssumeRoleResponse>"""


async def test_the_source_headers_reach_sts() -> None:
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            if "Action=AssumeRole" in body:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                answer, status = _ASSUMED.encode(), 200
            else:
                answer, status = (
                    b"<Response><Errors><Error><Code>Nope</Code></Error></Errors></Response>",
                    400,
                )
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-sts", daemon=True)
    thread.start()
    try:
        config = cloud_config(
            f"http://127.0.0.1:{server.server_address[1]}",
            RoleARN="arn:aws:iam::123456789012:role/ccm",
            SourceARN="arn:aws:eks:us-east-1:123456789012:cluster/prod",
        )
        provider = await factory(config.encode())
        try:
            view = Node({"metadata": {"name": "n"}, "spec": {"providerID": "i-0123456789abcdef0"}})
            with pytest.raises(CloudProviderError, match="Nope"):
                await provider.instances_v2().instance_exists(view)
        finally:
            await provider.aclose()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    (headers,) = seen
    assert headers["x-amz-source-account"] == "123456789012"
    assert headers["x-amz-source-arn"] == "arn:aws:eks:us-east-1:123456789012:cluster/prod"
