"""The ``ccm`` command: the one module that sees both the runtime and the provider testing kit.

``ccm conformance ...`` runs the testing kit's conformance suite
(:mod:`ccm.testing.conformance.cli`), ``ccm doctor ...`` the read-only troubleshooting checks
(:mod:`ccm.doctor.cli`); anything else runs the daemon (:func:`ccm.app.main.run`). This layer sits
above ``ccm.app`` in the import contracts, and it alone may import ``ccm.testing`` as well: the
runtime never does. Each subcommand is imported only when it is asked for, so the daemon starts
without loading either.

An embedding program (``samples/embedded-main``) calls :func:`run` with the same keyword arguments
as :func:`ccm.app.main.run` to keep the subcommands under its own command name, or
:func:`ccm.app.main.run` to run the daemon only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ccm.app import main as appmain
from ccm.app.manager import ControllerSpec
from ccm.app.options import Options
from ccm.cloudprovider import FlagSet

__all__ = ["main", "run"]


def run(
    argv: list[str] | None = None,
    *,
    prog: str = "ccm",
    defaults: Options | None = None,
    controllers: dict[str, ControllerSpec] | None = None,
    client_names: dict[str, str] | None = None,
    flag_sets: Sequence[FlagSet] = (),
) -> int:
    """Run the subcommand ``argv`` names (default ``sys.argv[1:]``), or else the daemon; returns
    the exit code. The keyword arguments go to :func:`ccm.app.main.run`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "conformance":
        from ccm.testing.conformance import cli as conformancecli

        return conformancecli.main(args[1:])
    if args and args[0] == "doctor":
        from ccm.doctor import cli as doctorcli

        return doctorcli.main(args[1:])
    return appmain.run(
        args,
        prog=prog,
        defaults=defaults,
        controllers=controllers,
        client_names=client_names,
        flag_sets=flag_sets,
    )


def main() -> None:
    """Console-script entry point (``ccm``, ``python -m ccm``)."""
    sys.exit(run())
