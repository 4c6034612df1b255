"""Start-up cost: what the daemon's modules import before any work starts.

Each check imports in a fresh interpreter and lists the modules loaded: a module-level import of
something only some runs need (a controller that may not run, a flag's feature, the testing kit's
test side) would put its import cost on every start.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.fixture(scope="module")
def cli_modules() -> set[str]:
    return _loaded_after("import ccm.cli")


@pytest.mark.parametrize(
    "module",
    [
        # Controllers are imported by their constructors, on the leader, when they run.
        "ccm.controllers.route",
        "ccm.controllers.nodelifecycle",
        # Only with --use-service-account-credentials.
        "ccm.kube.credentials",
        # The secure server and its authorization: only with --secure-port, when it starts.
        "ccm.app.serving",
        "ccm.app.auth",
        "aiohttp.web",
        # Only to generate a self-signed serving certificate.
        "ccm.certs",
        "cryptography.x509",
        # The runtime never imports the testing kit, nor pydantic.
        "ccm.testing",
        "pydantic",
    ],
)
def test_the_command_does_not_import(cli_modules: set[str], module: str) -> None:
    assert importlib.util.find_spec(module) is not None  # a real module name
    assert module not in cli_modules


def test_the_fake_provider_does_not_import_its_test_side() -> None:
    loaded = _loaded_after("from ccm.testing.fake_cloud import FakeCloudFactory")
    assert "ccm.testing.fake_cloud.provider" in loaded
    assert "ccm.testing.fake_cloud.state" not in loaded


def test_the_test_side_is_still_importable_from_the_package() -> None:
    from ccm.testing.fake_cloud import FakeCloudState
    from ccm.testing.fake_cloud.state import FakeCloudState as direct

    assert FakeCloudState is direct


def test_parsing_flags_does_not_list_the_installed_providers() -> None:
    # Listing them scans every installed distribution's entry points: only --help shows them.
    loaded = _loaded_after(
        "from ccm.cloudprovider import registry\n"
        "calls = []\n"
        "registry.installed_providers = lambda: calls.append(1) or []\n"
        "from ccm.app import options\n"
        "options.parse_args(['--cloud-provider=fake'])\n"
        "assert not calls, calls\n"
        "text = options.build_parser().format_help()\n"
        "assert calls == [1], calls\n"
        "assert text.rstrip().endswith('register()): none.'), text[-200:]\n"
    )
    assert "ccm.app.options" in loaded
