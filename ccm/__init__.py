"""ccm: an out-of-tree Kubernetes cloud controller manager framework.

The import package and the command are ``ccm``; the distribution on the package index is
:data:`DISTRIBUTION` (``ccm`` there is an unrelated project).
"""

from importlib import metadata

__all__ = ["DISTRIBUTION", "version"]

#: The distribution name (``pip install kube-ccm``): where the version is read from.
DISTRIBUTION = "kube-ccm"


def version() -> str:
    """The installed version of :data:`DISTRIBUTION` (``0.0.0+unknown`` from a bare checkout)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0+unknown"
