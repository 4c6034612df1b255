"""ccm: an out-of-tree Kubernetes cloud controller manager framework.

The import package and the command are ``ccm``; the distribution on the package index is
:data:`DISTRIBUTION` (``ccm`` there is an unrelated project).

Each package has one audience (the import contracts in pyproject.toml keep it so):

* the runtime, for this repository's maintainers and embedding programs: :mod:`ccm.app`,
  :mod:`ccm.controllers`, :mod:`ccm.kube`, :mod:`ccm.leaderelection` (and :mod:`ccm.doctor`, the
  operator's troubleshooting command);
* the provider contract and toolkit, for provider authors: :mod:`ccm.cloudprovider` and
  :mod:`ccm.errors`;
* the provider testing kit, for provider authors' tests: :mod:`ccm.testing`;
* the command, :mod:`ccm.cli`, the one module that imports both the runtime and the testing kit.

This repository's own tooling (``bench/``, ``chaos/``, ``devtools/``) lives outside the installed
package.
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
