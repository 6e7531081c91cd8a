"""junit.xml (DESIGN.md section 9): a test case per check, for CI systems that show JUnit results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from lab.scenario import Scenario
from lab.verifier import Analysis


def junit_xml(analysis: Analysis, scenario: Scenario) -> str:
    """One test case per check; a failed check is a <failure> saying value, limit and the rule."""
    failures = sum(not c.passed for c in analysis.checks)
    suites = ET.Element("testsuites", name="caslab", tests=str(len(analysis.checks)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"caslab.{scenario.name}",
        tests=str(len(analysis.checks)),
        failures=str(failures),
        errors="0",
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for check in analysis.checks:
        case = ET.SubElement(suite, "testcase", classname=suite.get("name"), name=check.name, time="0")
        if not check.passed:
            message = f"{check.name} = {check.value:g}, must be {check.op} {check.limit:g}"
            ET.SubElement(case, "failure", message=message, type="threshold").text = message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
