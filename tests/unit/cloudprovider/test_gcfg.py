"""The gcfg (INI) reader: the dialect of upstream Go providers' cloud config files."""

from __future__ import annotations

import pytest

from ccm.cloudprovider.gcfg import GcfgSections, looks_like_header, parse_gcfg
from ccm.errors import ConfigFileError

G = ("global", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("; only\n# comments\n\n", {}, id="comments only"),
        pytest.param("[Global]\nZone = a\n", {G: {"zone": ["a"]}}, id="section and variable"),
        pytest.param(
            "[GLOBAL]\nZONE=a\n[global]\nzOnE = b\n",
            {G: {"zone": ["a", "b"]}},
            id="section and variable names are case-insensitive",
        ),
        pytest.param(
            "[Global]\nSubnet = a\nOther = x\nsubnet = b\nSUBNET = c\n",
            {G: {"subnet": ["a", "b", "c"], "other": ["x"]}},
            id="repeated keys are kept in order",
        ),
        pytest.param(
            '[Global]\nTag = "my cluster"\nPad = "  x  "\n',
            {G: {"tag": ["my cluster"], "pad": ["  x  "]}},
            id="quoted values keep their spaces",
        ),
        pytest.param(
            '[Global]\nv = "a\\"b\\\\c\\nd\\te"\n',
            {G: {"v": ['a"b\\c\nd\te']}},
            id="escapes in quoted values",
        ),
        pytest.param(
            '[Global]\nv = x "y z" w\n',
            {G: {"v": ["x y z w"]}},
            id="quoted and unquoted parts join",
        ),
        pytest.param(
            "[Global]\nv =   spaced   out   \n",
            {G: {"v": ["spaced   out"]}},
            id="outer unquoted whitespace is dropped, inner kept",
        ),
        pytest.param(
            '[Global] ; c\nv = a ; comment\nw = b # comment\nq = "x;y#z" ; c\n',
            {G: {"v": ["a"], "w": ["b"], "q": ["x;y#z"]}},
            id="comments after values, not inside quotes",
        ),
        pytest.param(
            "[Global]\nempty =\nflag\n",
            {G: {"empty": [""], "flag": [None]}},
            id="empty value and value-less variable",
        ),
        pytest.param(
            '[ServiceOverride "1"]\nService = ec2\n[ServiceOverride "b"]\nService = elb\n'
            '[serviceoverride "B"]\nservice = s3\n',
            {
                ("serviceoverride", "1"): {"service": ["ec2"]},
                ("serviceoverride", "b"): {"service": ["elb"]},
                ("serviceoverride", "B"): {"service": ["s3"]},
            },
            id="subsections are case-sensitive",
        ),
        pytest.param(
            '[sec "a \\"q\\" \\\\ b"]\nk = v\n',
            {("sec", 'a "q" \\ b'): {"k": ["v"]}},
            id="subsection escapes",
        ),
        pytest.param(
            "[Global]\nv = one \\\n  two\nw = x\n",
            {G: {"v": ["one   two"], "w": ["x"]}},
            id="line continuation",
        ),
        pytest.param(
            "\ufeff[Global]\r\nv = a\r\n",
            {G: {"v": ["a"]}},
            id="BOM and CRLF",
        ),
        pytest.param(
            "[Global]\nmy-key = 1\nkey2 = 2\n",
            {G: {"my-key": ["1"], "key2": ["2"]}},
            id="hyphens and digits in names",
        ),
    ],
)
def test_reads_gcfg(text: str, expected: GcfgSections) -> None:
    assert parse_gcfg(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        pytest.param("v = 1\n", 1, "expected a section header", id="variable outside a section"),
        pytest.param('[Global]\n\n[sec ""]\n', 3, "empty subsection name", id="empty subsection"),
        pytest.param('[Global]\nv = "open\nw = 1\n', 2, "missing end quote", id="unterminated"),
        pytest.param('[Global]\nv = "\\q"\n', 2, "unknown escape sequence", id="bad escape"),
        pytest.param("[Global]\nv = a \\ b\n", 2, "must end the line", id="stray backslash"),
        pytest.param("[Global\nv = 1\n", 1, "expected ']'", id="unclosed header"),
        pytest.param("[Global] x\n", 1, "expected the end of the line", id="junk after header"),
        pytest.param("[Global]\nv x\n", 2, "expected the end of the line", id="missing ="),
        pytest.param("[1abc]\n", 1, "expected a section name", id="bad section name"),
    ],
)
def test_syntax_errors_name_the_file_and_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigFileError, match=reason) as exc:
        parse_gcfg(text, source="/etc/cloud.conf")
    assert exc.value.line == line
    assert str(exc.value).startswith(f"/etc/cloud.conf:{line}: ")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("line", "header"),
    [
        ("[Global]", True),
        ('[ServiceOverride "1"]', True),
        ("[ Global ]   ; comment", True),
        ("[a, b]", False),
        ("[1, 2]", False),
        ("[]", False),
    ],
)
def test_tells_a_section_header_from_a_yaml_list(line: str, header: bool) -> None:
    assert looks_like_header(line) is header
