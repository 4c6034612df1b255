"""Render the Helm chart of ``charts/ccm`` with the pinned ``helm`` v4, built with Go on first use.

Like kustomize (:mod:`devtools.manifests`): ``$CCM_HELM`` (a binary path) is used as is;
otherwise the binary cached in :func:`ccm.testing.assets.cached_assets_dir` is used when its
version is ``HELM_VERSION`` of ``versions.env``, else it is built there from the Go module proxy
(``helm.sh/helm/v4/cmd/helm``; one progress line, the Go caches make a rebuild quick).

Command line (``make chart VALUES=...``)::

    python -m devtools.helm                         # default values: print the rendered YAML
    python -m devtools.helm -f my-values.yaml --set provider.name=private-cloud
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ccm.testing import assets
from devtools import manifests

__all__ = [
    "CHART_DIR",
    "EXAMPLE_VALUES",
    "HELM_BINARY",
    "build_helm",
    "find_helm",
    "helm_version",
    "lint",
    "main",
    "render",
    "render_yaml",
]

#: The chart folder of the repository (devtools/helm.py → ../charts/ccm).
CHART_DIR = Path(__file__).resolve().parents[1] / "charts" / "ccm"
HELM_BINARY = "helm"
_HELM_MODULE = "helm.sh/helm/v4"
#: The release name and namespace ``render`` uses (the chart's objects are named after neither).
RELEASE = "ccm"
NAMESPACE = "kube-system"


#: Value sets that the tests render, validate, start (unit) and dry-run apply (e2e): the default,
#: a provider with its config and token inline, and the optional parts switched on.
EXAMPLE_VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "private-cloud": {
        "image": {"repository": "registry.example/ccm-private-cloud", "tag": "v0.1.0"},
        "provider": {"name": "private-cloud"},
        "cloudConfig": {
            "inline": "endpoint: https://cloud-api.example.internal\nregion: region-1\n"
            "credentials:\n  tokenFile: /etc/ccm/token\n",
            "files": {"token": "s3cret\n"},
        },
    },
    "routes-metrics-extras": {
        "routes": {"enabled": True, "clusterCIDR": "10.244.0.0/16"},
        "extraArgs": ["--v=2", "--kube-api-qps=50", "--tls-min-version=VersionTLS13"],
        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"}],
        "podAnnotations": {"example.com/team": "platform"},
        "extraVolumes": [{"name": "ca", "configMap": {"name": "cloud-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/cloud-ca", "readOnly": True}],
        "priorityClassName": "system-node-critical",
        "metrics": {
            "service": {"enabled": True},
            "readerRBAC": {
                "enabled": True,
                "subjects": [
                    {"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}
                ],
            },
        },
    },
}


def helm_version() -> str:
    """The pinned ``HELM_VERSION`` of ``versions.env`` (``v4.3.2``)."""
    value = assets._pinned_value("HELM_VERSION")
    if not value:
        raise assets.AssetsError("ccm/testing/versions.env does not define HELM_VERSION")
    return value


def find_helm() -> Path:
    """The path of a ``helm`` binary: ``$CCM_HELM``, or the cached one at the pinned version
    (built by :func:`build_helm` when missing)."""
    if explicit := os.environ.get("CCM_HELM"):
        binary = Path(explicit)
        if not assets._is_executable(binary):
            raise assets.AssetsError(f"CCM_HELM={binary} is not an executable file")
        return binary
    target = assets.cached_assets_dir() / HELM_BINARY
    if _helm_version_of(target) == helm_version():
        return target
    return build_helm()


def build_helm(*, log: bool = True) -> Path:
    """Build helm at the pinned version into the assets cache; return its path. A scratch main
    module requires ``helm.sh/helm/v4/cmd/helm@<version>``; the version is stamped with
    ``-ldflags -X`` (as helm's release build does) so ``helm version`` reports it."""
    version = helm_version()
    pinned = assets.versions()
    folder = assets.cached_assets_dir(pinned)
    work = assets.cache_dir() / "build"
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    builder = assets._Builder(pinned=pinned, assets=folder, work=work, log=log)
    target = folder / HELM_BINARY
    with assets._locked(work / ".lock"):
        if _helm_version_of(target) == version:
            return target
        go = assets._go()
        module = builder._fresh_dir(f"helm-{version}")
        builder.say(f"building helm {version} into {folder} (first use only)")
        builder._go(go, module, "mod", "init", "ccm.invalid/helmbuild", quiet=True)
        builder._go(go, module, "get", f"{_HELM_MODULE}/cmd/helm@{version}", quiet=True)
        ldflags = f"-s -w -X {_HELM_MODULE}/internal/version.version={version}"
        builder._install(go, module, target, ["-ldflags", ldflags], f"{_HELM_MODULE}/cmd/helm")
    return target


def _helm_version_of(binary: Path) -> str:
    if not assets._is_executable(binary):
        return ""
    try:
        result = subprocess.run(
            [str(binary), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def _value_args(values: Sequence[Mapping[str, Any]], folder: Path) -> list[str]:
    args: list[str] = []
    for i, overrides in enumerate(values):
        path = folder / f"values-{i}.yaml"
        path.write_text(yaml.safe_dump(dict(overrides)), "utf-8")
        args += ["--values", str(path)]
    return args


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    # A scratch home: rendering never reads or writes the user's helm config or caches.
    with tempfile.TemporaryDirectory(prefix="ccm-helm-home-") as home:
        env = dict(os.environ)
        for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[key] = str(Path(home) / key.lower())
        return subprocess.run(
            [str(find_helm()), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )


def render_yaml(*values: Mapping[str, Any], chart: Path = CHART_DIR) -> str:
    """``helm template`` of ``chart`` with ``values`` (mappings applied in order, as ``-f``)."""
    with tempfile.TemporaryDirectory(prefix="ccm-helm-values-") as tmp:
        result = _helm(
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            *_value_args(values, Path(tmp)),
        )
    if result.returncode != 0:
        raise manifests.ManifestsError(f"helm template {chart} failed: {result.stderr.strip()}")
    return result.stdout


def render(*values: Mapping[str, Any], chart: Path = CHART_DIR) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (see :func:`render_yaml`)."""
    docs = [d for d in yaml.safe_load_all(render_yaml(*values, chart=chart)) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise manifests.ManifestsError(f"the chart rendered a non-object document: {doc!r}")
    return docs


def lint(*values: Mapping[str, Any], chart: Path = CHART_DIR) -> None:
    """``helm lint --strict`` (values checked against ``values.schema.json``); raise
    :class:`~devtools.manifests.ManifestsError` with helm's output when it fails."""
    with tempfile.TemporaryDirectory(prefix="ccm-helm-values-") as tmp:
        result = _helm("lint", "--strict", str(chart), *_value_args(values, Path(tmp)))
    if result.returncode != 0:
        raise manifests.ManifestsError(
            f"helm lint {chart} failed: {(result.stdout + result.stderr).strip()}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m devtools.helm``."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.helm",
        description="Render (helm template) and validate the chart charts/ccm; print YAML.",
    )
    parser.add_argument("-f", "--values", action="append", default=[], help="a values file")
    parser.add_argument("--no-validate", action="store_true", help="skip schema validation")
    args = parser.parse_args(argv)
    try:
        values = [yaml.safe_load(Path(p).read_text("utf-8")) or {} for p in args.values]
        text = render_yaml(*values)
        if not args.no_validate:
            manifests.validate(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
    except (OSError, manifests.ManifestsError, assets.AssetsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
