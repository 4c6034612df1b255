"""AWS errors become ccm's: throttling is RetryAfterError, everything else CloudProviderError,
after exactly the attempts botocore is configured for. A tiny EC2 look-alike on 127.0.0.1 answers
the provider's real HTTP requests with the error under test."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
from ccm_aws.api import MAX_ATTEMPTS, THROTTLE_DELAY, AWSError
from ccm_aws.provider import factory
from ccm_aws.testing import cloud_config

from ccm.cloudprovider import Node
from ccm.errors import (
    CloudProviderError,
    InstanceNotFoundError,
    RetriesExhaustedError,
    RetryAfterError,
)

_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
)


class _Ec2Errors(http.server.BaseHTTPRequestHandler):
    status = 503
    code = "RequestLimitExceeded"
    requests: list[str]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.requests.append(self.rfile.read(length).decode())
        body = _BODY.format(code=self.code, message="test").encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ec2_errors() -> Iterator[type[_Ec2Errors]]:
    handler = type("Handler", (_Ec2Errors,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="fake-ec2", daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _node() -> Node:
    return Node({"metadata": {"name": "n"}, "spec": {"providerID": "aws:///z/i-0123456789abcdef0"}})


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling"])
async def test_throttling_asks_for_a_retry_after_a_delay(
    ec2_errors: type[_Ec2Errors], code: str
) -> None:
    ec2_errors.code = code
    provider = await factory(cloud_config(ec2_errors.url).encode())  # type: ignore[attr-defined]
    try:
        with pytest.raises(RetryAfterError) as caught:
            await provider.instances_v2().instance_exists(_node())
    finally:
        await provider.aclose()
    assert caught.value.delay == THROTTLE_DELAY
    assert code in str(caught.value)
    # Throttling is never retried inside the call: the controller waits instead.
    assert len(ec2_errors.requests) == 1
    assert all("Action=DescribeInstances" in r for r in ec2_errors.requests)


@pytest.mark.parametrize(
    ("status", "code"), [(403, "UnauthorizedOperation"), (400, "InvalidParameterValue")]
)
async def test_other_aws_errors_are_cloud_provider_errors_naming_the_code(
    ec2_errors: type[_Ec2Errors], status: int, code: str
) -> None:
    ec2_errors.status, ec2_errors.code = status, code
    provider = await factory(cloud_config(ec2_errors.url).encode())  # type: ignore[attr-defined]
    try:
        with pytest.raises(CloudProviderError) as caught:
            await provider.instances_v2().instance_metadata(_node())
    finally:
        await provider.aclose()
    # A ccm error typed at the boundary, with AWS's code as a field (never read from __cause__).
    assert type(caught.value) is AWSError
    assert caught.value.code == code
    assert str(caught.value) == f"AWS DescribeInstances failed: {code}: test"
    assert len(ec2_errors.requests) == 1


async def test_server_errors_are_retried_then_reported(ec2_errors: type[_Ec2Errors]) -> None:
    ec2_errors.status, ec2_errors.code = 500, "InternalError"
    provider = await factory(cloud_config(ec2_errors.url).encode())  # type: ignore[attr-defined]
    try:
        with pytest.raises(RetriesExhaustedError, match="InternalError") as caught:
            await provider.instances_v2().instance_metadata(_node())
    finally:
        await provider.aclose()
    assert isinstance(caught.value, CloudProviderError)
    assert str(caught.value).startswith(f"DescribeInstances: gave up after {MAX_ATTEMPTS}")
    assert len(ec2_errors.requests) == MAX_ATTEMPTS


async def test_instance_not_found_code_is_instance_not_found(
    ec2_errors: type[_Ec2Errors],
) -> None:
    ec2_errors.status, ec2_errors.code = 400, "InvalidInstanceID.NotFound"
    provider = await factory(cloud_config(ec2_errors.url).encode())  # type: ignore[attr-defined]
    try:
        v2 = provider.instances_v2()
        assert await v2.instance_exists(_node()) is False
        with pytest.raises(InstanceNotFoundError):
            await v2.instance_metadata(_node())
    finally:
        await provider.aclose()


async def test_an_unreachable_endpoint_is_a_cloud_provider_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = await factory(cloud_config(f"http://127.0.0.1:{port}").encode())
    try:
        with pytest.raises(RetriesExhaustedError, match="Could not connect"):
            await provider.instances_v2().instance_exists(_node())
    finally:
        await provider.aclose()
