"""A reader for the INI dialect of upstream Go cloud providers' ``--cloud-config`` files (gcfg,
``gopkg.in/gcfg.v1``, itself the syntax of ``git config``), for ``ccm.cloudprovider.config``.

Python's ``configparser`` reads a different dialect: it keeps only the last of repeated keys, keeps
quotes as part of values, has no subsections and no escapes, and is case-sensitive for section
names. The rules here are gcfg's::

    ; a comment, and so is this:
    # another
    [Global]                             ; section names are case-insensitive
    Zone = us-east-1a                    # so are variable names; "-" and "_" are the same
    KubernetesClusterTag = "my cluster"  ; quotes keep spaces; escapes \\" \\\\ \\n \\t
    Disabled                             ; no "=": the value is implicit (true, for a bool)
    Subnet = a
    Subnet = b                           ; repeated: every value, in order (a list field)
    [ServiceOverride "1"]                ; a subsection: case-sensitive, quoted
    Service = ec2
    Names = "one, " \\
      "two"                              ; a final "\\" continues a value on the next line

Unquoted whitespace around a value is dropped, inside it kept; ``;`` and ``#`` start a comment
outside quotes. A variable outside any section, an empty subsection name (``[sec ""]``), an
unterminated quote or a stray ``\\`` is an error (:class:`ccm.errors.ConfigFileError` naming the
line). A UTF-8 byte order mark is skipped.
"""

from __future__ import annotations

import re

from ccm.errors import ConfigFileError

__all__ = ["GcfgSections", "SectionKey", "looks_like_header", "parse_gcfg"]

#: ``(section, subsection)``: the section name lower-cased; ``None`` when there is no subsection.
SectionKey = tuple[str, str | None]
#: Section → variable name (lower-cased) → its values in file order; ``None`` is a value-less
#: variable (``Disabled`` with no ``=``).
GcfgSections = dict[SectionKey, dict[str, list[str | None]]]

_NAME = re.compile(r"[^\W\d_](?:[^\W_]|-)*")
_SPACE = " \t\r"
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}


_HEADER = re.compile(
    r'\[[ \t]*[^\W\d_](?:[^\W_]|-)*[ \t]*(?:"(?:[^"\\]|\\.)*"[ \t]*)?\][ \t]*(?:[;#].*)?'
)


def looks_like_header(line: str) -> bool:
    """Whether ``line`` (stripped) is a gcfg section header, such as ``[Global]`` or
    ``[ServiceOverride "1"]`` (a YAML flow sequence such as ``[a, b]`` is not)."""
    return _HEADER.fullmatch(line) is not None


class _Scanner:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1

    def error(self, reason: str) -> ConfigFileError:
        return ConfigFileError(self.source, reason, line=self.line)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self) -> str:
        ch = self.peek()
        self.pos += 1
        if ch == "\n":
            self.line += 1
        return ch

    def skip_space(self) -> None:
        while self.peek() and self.peek() in _SPACE:
            self.pos += 1

    def name(self, what: str) -> str:
        m = _NAME.match(self.text, self.pos)
        if m is None:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group().lower()

    def end_of_line(self) -> None:
        """Only whitespace and a comment may follow; consume through the newline."""
        self.skip_space()
        if self.peek() in (";", "#"):
            while self.peek() not in ("", "\n"):
                self.pos += 1
        if self.peek() not in ("", "\n"):
            raise self.error(f"unexpected {self.peek()!r}: expected the end of the line")
        self.advance()

    def quoted(self) -> str:
        """A quoted string with escapes; the opening quote is consumed."""
        out: list[str] = []
        while True:
            if self.peek() in ("", "\n"):
                raise self.error("missing end quote")
            ch = self.advance()
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                esc = self.peek()
                if esc in ("", "\n"):
                    raise self.error("missing end quote")
                self.pos += 1
                if esc not in _ESCAPES:
                    raise self.error(f"unknown escape sequence \\{esc}")
                out.append(_ESCAPES[esc])
            else:
                out.append(ch)

    def value(self) -> str:
        """A value after ``=``: up to the end of the line or a comment outside quotes."""
        self.skip_space()
        out: list[str] = []
        keep = 0  # length of ``out`` up to its last quoted or non-blank character
        while True:
            ch = self.peek()
            if ch in ("", "\n", ";", "#"):
                break
            self.pos += 1
            if ch == '"':
                out.append(self.quoted())
                keep = len(out)
            elif ch == "\\":
                if self.peek() == "\r":
                    self.pos += 1
                if self.peek() != "\n":
                    raise self.error("an unquoted '\\' must end the line (a continuation)")
                self.advance()
            else:
                out.append(ch)
                if ch not in _SPACE:
                    keep = len(out)
        return "".join(out[:keep])


def parse_gcfg(text: str | bytes, *, source: str = "cloud config") -> GcfgSections:
    """Read gcfg ``text`` into sections; raise :class:`ccm.errors.ConfigFileError` (naming
    ``source`` and the line) on a syntax error. Repeated section headers add to one section."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigFileError(source, f"not UTF-8: {exc.reason}") from exc
    s = _Scanner(text.removeprefix("\ufeff"), source)
    sections: GcfgSections = {}
    current: dict[str, list[str | None]] | None = None
    while True:
        s.skip_space()
        ch = s.peek()
        if ch == "":
            return sections
        if ch in ("\n", ";", "#"):
            s.end_of_line()
            continue
        if ch == "[":
            s.pos += 1
            s.skip_space()
            section = s.name("a section name")
            s.skip_space()
            sub: str | None = None
            if s.peek() == '"':
                s.pos += 1
                sub = s.quoted()
                if not sub:
                    raise s.error(f'empty subsection name: write [{section}], not [{section} ""]')
                s.skip_space()
            if s.peek() != "]":
                raise s.error("expected ']'")
            s.pos += 1
            s.end_of_line()
            current = sections.setdefault((section, sub), {})
            continue
        if current is None:
            raise s.error("expected a section header, such as [Global], before any variable")
        key = s.name("a variable name or a section header")
        s.skip_space()
        value: str | None = None
        if s.peek() == "=":
            s.pos += 1
            value = s.value()
        s.end_of_line()
        current.setdefault(key, []).append(value)
