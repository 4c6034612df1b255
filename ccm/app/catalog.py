"""The controllers a daemon knows: their names, aliases and which are off unless named, and
upstream's ``--controllers`` semantics over them (``app/helper.go`` ``IsControllerEnabled``).

ccm's own four come from :mod:`ccm.names`; an embedding program or a provider package adds its own
(``ccm.app.manager.ControllerSpec``), and ``ControllerCatalog.of(specs)`` describes the whole map.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ccm import names

__all__ = ["ControllerCatalog", "NamedController", "enabled_controllers"]


class NamedController(Protocol):
    """What ``--controllers`` needs to know of a controller (``ControllerSpec`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...
    @property
    def disabled_by_default(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ControllerCatalog:
    """Every controller name ``--controllers`` accepts: canonical names in start order, aliases,
    and those off unless named. ``ControllerCatalog.of(specs)`` describes a controller map."""

    names: tuple[str, ...]
    aliases: Mapping[str, str]
    disabled_by_default: frozenset[str]

    @classmethod
    def of(cls, controllers: Iterable[NamedController]) -> ControllerCatalog:
        specs = list(controllers)
        return cls(
            names=tuple(s.name for s in specs),
            aliases={a: s.name for s in specs for a in s.aliases},
            disabled_by_default=frozenset(s.name for s in specs if s.disabled_by_default),
        )

    @classmethod
    def default(cls) -> ControllerCatalog:
        """ccm's four controllers (``ccm.names``)."""
        return cls(
            names=tuple(names.BY_NAME),
            aliases=dict(names.ALIASES),
            disabled_by_default=names.DISABLED_BY_DEFAULT,
        )


def enabled_controllers(
    controllers: list[str], catalog: ControllerCatalog | None = None
) -> dict[str, bool]:
    """Upstream ``IsControllerEnabled`` for every controller of ``catalog`` (default: ccm's own).

    The first exact ``name`` enables, the first ``-name`` disables; otherwise a controller is on iff
    ``*`` is present and it is not disabled by default. Aliases are rewritten to canonical names
    first.
    """
    catalog = catalog or ControllerCatalog.default()
    canonical: list[str] = []
    for item in controllers:
        neg = item.startswith("-")
        base = item[1:] if neg else item
        base = catalog.aliases.get(base, base)
        canonical.append(("-" if neg else "") + base)
    star = "*" in canonical
    result: dict[str, bool] = {}
    for name in catalog.names:
        decision: bool | None = None
        for item in canonical:
            if item == name:
                decision = True
                break
            if item == "-" + name:
                decision = False
                break
        if decision is None:
            decision = star and name not in catalog.disabled_by_default
        result[name] = decision
    return result
