"""Find, or build and cache, the ``kube-apiserver`` and ``etcd`` binaries of the real control plane.

No package registry ships a kube-apiserver binary, so both are built with Go from the Go module
proxy, at the versions pinned in ``ccm/testing/versions.env`` (the one place they are defined), into
a cache outside the work tree. Lookup order of :func:`find_assets`:

1. ``$KUBEBUILDER_ASSETS`` (the envtest convention), used as is; a missing binary there is an error.
2. ``$CCM_ASSETS_DIR``, else ``${CCM_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/ccm}/assets/<k8s
   version>``, when both binaries are there.
3. Otherwise :func:`build_assets` builds them into that directory (needs ``go`` on ``PATH``).

kube-apiserver cannot be ``go install``-ed: ``k8s.io/kubernetes`` requires its staging modules at
``v0.0.0`` with local ``replace`` directives. The build uses a scratch main module that replaces
each staging module, read from the exact version's go.mod, with its published
``v0.<minor>.<patch>``. etcd is built the same way from ``go.etcd.io/etcd/server/v3`` (its go.mod
has replaces too).

Command line (used by the Makefile and ``hack/build-controlplane.sh``)::

    python -m ccm.testing.assets path    # print the assets dir, building it if needed (default)
    python -m ccm.testing.assets build   # the same, but also rebuild cached binaries whose
                                         # --version differs from the pin
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ccm import errors

__all__ = [
    "APISERVER_BINARY",
    "ETCD_BINARY",
    "KUSTOMIZE_BINARY",
    "AssetBuildError",
    "AssetsError",
    "GoNotFoundError",
    "Versions",
    "build_assets",
    "build_kustomize",
    "cache_dir",
    "cached_assets_dir",
    "find_assets",
    "find_kustomize",
    "kustomize_version",
    "main",
    "versions",
]

APISERVER_BINARY = "kube-apiserver"
ETCD_BINARY = "etcd"

_STAGING_RE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/\S+) => \./staging/src/", re.MULTILINE)
_GO_LINE_RE = re.compile(r"^go (\d+(?:\.\d+)*)\s*$", re.MULTILINE)


class AssetsError(errors.ConfigError):
    """The control-plane binaries cannot be found or built."""


class GoNotFoundError(AssetsError):
    """``go`` is not on ``PATH``, so the binaries cannot be built."""


class AssetBuildError(AssetsError):
    """A ``go`` command failed while building a binary."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Versions:
    """The pinned control-plane versions from ``versions.env`` (``v1.36.3``, ``v3.6.16``)."""

    kubernetes: str
    etcd: str


def versions() -> Versions:
    """Read the pinned versions from the ``versions.env`` package data of ``ccm.testing``."""
    text = importlib.resources.files("ccm.testing").joinpath("versions.env").read_text("utf-8")
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("\"'")
    try:
        return Versions(kubernetes=values["KUBERNETES_VERSION"], etcd=values["ETCD_VERSION"])
    except KeyError as exc:
        raise AssetsError(f"ccm/testing/versions.env does not define {exc.args[0]}") from None


