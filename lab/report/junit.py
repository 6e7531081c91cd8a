"""junit.xml (DESIGN.md section 9), for CI systems that show JUnit results.

A run is one <testsuite>. Its first test case, "run valid", says whether the lab vouches for the run:
an invalid run is an <error> there with the reason, and its checks are <skipped> (not judged: its
figures prove nothing), so no CI counts an invalid run as passed. A valid run has a test case per
check; a failed check is a <failure> saying value, limit and the rule. A run that could not run at all
is an invalid run without checks. `caslab suite` puts the testsuites of its runs into one file, with
the same rules (`run_testsuite`, `junit_document`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime

from lab.scenario import Scenario
from lab.verifier import Analysis, Check

VALIDITY_CASE = "run valid"
COUNTED = {"failures": "failure", "errors": "error", "skipped": "skipped"}  # attribute: element


def junit_xml(analysis: Analysis, scenario: Scenario) -> str:
    invalid = analysis.verdict_reason if analysis.verdict == "invalid" else None
    return junit_document([run_testsuite(f"caslab.{scenario.name}", analysis.checks, invalid)])


def run_testsuite(name: str, checks: Iterable[Check], invalid: str | None = None) -> ET.Element:
    """One run's <testsuite>: "run valid" (an <error> saying `invalid`, the reason, when the run is
    invalid), then a test case per check (<skipped> when invalid, <failure> when it did not hold)."""
    suite = ET.Element("testsuite", name=name, timestamp=datetime.now(UTC).isoformat(timespec="seconds"))
    validity = testcase(suite, VALIDITY_CASE)
    if invalid is not None:
        ET.SubElement(validity, "error", message=invalid, type="invalid-run").text = invalid
    for check in checks:
        check_case = testcase(suite, check.name)
        if invalid is not None:
            ET.SubElement(check_case, "skipped", message="not judged: the run is invalid")
        elif not check.passed:
            ET.SubElement(
                check_case, "failure", message=check.rule_broken, type="threshold"
            ).text = check.rule_broken
    return suite


def testcase(suite: ET.Element, name: str) -> ET.Element:
    """A new test case of `suite`, in its class (the suite's name)."""
    return ET.SubElement(suite, "testcase", classname=suite.get("name"), name=name, time="0")


def junit_document(suites: list[ET.Element]) -> str:
    """junit.xml of these testsuites: each counts its test cases and their outcomes, and <testsuites>
    adds them up."""
    root = ET.Element("testsuites", name="caslab")
    totals = dict.fromkeys(("tests", *COUNTED), 0)
    for suite in suites:
        cases = suite.findall("testcase")
        counts = {"tests": len(cases)}
        counts |= {count: sum(c.find(tag) is not None for c in cases) for count, tag in COUNTED.items()}
        timestamp = suite.attrib.pop("timestamp", "")
        suite.attrib.update({k: str(v) for k, v in counts.items()}, timestamp=timestamp)
        totals = {k: totals[k] + counts[k] for k in totals}
        root.append(suite)
    root.attrib.update({k: str(v) for k, v in totals.items()})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
