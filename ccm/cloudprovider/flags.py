"""Flags of one's own: what a provider package or an embedding program adds to the ``ccm``
command line (upstream ``NewCloudControllerManagerCommand``'s ``additionalFlags``, a
``NamedFlagSets``).

A :class:`FlagSet` is a namespace: every flag in it is called ``--<namespace>-...``, is shown in
``--help`` under ``<namespace> flags``, and is parsed with the same Go-style syntax as ccm's own
(``--flag=value`` or ``--flag value``; booleans also as a bare ``--flag``; durations as ``5s``,
``1m30s``). Their values reach the provider (``InitContext.flags``, and the factory's ``flags=``
keyword when the factory declares them) and the added controllers (``ControllerContext.flags``),
as a mapping from the flag's name without the leading dashes (``"mycloud-tag-prefix"``) to its
value.

A provider package declares its flags on its entry-point factory (namespace: the provider's
name)::

    def factory(config: bytes | None, *, flags: Mapping[str, Any]) -> MyCloud:
        return MyCloud(config, region=flags["mycloud-region"])

    factory.flags = (Flag(name="--mycloud-region", help="Region to manage.", default="eu-1"),)

An embedding program passes ``ccm.app.main.run(..., flag_sets=[FlagSet(...)])``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = ["NO_FLAGS", "Flag", "FlagKind", "FlagSet"]

#: How a flag's text is parsed: ``string`` as is, ``int``, ``float``, ``bool`` (Go
#: ``strconv.ParseBool``), ``duration`` (Go syntax, to seconds as a float).
FlagKind = Literal["string", "int", "float", "bool", "duration"]

_NAME = re.compile(r"^--[a-z0-9]+(-[a-z0-9]+)*$")

#: The empty mapping of flag values.
NO_FLAGS: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """One flag: ``name`` with its leading dashes (``--mycloud-tag-prefix``), its ``help`` line,
    its ``default`` value (already of the flag's kind) and ``kind``."""

    name: str
    help: str
    default: str | int | float | bool | None = None
    kind: FlagKind = "string"
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("string", "int", "float", "bool", "duration"):
            raise ValueError(f"flag {self.name}: unknown kind {self.kind!r}")

    @property
    def key(self) -> str:
        """The flag's name without the leading dashes: its key in the values mapping."""
        return self.name[2:]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagSet:
    """Flags in the namespace ``name``: each flag's name starts with ``--<name>-``."""

    name: str
    flags: tuple[Flag, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", self.name):
            raise ValueError(f"flag set name {self.name!r}: lower-case words joined by '-'")
        for flag in self.flags:
            if not _NAME.match(flag.name) or not flag.name.startswith(f"--{self.name}-"):
                raise ValueError(
                    f"flag {flag.name!r} of flag set {self.name!r} must be called "
                    f"--{self.name}-<words>"
                )
