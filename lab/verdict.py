"""A run's verdict outside the verifier: its exit code and the one line the terminal shows.

The verifier (lab.verifier) decides the verdict: `pass` (every check held), `fail` (a check did not
hold) or `invalid` (the lab cannot vouch for the run: the figures prove nothing, whatever they say),
each with its reason (DESIGN.md section 9). This module imports nothing heavy, so the command line
can use it without loading pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.verifier import Analysis

VERDICTS = ("pass", "fail", "invalid")
# The exit codes of `caslab run`, `caslab report` and `caslab matrix`; a lab that could not run at all
# vouches for nothing either, so it exits as an invalid run does.
EXIT_CODES = {"pass": 0, "fail": 1, "invalid": 2}
EXIT_PASS, EXIT_FAIL = EXIT_CODES["pass"], EXIT_CODES["fail"]
EXIT_CANNOT_RUN = EXIT_CODES["invalid"]


def verdict_line(analysis: Analysis) -> str:
    """The verdict and its reason on one line, e.g. `verdict INVALID: load generator CPU above 90 % ...`."""
    return f"verdict {analysis.verdict.upper()}: {analysis.verdict_reason}"
