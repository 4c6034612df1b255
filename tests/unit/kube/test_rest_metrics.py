"""The client's ``rest_client_*`` metrics: counted per request, children looked up once."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import orjson
import pytest

from ccm import errors, metrics
from ccm.kube import client as kclient

# A host of its own per run: the children are kept for the whole process.
HOST = f"{uuid.uuid4().hex}.invalid:6443"


class Canned(kclient.Transport):
    """Answers a GET with a Node and anything else with a 404 Status."""

    host = f"https://{HOST}"

    async def send(self, request: kclient.HttpRequest) -> kclient.HttpResponse:
        if request.method == "GET":
            return kclient.BufferedResponse(200, orjson.dumps({"metadata": {"name": "n"}}))
        status = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        return kclient.BufferedResponse(404, orjson.dumps(status))

    async def aclose(self) -> None:
        pass


def sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_request_is_counted_and_each_child_is_looked_up_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups: collections.Counter[tuple[str, tuple[object, ...]]] = collections.Counter()
    wrapped = {
        "requests": metrics.REST_CLIENT_REQUESTS,
        "duration": metrics.REST_CLIENT_REQUEST_DURATION,
        "limiter": metrics.REST_CLIENT_RATE_LIMITER_DURATION,
    }
    for what, metric in wrapped.items():
        original = metric.labels

        def counting(*labels: object, _what: str = what, _original: Any = original) -> Any:
            lookups[(_what, labels)] += 1
            return _original(*labels)

        monkeypatch.setattr(metric, "labels", counting)

    ok = {"code": "200", "method": "GET", "host": HOST}
    missing = {"code": "404", "method": "PATCH", "host": HOST}
    before = (
        sample("rest_client_requests_total", ok),
        sample("rest_client_requests_total", missing),
        sample("rest_client_request_duration_seconds_count", {"verb": "get", "host": HOST}),
        sample("rest_client_rate_limiter_duration_seconds_count", {"verb": "patch", "host": HOST}),
    )
    kube = kclient.KubeClient(Canned(), qps=1e6, burst=1000)
    for _ in range(25):
        assert (await kube.get(kclient.NODES, "n"))["metadata"]["name"] == "n"
        with pytest.raises(errors.NotFoundError):
            await kube.patch(kclient.NODES, "n", {}, decode=False)
    after = (
        sample("rest_client_requests_total", ok),
        sample("rest_client_requests_total", missing),
        sample("rest_client_request_duration_seconds_count", {"verb": "get", "host": HOST}),
        sample("rest_client_rate_limiter_duration_seconds_count", {"verb": "patch", "host": HOST}),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [25, 25, 25, 25]
    assert lookups == {
        ("requests", ("200", "GET", HOST)): 1,
        ("requests", ("404", "PATCH", HOST)): 1,
        ("duration", ("get", HOST)): 1,
        ("duration", ("patch", HOST)): 1,
        ("limiter", ("get", HOST)): 1,
        ("limiter", ("patch", HOST)): 1,
    }
