"""Bad cloud-config files, generated: the fake provider's and the private-cloud sample's factories
either build a provider or raise ConfigError with one line naming the problem — never another
exception, never a multi-line message."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from ccm.errors import ConfigError
from ccm.testing.fake_cloud import FakeCloud

# JSON-like values, as a YAML document may hold them.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

# Keys of the fake's config (files it would write or read are left out: stateFile, statusFile).
FAKE_KEYS = [
    "providerName",
    "capabilities",
    "maxBatchSize",
    "loadBalancer",
    "instances",
    "defaultInstance",
    "errors",
    "latency",
    "rateLimit",
    "routes",
    "statusInterval",
]
FAKE_SECTIONS = {
    "capabilities": ["instancesV2", "instances", "zones", "loadBalancer", "routes", "clusters"],
    "loadBalancer": ["ipPool", "ipMode", "rejectProtocols"],
    "defaultInstance": ["instanceType", "zones", "region", "internalCIDR", "hostnameAddress"],
    "rateLimit": ["qps", "burst"],
}


def _documents(keys: list[str], sections: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Mappings over the known keys (with sections over their known keys) and some unknown ones."""
    section = {
        key: st.dictionaries(st.sampled_from(sub), VALUES, max_size=len(sub)) | VALUES
        for key, sub in sections.items()
    }
    known = st.sampled_from(keys).flatmap(lambda k: st.tuples(st.just(k), section.get(k, VALUES)))
    return st.lists(known, max_size=5).map(dict) | VALUES


def _as_bytes(doc: Any) -> bytes:
    return yaml.safe_dump(doc).encode()


RAW = st.binary(max_size=60) | st.text(max_size=60).map(str.encode)


def _one_line_config_error(exc: BaseException) -> None:
    assert isinstance(exc, ConfigError), f"{type(exc).__name__}: {exc}"
    assert str(exc)
    assert "\n" not in str(exc), str(exc)


def _check_fake(data: bytes) -> None:
    try:
        cloud = FakeCloud.from_config(data)
    except Exception as exc:
        _one_line_config_error(exc)
    else:
        assert isinstance(cloud, FakeCloud)


@given(_documents(FAKE_KEYS, FAKE_SECTIONS).map(_as_bytes))
@example(b"capabilities: [1, 2]")
@example(b"rateLimit: {qps: .nan}")
@example(b'"\\n": null')  # a key with a newline once made a two-line message
def test_fake_config_documents_build_or_fail_with_one_line(data: bytes) -> None:
    _check_fake(data)


@given(RAW)
@example(b"key: [unclosed\n  - x")
@example(b"\xff\xfe")
def test_fake_config_bytes_build_or_fail_with_one_line(data: bytes) -> None:
    _check_fake(data)


PRIVATE_KEYS = ["endpoint", "region", "clusterName", "credentials", "timeouts", "retries"]
PRIVATE_SECTIONS = {
    "credentials": ["tokenFile"],
    "timeouts": ["request", "connect"],
    "retries": ["attempts", "initialBackoff", "maxBackoff"],
}


def _check_private(data: bytes) -> None:
    from private_cloud.provider import PrivateCloudProvider, factory

    try:
        provider = factory(data)
    except Exception as exc:
        _one_line_config_error(exc)
    else:
        assert isinstance(provider, PrivateCloudProvider)


@given(
    _documents(PRIVATE_KEYS, PRIVATE_SECTIONS).map(
        lambda d: {"endpoint": "http://127.0.0.1:9", **d} if isinstance(d, dict) else d
    )
    | _documents(PRIVATE_KEYS, PRIVATE_SECTIONS)
)
@example({"endpoint": "http://127.0.0.1:9", "credentials": {"tokenFile": "a\x00b"}})
@example({"endpoint": "http://127.0.0.1:9", "timeouts": {"request": float("inf")}})
def test_private_cloud_config_documents_build_or_fail_with_one_line(doc: Any) -> None:
    _check_private(_as_bytes(doc))


@given(RAW)
@example(b"endpoint: [unclosed\n  - x")
def test_private_cloud_config_bytes_build_or_fail_with_one_line(data: bytes) -> None:
    _check_private(data)
