"""Durations in scenario files: strings such as "500ms", "20s", "2m", "1h" or "1m30s".

One regular expression says what a duration is; the reader parses with it and the JSON Schema of
scenario files (lab.scenario.schema) carries it as the pattern editors check as people type.
"""

from __future__ import annotations

import re

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)"  # a number and its unit
# A whole duration: one or more parts, with spaces allowed around them ("1m 30s").
DURATION_PATTERN = rf"^\s*(?:{_PART}\s*)+$"
DURATION_HELP = 'a string such as "500ms", "20s", "2m", "1h" or "1m30s"'


def parse_duration(text: str) -> float:
    """Seconds in a duration string ("500ms", "2m", "1m30s"). Raises ValueError on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected {DURATION_HELP}")
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration; expected {DURATION_HELP}")
    return sum(float(number) * _UNIT_S[unit] for number, unit in re.findall(_PART, text))


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for display: 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out, rest = "", seconds
    for unit, size in (("h", 3600), ("m", 60)):
        if rest >= size:
            whole = int(rest // size)
            out, rest = out + f"{whole}{unit}", rest - whole * size
    return out + (f"{rest:g}s" if rest or not out else "")
