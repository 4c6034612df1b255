"""Render and validate the deployment manifests of ``manifests/`` (a kustomize base and overlays).

Rendering runs the pinned ``kustomize`` binary (:func:`ccm.testing.assets.find_kustomize`, built
with Go on first use and cached); validation checks every object against the Kubernetes JSON
schema shipped inside the ``kubernetes-validate`` package (no network), for the Kubernetes minor of
``KUBERNETES_VERSION`` in ``versions.env`` or the newest one the package knows if older.

Command line (``make manifests OVERLAY=fake``)::

    python -m devtools.manifests fake              # print the rendered, validated YAML
    python -m devtools.manifests --list            # the overlays
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ccm import errors
from ccm.testing import assets

__all__ = [
    "MANIFESTS_DIR",
    "ManifestsError",
    "container_args",
    "container_view",
    "daemonset",
    "find",
    "main",
    "overlays",
    "render",
    "render_yaml",
    "schema_version",
    "validate",
]

#: The ``manifests/`` folder of the repository (devtools/manifests.py → ../manifests).
MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "manifests"


class ManifestsError(errors.ConfigError):
    """An overlay does not exist, does not render, or renders an invalid object."""


def overlays() -> list[str]:
    """The names of the overlays under ``manifests/overlays``, sorted."""
    folder = MANIFESTS_DIR / "overlays"
    return sorted(p.name for p in folder.iterdir() if (p / "kustomization.yaml").is_file())


def _overlay_dir(overlay: str | Path) -> Path:
    if isinstance(overlay, Path):
        return overlay
    if overlay == "base":
        return MANIFESTS_DIR / "base"
    path = MANIFESTS_DIR / "overlays" / overlay
    if not (path / "kustomization.yaml").is_file():
        known = ", ".join(overlays())
        raise ManifestsError(f"no overlay {overlay!r} under {path.parent} (known: {known})")
    return path


def render_yaml(overlay: str | Path) -> str:
    """``kustomize build`` of ``overlay``: a name under ``manifests/overlays``, ``base``, or the
    :class:`~pathlib.Path` of any kustomization folder."""
    folder = _overlay_dir(overlay)
    binary = assets.find_kustomize()
    result = subprocess.run(
        [str(binary), "build", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise ManifestsError(f"kustomize build {folder} failed: {result.stderr.strip()}")
    return result.stdout


def render(overlay: str | Path) -> list[dict[str, Any]]:
    """The objects of ``overlay``, in kustomize's output order."""
    docs = [d for d in yaml.safe_load_all(render_yaml(overlay)) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestsError(f"overlay {overlay!r} rendered a non-object document: {doc!r}")
    return docs


def schema_version() -> str:
    """The Kubernetes minor (``1.36``) whose schemas validate: the pinned control plane's, or the
    newest that ``kubernetes-validate`` ships if it has none that new."""
    import kubernetes_validate.utils as kv_utils  # type: ignore[import-untyped]

    wanted = tuple(int(x) for x in assets.versions().kubernetes.removeprefix("v").split(".")[:2])
    shipped = [tuple(int(x) for x in v.split(".")[:2]) for v in kv_utils.all_versions()]
    usable = [v for v in shipped if v <= wanted] or shipped[:1]
    best = max(usable)
    return f"{best[0]}.{best[1]}"


def validate(objects: Iterable[dict[str, Any]], *, version: str | None = None) -> None:
    """Validate each object against the strict schema (unknown fields are errors) of ``version``
    (default :func:`schema_version`); raise :class:`ManifestsError` listing every failure."""
    import kubernetes_validate

    version = version or schema_version()
    problems: list[str] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        what = f"{obj.get('kind')}/{meta.get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{what}: {exc.message} (at {where or '<root>'})")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{what}: {exc.message}")
    if problems:
        raise ManifestsError(
            f"{len(problems)} invalid object(s) for Kubernetes {version}: " + "; ".join(problems)
        )


