"""The provider testing kit's layout: a conformance package whose scenarios do not import the runner
that imports them, and none of this repository's own tooling. (The size of its modules is checked
with every other module's in tests/unit/test_architecture.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ccm.testing

KIT = Path(ccm.testing.__file__).resolve().parent
SCENARIO_MODULES = ["scenarios_hygiene", "scenarios_instances", "scenarios_lb", "scenarios_routes"]


@pytest.mark.parametrize("module", SCENARIO_MODULES)
def test_a_scenario_module_imports_without_the_runner(module: str) -> None:
    code = (
        "import sys\n"
        f"import ccm.testing.conformance.{module}\n"
        "print('ccm.testing.conformance.suite' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_runner_registers_every_scenario_once() -> None:
    from ccm.testing.conformance import suite

    capabilities = [s.capability for s in suite.SCENARIOS]
    assert set(capabilities) == set(suite.CAPABILITIES)
    names = [s.name for s in suite.SCENARIOS]
    assert len(names) == len(set(names))


def test_the_repository_tooling_is_not_in_the_installed_package() -> None:
    for name in ("demo", "manifests", "helm"):
        assert not (KIT / f"{name}.py").exists()
