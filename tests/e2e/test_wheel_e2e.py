"""The distribution as a new user gets it: wheels of kube-ccm and of a sample provider, built here,
install into a clean virtualenv and resolve to this project (never the unrelated `ccm` of the
package index): ``ccm --version`` reads kube-ccm's metadata, ``ccm --help`` runs, the sample's
entry point is found and depends on kube-ccm. The clean venv gets the dependencies from the test
environment's site-packages by path (no index, no network); kube-ccm itself only from the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("wheel")
    wheels = work / "wheels"
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--wheel-dir",
        wheels,
        REPO,
        REPO / "samples/minimal-provider",
    )
    assert built.returncode == 0, built.stderr
    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin/python"
    installed = _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        *sorted(wheels.glob("*.whl")),
    )
    assert installed.returncode == 0, installed.stderr
    # The dependencies, by path, after the venv's own site-packages (kube-ccm's copy comes first;
    # .pth files of that folder, such as the editable install's, are not processed).
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    (Path(site.stdout.strip()) / "zz_test_deps.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return venv, built.stdout + built.stderr


def test_wheel_build_is_quiet_about_packaging(clean_venv: tuple[Path, str]) -> None:
    _, output = clean_venv
    assert "Deprecat" not in output, output  # e.g. the license table form of pyproject
    assert "kube_ccm-" in output


def test_version_is_kube_ccms(clean_venv: tuple[Path, str]) -> None:
    venv, _ = clean_venv
    version = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    result = _run(venv / "bin/ccm", "--version", cwd=venv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ccm {version}"


def test_help_runs_from_the_installed_package(clean_venv: tuple[Path, str]) -> None:
    venv, _ = clean_venv
    result = _run(venv / "bin/ccm", "--help", cwd=venv)
    assert result.returncode == 0, result.stderr
    assert "Generic flags:" in result.stdout
    assert "ccm conformance" in result.stdout


def test_package_and_sample_resolve_to_this_project(clean_venv: tuple[Path, str]) -> None:
    venv, _ = clean_venv
    probe = (
        "import ccm, json, importlib.metadata as m\n"
        "ep = [e for e in m.entry_points(group='ccm.cloud_providers') if e.name == 'minimal'][0]\n"
        "print(json.dumps({'ccm': ccm.__file__, 'dist': ep.dist.name,\n"
        "  'requires': m.requires('ccm-sample-minimal-provider'),\n"
        "  'ccm_files': str(m.distribution('kube-ccm').locate_file('ccm')),\n"
        "  'fake': [e.value for e in m.entry_points(group='ccm.cloud_providers')\n"
        "           if e.name == 'fake'], 'factory': repr(ep.load())}))\n"
    )
    result = _run(venv / "bin/python", "-c", probe, cwd=venv)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ccm"].startswith(str(venv)), info
    assert info["ccm_files"].startswith(str(venv)), info
    assert info["dist"] == "ccm-sample-minimal-provider"
    assert any(r.startswith("kube-ccm") for r in info["requires"]), info["requires"]
    assert not any(r.split()[0] in ("ccm", "ccm;") for r in info["requires"])
    assert info["fake"] == ["ccm.testing.fake_cloud:FakeCloudFactory"]