def cache_dir() -> Path:
    """``$CCM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ccm``, else ``~/.cache/ccm``."""
    if explicit := os.environ.get("CCM_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ccm"


def cached_assets_dir(pinned: Versions | None = None) -> Path:
    """Where built binaries are cached: ``$CCM_ASSETS_DIR`` or ``<cache_dir>/assets/<k8s ver>``."""
    if explicit := os.environ.get("CCM_ASSETS_DIR"):
        return Path(explicit)
    return cache_dir() / "assets" / (pinned or versions()).kubernetes


def find_assets() -> Path:
    """Return a directory holding ``kube-apiserver`` and ``etcd``, building them if needed.

    Raises :class:`AssetsError` (a :class:`ccm.errors.ConfigError`) when ``$KUBEBUILDER_ASSETS``
    lacks a binary, :class:`GoNotFoundError` when a build is needed but ``go`` is missing, and
    :class:`AssetBuildError` when the build fails.
    """
    if explicit := os.environ.get("KUBEBUILDER_ASSETS"):
        folder = Path(explicit)
        missing = [
            name for name in (APISERVER_BINARY, ETCD_BINARY) if not _is_executable(folder / name)
        ]
        if missing:
            raise AssetsError(
                f"KUBEBUILDER_ASSETS={folder} has no executable {' or '.join(missing)}; "
                "unset it to let ccm build and cache the binaries"
            )
        return folder
    folder = cached_assets_dir()
    if _is_executable(folder / APISERVER_BINARY) and _is_executable(folder / ETCD_BINARY):
        return folder
    return build_assets()


def build_assets(*, log: bool = True) -> Path:
    """Build kube-apiserver and etcd into :func:`cached_assets_dir`; return that directory.

    A binary already there whose ``--version`` matches the pinned version is kept. Go's module and
    build caches (``go env GOMODCACHE GOCACHE``) make a rebuild quick. Concurrent builds
    (pytest-xdist workers, parallel ``make`` targets) serialise on a lock file in the cache
    directory.
    """
    pinned = versions()
    assets = cached_assets_dir(pinned)
    work = cache_dir() / "build"
    assets.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    builder = _Builder(pinned=pinned, assets=assets, work=work, log=log)
    with _locked(work / ".lock"):
        started = time.monotonic()
        builder.build_etcd()
        builder.build_apiserver()
        builder.say(f"assets ready in {assets} ({time.monotonic() - started:.0f} s)")
    return assets


@dataclasses.dataclass(slots=True, kw_only=True)
class _Builder:
    pinned: Versions
    assets: Path
    work: Path
    log: bool

    def say(self, message: str) -> None:
        if self.log:
            print(f"build-controlplane: {message}", file=sys.stderr, flush=True)

    def build_etcd(self) -> None:
        target = self.assets / ETCD_BINARY
        wanted = f"etcd Version: {self.pinned.etcd.removeprefix('v')}"
        if _version_output(target).startswith(wanted):
            self.say(f"etcd {self.pinned.etcd} cached in {self.assets}")
            return
        go = _go()
        module = self._fresh_dir(f"etcd-{self.pinned.etcd}")
        self.say(f"building etcd {self.pinned.etcd} in {module}")
        self._go(go, module, "mod", "init", "ccm.invalid/etcdbuild", quiet=True)
        self._go(go, module, "get", f"go.etcd.io/etcd/server/v3@{self.pinned.etcd}")
        self._install(go, module, target, ["-ldflags", "-s -w"], "go.etcd.io/etcd/server/v3")

    def build_apiserver(self) -> None:
        version = self.pinned.kubernetes
        target = self.assets / APISERVER_BINARY
        if _version_output(target).strip() == f"Kubernetes {version}":
            self.say(f"kube-apiserver {version} cached in {self.assets}")
            return
        go = _go()
        _, minor, patch = version.removeprefix("v").split(".")[:3]
        module = self._fresh_dir(f"kube-apiserver-{version}")
        self.say(f"building kube-apiserver {version} in {module}")
        self._go(go, module, "mod", "init", "ccm.invalid/kubebuild", quiet=True)
        info = json.loads(
            self._go(
                go, module, "mod", "download", "-json", f"k8s.io/kubernetes@{version}", quiet=True
            )
        )
        upstream = Path(info["GoMod"]).read_text("utf-8")
        edits: list[str] = []
        if go_line := _GO_LINE_RE.search(upstream):
            edits.append(f"-go={go_line.group(1)}")
        # Upstream requires each staging module at v0.0.0 and replaces it with a local path; point
        # each at its published v0.<minor>.<patch>. The list differs between releases, so read it.
        staging = f"v0.{minor}.{patch}"
        edits += [f"-replace={m}={m}@{staging}" for m in sorted(set(_STAGING_RE.findall(upstream)))]
        self._go(go, module, "mod", "edit", *edits)
        self._go(go, module, "get", "-tool", f"k8s.io/kubernetes/cmd/kube-apiserver@{version}")
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion={version}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
            ]
        )
        self._install(
            go, module, target, ["-ldflags", ldflags], "k8s.io/kubernetes/cmd/kube-apiserver"
        )

    def _fresh_dir(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def _install(self, go: str, module: Path, target: Path, flags: list[str], package: str) -> None:
        partial = target.with_name(target.name + ".tmp")
        self._go(go, module, "build", *flags, "-o", str(partial), package)
        partial.replace(target)

    def _go(self, go: str, cwd: Path, *args: str, quiet: bool = False) -> str:
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath", "GOTOOLCHAIN": "local"}
        command = [go, *args]
        # go's progress goes to stderr (ours), so that stdout of the CLI is only the assets path.
        result = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if quiet or not self.log else None,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()[-1:] or ["see the output above"]
            raise AssetBuildError(
                f"`{' '.join(command)}` failed in {cwd} (exit {result.returncode}): {detail[0]}"
            )
        return result.stdout


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        pinned = versions()
        raise GoNotFoundError(
            f"`go` is not on PATH: it is needed to build kube-apiserver {pinned.kubernetes} and "
            f"etcd {pinned.etcd}; install Go >= 1.26, or set KUBEBUILDER_ASSETS to a folder "
            "holding both"
        )
    return go


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _version_output(binary: Path) -> str:
    if not _is_executable(binary):
        return ""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ccm.testing.assets``; prints the assets directory."""
    parser = argparse.ArgumentParser(
        prog="python -m ccm.testing.assets",
        description="Find or build the kube-apiserver and etcd binaries; print their directory.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="path",
        choices=["path", "build"],
        help="path: KUBEBUILDER_ASSETS, else the cache, built if missing (default); "
        "build: the same, but rebuild cached binaries whose --version is not the pinned one",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "build" and not os.environ.get("KUBEBUILDER_ASSETS"):
            folder = build_assets()
        else:
            folder = find_assets()
    except AssetsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


# --- kustomize (renders manifests/; used by devtools.manifests and `make manifests`) -------------

KUSTOMIZE_BINARY = "kustomize"
_KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"


def _pinned_value(name: str) -> str:
    """The value of ``name`` in ``versions.env`` (``""`` when absent)."""
    text = importlib.resources.files("ccm.testing").joinpath("versions.env").read_text("utf-8")
    for raw in text.splitlines():
        key, sep, value = raw.strip().partition("=")
        if sep and key.strip() == name:
            return value.strip().strip("\"'")
    return ""


def kustomize_version() -> str:
    """The pinned ``KUSTOMIZE_VERSION`` of ``versions.env`` (``v5.8.2``)."""
    if value := _pinned_value("KUSTOMIZE_VERSION"):
        return value
    raise AssetsError("ccm/testing/versions.env does not define KUSTOMIZE_VERSION")


def find_kustomize() -> Path:
    """Return the path of a ``kustomize`` binary at the pinned version, building it if needed.

    ``$CCM_KUSTOMIZE`` (a binary path) is used as is; otherwise the binary cached in
    :func:`cached_assets_dir` is used when its ``kustomize version`` is the pinned one, else
    :func:`build_kustomize` builds it there (needs ``go`` on ``PATH``; the Go caches make a rebuild
    quick).
    """
    if explicit := os.environ.get("CCM_KUSTOMIZE"):
        binary = Path(explicit)
        if not _is_executable(binary):
            raise AssetsError(f"CCM_KUSTOMIZE={binary} is not an executable file")
        return binary
    target = cached_assets_dir() / KUSTOMIZE_BINARY
    if _kustomize_version_of(target) == kustomize_version():
        return target
    return build_kustomize()


def build_kustomize(*, log: bool = True) -> Path:
    """Build kustomize at the pinned version into :func:`cached_assets_dir`; return its path.

    Like etcd: a scratch main module requires ``sigs.k8s.io/kustomize/kustomize/v5@<version>``
    and builds it (``kustomize version`` reads the version from the build info). Serialises with
    :func:`build_assets` on the same lock file.
    """
    version = kustomize_version()
    pinned = versions()
    folder = cached_assets_dir(pinned)
    work = cache_dir() / "build"
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    builder = _Builder(pinned=pinned, assets=folder, work=work, log=log)
    target = folder / KUSTOMIZE_BINARY
    with _locked(work / ".lock"):
        if _kustomize_version_of(target) == version:
            return target
        go = _go()
        module = builder._fresh_dir(f"kustomize-{version}")
        builder.say(f"building kustomize {version} in {module}")
        builder._go(go, module, "mod", "init", "ccm.invalid/kustomizebuild", quiet=True)
        builder._go(go, module, "get", f"{_KUSTOMIZE_MODULE}@{version}", quiet=True)
        builder._install(go, module, target, ["-ldflags", "-s -w"], _KUSTOMIZE_MODULE)
        builder.say(f"kustomize {version} ready in {folder}")
    return target


def _kustomize_version_of(binary: Path) -> str:
    if not _is_executable(binary):
        return ""
    try:
        result = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
