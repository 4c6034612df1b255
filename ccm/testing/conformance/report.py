"""Readable text report and JUnit XML of a conformance run.

A passed scenario with checks it could not verify in the cloud (the driver cannot inspect that
part of it, so the provider's own view was taken) lists them: on its line and in the verdict
(``CONFORMANT (2 checks unverified: ...)``) of the text, and as ``<property name="unverified">``
elements of its ``<testcase>`` (with a count on its ``<testsuite>``) in the XML. The exit code does
not change; the wording does.

A scenario is *not offered* (the provider lacks the capability) or *not applicable* (the driver
declares the rule does not hold for its cloud): marked ``N/A`` with the reason on its line, counted
in the summary line (``..., 1 not applicable``, shown when there is one), ``<skipped>`` in the XML
with the reason; neither fails the run.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from ccm.testing.conformance.scenarios_routes import ROUTE_TABLE_SCOPE
from ccm.testing.conformance.suite import CAPABILITIES, Report, Result

__all__ = [
    "JUnitOutcomes",
    "check_route_table_scoped_run",
    "format_report",
    "format_result",
    "read_junit_xml",
    "write_junit_xml",
]

_MARK = {"passed": "PASS", "failed": "FAIL", "not offered": "N/A ", "not applicable": "N/A "}
_SKIPPED = ("not offered", "not applicable")


def format_result(result: Result) -> str:
    line = f"  {_MARK[result.outcome]} {result.scenario} ({result.seconds:.1f}s)"
    if result.outcome == "failed":
        line += f"\n       {result.reason}"
    elif result.outcome in _SKIPPED:
        line += f" — {result.outcome}: {result.reason}"
    for check in result.unverified:
        line += f"\n       unverified: {check}"
    return line


def format_report(report: Report) -> str:
    lines = [f"Conformance of cloud provider {report.provider!r}"]
    groups = report.by_capability()
    for cap in CAPABILITIES:
        results = groups.get(cap)
        if not results:
            continue
        if all(r.outcome == "not offered" for r in results):
            summary = "not offered"
        elif all(r.outcome == "not applicable" for r in results):
            summary = "not applicable"
        elif any(r.outcome == "failed" for r in results):
            summary = "FAILED"
        else:
            summary = "passed"
        lines.append(f"{cap}: {summary}")
        lines.extend(format_result(r) for r in results)
    counts = {k: sum(r.outcome == k for r in report.results) for k in _MARK}
    verdict = "CONFORMANT" if report.passed else "NOT CONFORMANT"
    unverified = report.unverified()
    if unverified:
        verdict += f" ({len(unverified)} checks unverified: {'; '.join(unverified)})"
    not_applicable = (
        f", {counts['not applicable']} not applicable" if counts["not applicable"] else ""
    )
    lines.append(
        f"{verdict}: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['not offered']} not offered{not_applicable}"
    )
    return "\n".join(lines)


def write_junit_xml(report: Report, path: str | Path) -> None:
    """One <testsuite> per capability; failed → <failure>, not offered or not applicable →
    <skipped> with the reason, unverified checks → <property name="unverified">."""
    root = ET.Element("testsuites", name=f"ccm-conformance-{report.provider}")
    for cap, results in report.by_capability().items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=cap,
            tests=str(len(results)),
            failures=str(sum(r.outcome == "failed" for r in results)),
            skipped=str(sum(r.outcome in _SKIPPED for r in results)),
            errors="0",
            time=f"{sum(r.seconds for r in results):.3f}",
        )
        unverified = sum(len(r.unverified) for r in results)
        if unverified:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="unverified-checks", value=str(unverified))
        for r in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{cap}",
                name=r.scenario,
                time=f"{r.seconds:.3f}",
            )
            if r.unverified:
                props = ET.SubElement(case, "properties")
                for check in r.unverified:
                    ET.SubElement(props, "property", name="unverified", value=check)
            if r.outcome == "failed":
                ET.SubElement(
                    case, "failure", message=r.reason, type=r.rule or "failure"
                ).text = r.reason
            elif r.outcome in _SKIPPED:
                ET.SubElement(case, "skipped", message=f"{r.outcome}: {r.reason}")
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JUnitOutcomes:
    """What :func:`read_junit_xml` found, by scenario name: the passed ones, and the message of
    each failed or skipped (not offered, not applicable) one."""

    passed: frozenset[str]
    failed: Mapping[str, str]
    skipped: Mapping[str, str]


def read_junit_xml(path: str | Path) -> JUnitOutcomes:
    """The outcome of every scenario in a file :func:`write_junit_xml` wrote (for a provider's own
    CI checks of a ``ccm conformance --junit-xml`` run)."""
    passed: set[str] = set()
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for case in ET.parse(path).iter("testcase"):
        name = str(case.get("name"))
        failure, skip = case.find("failure"), case.find("skipped")
        if failure is not None:
            failed[name] = str(failure.get("message", ""))
        elif skip is not None:
            skipped[name] = str(skip.get("message", ""))
        else:
            passed.add(name)
    return JUnitOutcomes(passed=frozenset(passed), failed=failed, skipped=skipped)


_ROUTE_TABLE_SCOPED_SUMMARY = re.compile(
    r"^CONFORMANT: (\d+) passed, 0 failed, 0 not offered, 1 not applicable$", re.M
)


def check_route_table_scoped_run(stdout: str, junit: str | Path) -> JUnitOutcomes:
    """Check a ``ccm conformance --junit-xml`` run of a provider whose routes are scoped by their
    route table (its driver declares ``route_scope = "route-table"``): conformant, nothing failed
    or not offered, ``cluster-name-scoping`` alone not applicable and for that reason, and the
    summary line and the JUnit file agreeing. Raises AssertionError saying what differs; returns
    the outcomes for the caller's own checks of which scenarios passed."""
    summary = _ROUTE_TABLE_SCOPED_SUMMARY.search(stdout)
    assert summary, stdout[-4000:]
    assert "N/A  cluster-name-scoping" in stdout, stdout[-4000:]
    assert f"— not applicable: {ROUTE_TABLE_SCOPE}" in stdout, stdout[-4000:]
    cases = read_junit_xml(junit)
    assert not cases.failed, cases
    assert len(cases.passed) == int(summary[1]), cases
    assert cases.skipped == {"cluster-name-scoping": f"not applicable: {ROUTE_TABLE_SCOPE}"}, cases
    return cases