def find(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name`` (a generated name's hash suffix is ignored)."""
    found = [
        o
        for o in objects
        if o.get("kind") == kind
        and (
            (n := str((o.get("metadata") or {}).get("name"))) == name
            or n.rpartition("-")[0] == name
        )
    ]
    if len(found) != 1:
        raise ManifestsError(f"expected one {kind} {name!r}, found {len(found)}")
    return found[0]


def daemonset(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``cloud-controller-manager`` DaemonSet."""
    return find(objects, "DaemonSet", "cloud-controller-manager")


def container_args(objects: Iterable[dict[str, Any]]) -> list[str]:
    """The args of the ``cloud-controller-manager`` container of the DaemonSet."""
    spec = daemonset(objects)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "cloud-controller-manager"]
    return [str(a) for a in container.get("args") or ()]


def _volume_files(objects: Sequence[dict[str, Any]], volume: dict[str, Any]) -> dict[str, bytes]:
    """The files a Secret or ConfigMap volume shows (every key, or the ``items`` it lists)."""
    kind = "Secret" if "secret" in volume else "ConfigMap" if "configMap" in volume else ""
    source = volume.get("secret") or volume.get("configMap") or {}
    name = str(source.get("secretName") or source.get("name"))
    if not [o for o in objects if o.get("kind") == kind]:
        return {}  # none rendered: the cluster provides it
    if kind == "Secret":
        obj = find(objects, "Secret", name)
        files = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        files |= {k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()}
    else:
        obj = find(objects, "ConfigMap", name)
        files = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        files |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    if items := source.get("items"):
        return {str(i["path"]): files[i["key"]] for i in items if i["key"] in files}
    return files


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def container_view(objects: Sequence[dict[str, Any]], root: Path) -> list[str]:
    """What the ``cloud-controller-manager`` container would see, laid out under ``root``: every
    Secret/ConfigMap volume it mounts is written to ``root`` + its mount path, and the container's
    args are returned with each mount path prefixed by ``root``. Mount paths inside the mounted
    files (a cloud config's ``tokenFile: /etc/ccm/token``) are rewritten the same way, so a
    provider's config parser reads the files the Pod would. A volume whose kind (Secret,
    ConfigMap) ``objects`` has none of is left empty (the cluster provides it); one whose object is
    missing among rendered ones raises :class:`ManifestsError`."""
    spec = daemonset(objects)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "cloud-controller-manager"]
    volumes = {v["name"]: v for v in spec.get("volumes") or ()}
    mounts = [m for m in container.get("volumeMounts") or () if m["name"] in volumes]
    paths = sorted((str(m["mountPath"]) for m in mounts), key=len, reverse=True)

    # One pass over every mount path (longest first), each only as a whole path segment.
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(p.rstrip("/")) for p in paths) + r")(?![\w.-])"
    )

    def rebase(text: str) -> str:
        return pattern.sub(lambda m: f"{root}{m.group(1)}", text) if paths else text

    for mount in mounts:
        folder = root / str(mount["mountPath"]).lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in _volume_files(objects, volumes[mount["name"]]).items():
            data = content
            if content.isascii() or _is_utf8(content):
                data = rebase(content.decode("utf-8")).encode("utf-8")
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    return [rebase(str(a)) for a in container.get("args") or ()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m devtools.manifests``."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.manifests",
        description="Render (kustomize build) and validate an overlay of manifests/; print YAML.",
    )
    parser.add_argument("overlay", nargs="?", default="fake", help="overlay name (default: fake)")
    parser.add_argument("--list", action="store_true", help="list the overlays and exit")
    parser.add_argument("--no-validate", action="store_true", help="skip schema validation")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(overlays()))
        return 0
    try:
        text = render_yaml(args.overlay)
        if not args.no_validate:
            validate(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
    except (ManifestsError, assets.AssetsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
