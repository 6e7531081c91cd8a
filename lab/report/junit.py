"""junit.xml (DESIGN.md section 9), for CI systems that show JUnit results.

The first test case, "run valid", says whether the lab vouches for the run: an invalid run is an
<error> there with the reason, and its checks are <skipped> (not judged: its figures prove nothing),
so no CI counts an invalid run as passed. A valid run has a test case per check; a failed check is a
<failure> saying value, limit and the rule.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from lab.scenario import Scenario
from lab.verifier import Analysis

VALIDITY_CASE = "run valid"


def junit_xml(analysis: Analysis, scenario: Scenario) -> str:
    invalid = analysis.verdict == "invalid"
    counts = {
        "tests": str(1 + len(analysis.checks)),
        "failures": "0" if invalid else str(len(analysis.failed_checks)),
        "errors": "1" if invalid else "0",
        "skipped": str(len(analysis.checks)) if invalid else "0",
    }
    suites = ET.Element("testsuites", name="caslab", **counts)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"caslab.{scenario.name}",
        **counts,
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )

    def case(name: str) -> ET.Element:
        return ET.SubElement(suite, "testcase", classname=suite.get("name"), name=name, time="0")

    validity = case(VALIDITY_CASE)
    if invalid:
        reason = analysis.verdict_reason
        ET.SubElement(validity, "error", message=reason, type="invalid-run").text = reason
    for check in analysis.checks:
        check_case = case(check.name)
        if invalid:
            ET.SubElement(check_case, "skipped", message="not judged: the run is invalid")
        elif not check.passed:
            ET.SubElement(
                check_case, "failure", message=check.rule_broken, type="threshold"
            ).text = check.rule_broken
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
