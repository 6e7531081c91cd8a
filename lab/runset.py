"""Finished runs read back from their folders, for the commands that look at several: `caslab suite`,
`caslab matrix` and `caslab compare`.

A run is known by its summary.json (schema caslab.summary/1, lab/report/summary.py), never by its raw
data: these commands read runs of other caslab versions and of other machines (a CI artifact). A folder
is either one run (it holds summary.json) or a set of runs (a suite or a matrix: its run folders).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.runfolder import run_name

SUMMARY_SCHEMA = "caslab.summary/1"
# What a page says of a run that has no verdict: it could not run (a wrong scenario, taken addresses, a
# crash), Ctrl-C stopped it, it never started (Ctrl-C before its turn), a driver refused the combination.
NO_VERDICT = ("could not run", "interrupted", "not run", "refused")
RUN_MARKS = ("summary.json", "facts.json", "scenario.toml", "lab.log")  # a run folder has one of these


class RunSetError(ValueError):
    """A folder is neither a run nor a set of runs, or its summary.json cannot be read; says which."""


@dataclass
class RunEntry:
    """One run as the pages and `caslab compare` see it."""

    name: str  # what pages call it, and what pairs it with a run of another set: the scenario file's stem
    status: str  # a verdict (lab.verdict.VERDICTS) or why there is none (NO_VERDICT)
    reason: str = ""  # the verdict's reason, or why there is no verdict
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None  # summary.json, when the run finished

    @property
    def judged(self) -> bool:
        """Whether its figures say something: it finished and the lab vouches for it."""
        return self.summary is not None and self.status in ("pass", "fail")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's summary.json, or None when it has none (it did not finish)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunSetError(f"{path}: cannot read: {err}") from None
    if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
        found = summary.get("schema") if isinstance(summary, dict) else type(summary).__name__
        raise RunSetError(f"{path}: schema {found!r}, not {SUMMARY_SCHEMA!r}")
    return summary


def run_entry(run_dir: Path, name: str | None = None) -> RunEntry:
    """The run in `run_dir` with its verdict and reason; a run without summary.json could not run."""
    summary = read_summary(run_dir)
    name = name or run_name(run_dir)
    if summary is None:
        reason = f"no summary.json: the run did not finish (see {run_dir.name}/lab.log)"
        return RunEntry(name, "could not run", reason, run_dir)
    return RunEntry(name, summary["verdict"], summary.get("verdict_reason", ""), run_dir, summary)


def is_run(folder: Path) -> bool:
    return any((folder / mark).exists() for mark in RUN_MARKS)


def read_runs(folder: Path) -> tuple[str, list[RunEntry]]:
    """("run", [the run]) for a run folder, ("set", its runs by name) for a suite or matrix folder."""
    if not folder.is_dir():
        raise RunSetError(f"{folder}: no such folder")
    if (folder / "summary.json").is_file():
        return "run", [run_entry(folder)]
    runs = [run_entry(p) for p in sorted(folder.iterdir()) if p.is_dir() and is_run(p)]
    if not runs:
        raise RunSetError(f"{folder}: neither a run folder (no summary.json) nor a folder of runs")
    latest = {run.name: run for run in runs}  # a name run twice: its latest folder (names sort by time)
    return "set", list(latest.values())
