"""Run folders by name: every run writes `OUT/<name>-<UTC time>/` (a `-2`, `-3`... when that exists).

The name before the time is how a set of runs pairs with another set: the same scenario file of two
suites, the same driver x preset of two matrices (`caslab compare`). This module imports nothing heavy
(no pandas, no Locust), so the commands that only read runs stay quick.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

STAMPED = re.compile(r"^(?P<name>.+)-\d{8}T\d{6}Z(?:-\d+)?$")


def new_run_dir(out: Path, name: str) -> Path:
    """A new, empty folder OUT/<name>-<UTC time> (absolute: the balancers run with their own working
    directory)."""
    out = out.resolve()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = out / f"{name}-{stamp}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = out / f"{name}-{stamp}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


def run_name(run_dir: Path) -> str:
    """The name a run folder was made for: `quickstart` of `quickstart-20261126T101500Z` (a folder not
    named by `new_run_dir` is its own name)."""
    match = STAMPED.match(run_dir.name)
    return match["name"] if match else run_dir.name
