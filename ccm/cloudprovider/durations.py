"""The one parser of Go duration strings in ccm, used by the command-line flags
(``--cloud-call-timeout=1m30s``) and by provider configuration files (``ccm.cloudprovider.config``).

Ports the syntax of Go's ``time.ParseDuration``: an optional sign, then one or more decimal numbers
each followed by a unit (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), as in ``300ms``,
``-1.5h`` or ``2h45m``; ``0`` alone needs no unit. Kept free of heavy imports: the CLI parses its
flags with it before anything else is loaded.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek small letter mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in the Go duration string ``text`` (``"1m30s"`` → 90.0, ``"500ms"`` → 0.5).

    Raises ``ValueError`` naming ``text`` when it is not a Go duration (a bare number other than
    ``0`` is not: the unit is required).
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total
