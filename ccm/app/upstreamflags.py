"""Compatibility with the upstream cloud-controller-manager's command line.

``upstream-flags.txt`` (next to this module) lists every flag of the upstream command (v1.36) in
the groups of its ``--help``. :func:`organize` finishes ccm's parser from it:

- every upstream flag ccm does not implement is added, accepted with any value and ignored: its
  value is kept under ``upstream:<flag>`` and :func:`given` names the ones a command line set, which
  the daemon logs once at start-up (:func:`log_ignored`), so a manifest written for the upstream
  CCM starts instead of failing on an unknown flag;
- ``--help`` shows the flags in upstream's groups (ccm's own flags last, in "ccm flags"), each with
  its default and, where ccm's default differs, upstream's beside it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import logging
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ccm.cloudprovider.strconv import parse_bool

__all__ = [
    "CCM_GROUP",
    "DEST_PREFIX",
    "UpstreamFlag",
    "format_duration",
    "given",
    "log_ignored",
    "organize",
    "upstream_flags",
]

_log = logging.getLogger("ccm.app")

#: The ``argparse`` dest prefix of an accepted-and-ignored upstream flag.
DEST_PREFIX = "upstream:"
#: The ``--help`` group of ccm's own flags (upstream has no such flag).
CCM_GROUP = "ccm flags"
_IGNORED_HELP = (
    "Upstream flag, accepted and ignored: ccm does not implement it (logged at start-up)."
)


@dataclass(frozen=True, slots=True)
class UpstreamFlag:
    """One flag of the upstream command: ``--name``, its pflag type (``""`` for a boolean) and
    its ``--help`` group (``Generic flags``)."""

    name: str
    kind: str
    group: str

    @property
    def is_bool(self) -> bool:
        return not self.kind


@functools.cache
def upstream_flags() -> tuple[UpstreamFlag, ...]:
    """The flags of ``upstream-flags.txt``, in file order."""
    text = importlib.resources.files("ccm.app").joinpath("upstream-flags.txt").read_text("utf-8")
    flags: list[UpstreamFlag] = []
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        name, _, kind = line.partition(" ")
        flags.append(UpstreamFlag(name=name, kind=kind.strip(), group=group))
    return tuple(flags)


def format_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` of ``seconds``: ``5m0s``, ``12h0m0s``, ``500ms``, ``0s``."""
    if seconds == 0:
        return "0s"
    if abs(seconds) < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if abs(ms) >= 1 else f"{seconds * 1e6:g}µs"
    sign = "-" if seconds < 0 else ""
    total = abs(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:g}s" if not math.isclose(secs, round(secs)) else f"{round(secs)}s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{sign}{int(minutes)}m{sec_text}"
    return f"{sign}{sec_text}"


def _bool_value(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _format_default(action: argparse.Action, value: Any, is_duration: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_duration and isinstance(value, int | float):
        return format_duration(float(value))
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def organize(
    parser: argparse.ArgumentParser,
    *,
    upstream_defaults: Mapping[str, Any],
    duration_type: Callable[[str], float],
    subcommands: Mapping[str, str],
    reserved: Iterable[str] = (),
) -> None:
    """Add the upstream flags ``parser`` lacks (accepted, ignored), regroup ``--help`` as upstream
    does with ccm's own flags in :data:`CCM_GROUP`, show every default (and upstream's where
    ``upstream_defaults`` has the flag: ``{"--kube-api-qps": 20.0}``) and list ``subcommands``
    (name → one line) after the flags. ``duration_type`` is the parser's duration converter: its
    defaults print as Go durations. Flags in ``reserved`` (a provider's or embedding program's,
    added later) are left to their owner, never added as ignored."""
    own = {s for action in parser._actions for s in action.option_strings} | set(reserved)
    for flag in upstream_flags():
        if flag.name in own:
            continue
        extra: dict[str, Any] = (
            {"nargs": "?", "const": True, "type": _bool_value, "metavar": "BOOL"}
            if flag.is_bool
            else {"metavar": flag.kind.upper().replace("[=TRUE]", "")}
        )
        parser.add_argument(
            flag.name, dest=DEST_PREFIX + flag.name, default=None, help=_IGNORED_HELP, **extra
        )
    group_of = {f.name: f.group for f in upstream_flags()}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in upstream_flags():
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
    ccm_group = parser.add_argument_group(CCM_GROUP)
    general = parser._optionals
    for action in list(general._group_actions):
        if not action.option_strings or "--help" in action.option_strings:
            continue
        names = [s for s in action.option_strings if s.startswith("--")]
        upstream_group = next((group_of[n] for n in names if n in group_of), None)
        target = groups[upstream_group] if upstream_group else ccm_group
        general._group_actions.remove(action)
        target._group_actions.append(action)
        _describe_default(action, names, upstream_defaults, duration_type)
    if subcommands:
        width = max(len(n) for n in subcommands) + 2
        lines = [f"  {parser.prog} {n:<{width}}{text}" for n, text in subcommands.items()]
        # Raw formatting keeps the subcommand table; an epilog already set (the installed
        # providers) follows it, wrapped here since the raw formatter will not.
        after = textwrap.fill(parser.epilog, width=100) if parser.epilog else ""
        parser.epilog = "subcommands:\n" + "\n".join(lines) + (f"\n\n{after}" if after else "")
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _describe_default(
    action: argparse.Action,
    names: Iterable[str],
    upstream_defaults: Mapping[str, Any],
    duration_type: Callable[[str], float],
) -> None:
    if action.dest.startswith(DEST_PREFIX) or action.help == argparse.SUPPRESS:
        return
    value = action.default
    if value is None or value == "" or (isinstance(value, bool) and action.dest == "version"):
        return
    is_duration = action.type is duration_type
    text = f"(default {_format_default(action, value, is_duration)})"
    for name in names:
        if name in upstream_defaults:
            upstream = _format_default(action, upstream_defaults[name], is_duration)
            text += f" (upstream default: {upstream})"
    help_text = (action.help or "").rstrip()
    action.help = f"{help_text} {text.replace('%', '%%')}".lstrip()


def given(values: Mapping[str, Any]) -> list[str]:
    """The accepted-and-ignored upstream flags set in parsed ``values`` (``vars`` of the
    namespace), sorted."""
    return sorted(
        k.removeprefix(DEST_PREFIX)
        for k, v in values.items()
        if k.startswith(DEST_PREFIX) and v is not None
    )


def log_ignored(flags: Iterable[str]) -> None:
    """One log line naming the upstream flags that were set and are ignored."""
    names = sorted(flags)
    if names:
        _log.warning(
            "Ignoring upstream cloud-controller-manager flags that ccm does not implement: %s",
            ", ".join(names),
        )
