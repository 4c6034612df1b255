"""The one parser of Go booleans in ccm (Go's ``strconv.ParseBool``), used by the command-line
flags (``--leader-elect=false``), the flags a provider adds (kind ``bool``) and the Service
controller's Node labels (``node.kubernetes.io/exclude-from-external-load-balancers``).

Kept free of imports, like :mod:`ccm.cloudprovider.durations`: the CLI parses its flags with it
before anything else is loaded.
"""

from __future__ import annotations

__all__ = ["parse_bool"]

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def parse_bool(text: str | bool) -> bool:
    """``True`` for ``1 t T true TRUE True``, ``False`` for ``0 f F false FALSE False`` (a bool is
    returned as is); raise ValueError for anything else."""
    if isinstance(text, bool):
        return text
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")
