"""Readable text report and JUnit XML of a conformance run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ccm.testing.conformance.suite import CAPABILITIES, Report, Result

__all__ = ["format_report", "format_result", "write_junit_xml"]

_MARK = {"passed": "PASS", "failed": "FAIL", "not offered": "N/A "}


def format_result(result: Result) -> str:
    line = f"  {_MARK[result.outcome]} {result.scenario} ({result.seconds:.1f}s)"
    if result.outcome == "failed":
        line += f"\n       {result.reason}"
    elif result.outcome == "not offered":
        line += f" — not offered: {result.reason}"
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
        elif any(r.outcome == "failed" for r in results):
            summary = "FAILED"
        else:
            summary = "passed"
        lines.append(f"{cap}: {summary}")
        lines.extend(format_result(r) for r in results)
    counts = {k: sum(r.outcome == k for r in report.results) for k in _MARK}
    verdict = "CONFORMANT" if report.passed else "NOT CONFORMANT"
    lines.append(
        f"{verdict}: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['not offered']} not offered"
    )
    return "\n".join(lines)


def write_junit_xml(report: Report, path: str | Path) -> None:
    """One <testsuite> per capability; failed → <failure>, not offered → <skipped>."""
    root = ET.Element("testsuites", name=f"ccm-conformance-{report.provider}")
    for cap, results in report.by_capability().items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=cap,
            tests=str(len(results)),
            failures=str(sum(r.outcome == "failed" for r in results)),
            skipped=str(sum(r.outcome == "not offered" for r in results)),
            errors="0",
            time=f"{sum(r.seconds for r in results):.3f}",
        )
        for r in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{cap}",
                name=r.scenario,
                time=f"{r.seconds:.3f}",
            )
            if r.outcome == "failed":
                ET.SubElement(
                    case, "failure", message=r.reason, type=r.rule or "failure"
                ).text = r.reason
            elif r.outcome == "not offered":
                ET.SubElement(case, "skipped", message=f"not offered: {r.reason}")
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
