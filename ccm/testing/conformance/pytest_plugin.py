"""The conformance scenarios as pytest test items in a provider author's own suite.

Not auto-registered (ccm's ``pytest11: ccm`` plugin stays as it is); enable it in a ``conftest.py``
and supply the provider (and, for anything but the fake provider, the driver)::

    # conftest.py
    import pytest
    pytest_plugins = ["ccm.testing.conformance.pytest_plugin"]

    @pytest.fixture
    def conformance_provider():
        return MyCloud(...)            # a fresh provider per scenario

    @pytest.fixture
    def conformance_driver(conformance_provider):
        return MyCloudDriver(...)      # a ccm.testing.conformance.driver.ConformanceDriver

    # test_conformance.py
    from ccm.testing.conformance.pytest_plugin import test_conformance  # noqa: F401

``test_conformance`` is parametrized over every scenario (ids ``<capability>/<scenario>``); each
item runs one scenario on the real controllers in-process, against the kube-apiserver of the
``conformance_kubeconfig`` fixture (default: ccm's session ``control_plane``). A scenario the
provider does not offer is *skipped* with reason ``not offered: ...``, one whose rule the driver
declares does not hold for its cloud with ``not applicable: ...`` (neither is ever passed); a
failure names the broken rule. A passed scenario with checks it could not verify in the cloud
records them as ``unverified`` user properties (in pytest's JUnit XML) and issues an
:class:`UnverifiedChecksWarning` naming them. Override ``conformance_config`` (a
:class:`SuiteConfig`) to change bounds. Select a capability with ``-k instances-v2`` etc.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

from ccm.cloudprovider import CloudProvider
from ccm.testing.conformance.driver import ConformanceDriver
from ccm.testing.conformance.suite import SCENARIOS, Scenario, SuiteConfig, run_suite

__all__ = [
    "UnverifiedChecksWarning",
    "conformance_config",
    "conformance_driver",
    "conformance_kubeconfig",
    "test_conformance",
]


class UnverifiedChecksWarning(UserWarning):
    """A scenario passed on the provider's word for checks the driver could not verify."""


@pytest.fixture
def conformance_config() -> SuiteConfig:
    """Bounds and names of a run; override to change them."""
    return SuiteConfig()


@pytest.fixture
def conformance_kubeconfig(request: pytest.FixtureRequest) -> str:
    """The kubeconfig of the cluster to run on: ccm's session ``control_plane`` by default."""
    cp = request.getfixturevalue("control_plane")
    return str(cp.kubeconfig_path)


@pytest.fixture
def conformance_driver(conformance_provider: CloudProvider) -> ConformanceDriver | None:
    """The driver: the fake provider's own for a FakeCloud, else None (override it)."""
    from ccm.testing.conformance.fake_driver import fake_driver_factory

    try:
        return fake_driver_factory(conformance_provider)
    except TypeError:
        return None


def _ids(sc: Scenario) -> str:
    return f"{sc.capability}/{sc.name}"


@pytest.mark.e2e
@pytest.mark.parametrize("conformance_scenario", SCENARIOS, ids=_ids)
def test_conformance(
    conformance_scenario: Scenario,
    conformance_provider: CloudProvider,
    conformance_driver: ConformanceDriver | None,
    conformance_kubeconfig: str,
    conformance_config: SuiteConfig,
    request: pytest.FixtureRequest,
) -> None:
    """One conformance scenario."""

    async def go() -> Any:
        try:
            return await run_suite(
                conformance_provider,
                conformance_driver,
                kubeconfig=conformance_kubeconfig,
                config=conformance_config,
                scenarios=[conformance_scenario],
            )
        finally:
            await conformance_provider.aclose()

    report = asyncio.run(go())
    (result,) = report.results
    if result.outcome in ("not offered", "not applicable"):
        pytest.skip(f"{result.outcome}: {result.reason}")
    if result.outcome == "failed":
        pytest.fail(result.reason, pytrace=False)
    for check in result.unverified:
        request.node.user_properties.append(("unverified", check))
    if result.unverified:
        warnings.warn(
            UnverifiedChecksWarning(
                f"{result.scenario}: unverified: {'; '.join(result.unverified)}"
            ),
            stacklevel=1,
        )
