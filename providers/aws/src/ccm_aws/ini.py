"""A reader of gcfg-style INI files, the format of upstream's ``--cloud-config`` for AWS.

This module stands in for the framework's shared INI reader until that one exists in
``ccm.cloudprovider``; it covers what the AWS cloud config uses of the format read by
``gopkg.in/gcfg.v1`` (with ``gcfg.FatalOnly``, as cloud-provider-aws reads it):

- sections ``[Name]`` and subsections ``[Name "sub"]``; section and variable names are
  case-insensitive, subsection names are not;
- ``name = value`` lines; ``;`` and ``#`` start a comment outside double quotes; unquoted values
  are trimmed; double-quoted parts keep their spaces and understand ``\\"``, ``\\\\``, ``\\n``,
  ``\\t``; a line ending in ``\\`` continues on the next one;
- a variable given alone (``name``) means ``true``, for booleans;
- a variable repeated in one section gives all its values in order (a value-less ``name =`` clears
  the list first, as gcfg does for multi-valued variables); a scalar takes the last one;
- unknown sections and variables are ignored by the caller, as ``gcfg.FatalOnly`` does.

Errors are :class:`ccm.errors.ConfigError` with one line naming the line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ccm.errors import ConfigError

__all__ = ["IniFile", "Section", "parse_bool", "parse_ini"]

_SECTION = re.compile(r'^\[\s*([A-Za-z][-.\w]*)\s*(?:"((?:[^"\\]|\\.)*)")?\s*\]$')
_NAME = re.compile(r"^[A-Za-z][-\w]*$")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "b": "\b"}


@dataclass(slots=True)
class Section:
    """One ``[Name "sub"]`` section: variables by lower-cased name, each with all its values."""

    name: str
    subsection: str | None = None
    values: dict[str, list[str | None]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The section as written in errors: ``[Name]`` or ``[Name "sub"]``."""
        return (
            f'[{self.name} "{self.subsection}"]'
            if self.subsection is not None
            else f"[{self.name}]"
        )

    def last(self, key: str) -> str | None:
        """The last value of ``key`` (``None`` for a value-less ``key`` or when absent)."""
        values = self.values.get(key.lower())
        return values[-1] if values else None

    def has(self, key: str) -> bool:
        return key.lower() in self.values

    def all(self, key: str) -> list[str]:
        """Every value of ``key`` in order; a value-less ``key =`` clears those before it."""
        out: list[str] = []
        for value in self.values.get(key.lower(), []):
            if value is None or value == "":
                out.clear()
            else:
                out.append(value)
        return out


@dataclass(slots=True)
class IniFile:
    """The sections of a file, in order (a repeated header continues the same section)."""

    sections: list[Section] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        """The section ``[name]`` without subsection (case-insensitive), if present."""
        for section in self.sections:
            if section.name.lower() == name.lower() and section.subsection is None:
                return section
        return None

    def subsections(self, name: str) -> list[Section]:
        """Every ``[name "sub"]`` section, in file order."""
        return [
            s for s in self.sections if s.name.lower() == name.lower() and s.subsection is not None
        ]


def _unquote(raw: str, lineno: int) -> str:
    """The value of the right-hand side of ``=``: comments cut, quotes and escapes resolved."""
    out: list[str] = []
    pending_space = ""
    quoted = False
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 >= len(raw) or raw[i + 1] not in _ESCAPES:
                raise ConfigError(f"cloud config line {lineno}: invalid escape in value")
            out.append(pending_space + _ESCAPES[raw[i + 1]])
            pending_space = ""
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
            out.append(pending_space)
            pending_space = ""
        elif not quoted and ch in ";#":
            break
        elif not quoted and ch.isspace():
            if out:
                pending_space += ch
        else:
            out.append(pending_space + ch)
            pending_space = ""
        i += 1
    if quoted:
        raise ConfigError(f"cloud config line {lineno}: unterminated quoted value")
    return "".join(out)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer = ""
    start = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = lineno
        if line.endswith("\\") and not line.endswith("\\\\"):
            buffer += line[:-1]
            continue
        lines.append((start, buffer + line))
        buffer = ""
    if buffer:
        lines.append((start, buffer))
    return lines


def parse_ini(data: bytes | str) -> IniFile:
    """Parse gcfg INI text; raise ConfigError (one line, with the line number) when malformed."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cloud config is not UTF-8 text: {exc}") from exc
    result = IniFile()
    current: Section | None = None
    for lineno, raw in _logical_lines(text.lstrip("\ufeff")):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            header = line.split(";", 1)[0].split("#", 1)[0].strip() if '"' not in line else line
            match = _SECTION.match(header)
            if match is None:
                raise ConfigError(f"cloud config line {lineno}: invalid section header {line!r}")
            name, sub = match.group(1), match.group(2)
            if sub is not None:
                sub = re.sub(r"\\(.)", r"\1", sub)
            current = next(
                (
                    s
                    for s in result.sections
                    if s.name.lower() == name.lower() and s.subsection == sub
                ),
                None,
            )
            if current is None:
                current = Section(name=name, subsection=sub)
                result.sections.append(current)
            continue
        if current is None:
            raise ConfigError(f"cloud config line {lineno}: variable outside of a section")
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not _NAME.match(key):
            raise ConfigError(f"cloud config line {lineno}: invalid variable name {key!r}")
        value: str | None = _unquote(rest.strip(), lineno) if sep else None
        current.values.setdefault(key.lower(), []).append(value)
    return result


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_bool(value: str | None, where: str) -> bool:
    """gcfg's booleans: a value-less variable is true; else true/yes/on/1 or false/no/off/0."""
    if value is None:
        return True
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"cloud config: {where}: invalid boolean {value!r}")
