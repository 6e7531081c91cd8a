"""`caslab matrix`: one scenario on several drivers x presets, judged side by side.

Each combination is an ordinary run (its own folder OUT/matrix-<name>-<UTC time>/<driver>-<preset>-<UTC
time>/ and report); a combination a driver cannot express is shown as refused, with the driver's reason,
not run. The matrix writes matrix.json and matrix.html, the runs page (lab/report/runs_page.py) that the
suite and `caslab compare` use too. Ctrl-C tears the current run down (lab.run raises RunInterrupted
after it), stops the matrix and writes the pages for what finished; the rest is "not run".
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from lab.report.runs_page import overall, runs_html
from lab.runset import RunEntry, run_entry
from lab.scenario import Scenario, ScenarioError
from lab.verdict import EXIT_CODES

RunScenario = Callable[..., tuple[int, Path]]  # lab.run.run_scenario's shape


def run_matrix(
    scenario: Scenario,
    drivers: list[str],
    presets: list[str],
    out: Path,
    say: Callable[[str], None] = print,
    run: RunScenario | None = None,
) -> tuple[int, Path]:
    """Run every driver x preset; returns (exit code, matrix folder). `run`: what runs one scenario
    (lab.run.run_scenario, imported only then: it brings Locust, which patches the process with gevent)."""
    if run is None:
        from lab.run import run_scenario as run
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (out / f"matrix-{scenario.name}-{stamp}").resolve()
    folder.mkdir(parents=True)
    combinations = [(driver, preset) for driver in drivers for preset in presets]
    entries: list[RunEntry] = []
    for i, (driver, preset) in enumerate(combinations):
        name = f"{driver}-{preset}"
        try:
            variant = scenario.with_overrides(driver=driver, preset=preset)
        except ScenarioError as err:
            entries.append(RunEntry(name, "refused", str(err)))
            say(f"caslab matrix: {driver} x {preset}: refused: {err}")
            continue
        try:
            code, run_dir = run(variant, folder, say=say, run_name=name)
        except KeyboardInterrupt as stop:  # lab.run.RunInterrupted: its lab is torn down by now
            entries.append(
                RunEntry(name, "interrupted", "Ctrl-C or SIGTERM stopped the matrix", stop_dir(stop))
            )
            entries += [RunEntry(f"{d}-{p}", "not run", "the matrix was interrupted before it")
                        for d, p in combinations[i + 1 :]]  # fmt: skip
            say("caslab matrix: interrupted; writing what finished")
            break
        entry = run_entry(run_dir, name)
        if EXIT_CODES.get(entry.status) != code:  # the run did not end with its verdict
            entry.status = "could not run"
        entries.append(entry)
    write_matrix(folder, scenario.name, drivers, presets, entries)
    say(f"caslab matrix: {folder / 'matrix.html'}")
    return EXIT_CODES[overall(entries)[0]], folder


def stop_dir(stop: KeyboardInterrupt) -> Path | None:
    """The run folder of an interrupted run (RunInterrupted carries it)."""
    return getattr(stop, "run_dir", None)


def write_matrix(
    folder: Path, name: str, drivers: list[str], presets: list[str], entries: list[RunEntry]
) -> None:
    """matrix.json (schema caslab.matrix/1: a cell per combination) and matrix.html."""
    cells = []
    for entry in entries:
        driver, preset = _combination(entry.name, drivers, presets)
        cell = {"driver": driver, "preset": preset, "status": entry.status, "reason": entry.reason}
        if entry.run_dir is not None:
            cell["run_dir"] = entry.run_dir.name
        if entry.summary is not None:
            cell.update(_figures(entry.summary))
        cells.append(cell)
    result = {"schema": "caslab.matrix/1", "scenario": name, "drivers": drivers, "presets": presets,
              "cells": cells}  # fmt: skip
    (folder / "matrix.json").write_text(json.dumps(result, indent=2))
    details = {e.name: " × ".join(_combination(e.name, drivers, presets)) for e in entries}
    subtitle = f"drivers {', '.join(drivers)} × presets {', '.join(presets)}"
    page = runs_html(f"matrix {name}", subtitle, entries, folder, details=details)
    (folder / "matrix.html").write_text(page, encoding="utf-8")


def _combination(name: str, drivers: list[str], presets: list[str]) -> tuple[str, str]:
    """(driver, preset) of a run named driver-preset (presets hold dashes, so match the drivers)."""
    for driver in drivers:
        if name.startswith(f"{driver}-") and name[len(driver) + 1 :] in presets:
            return driver, name[len(driver) + 1 :]
    return name, ""


def _figures(summary: dict) -> dict:
    services = summary.get("services", {}).values()
    checks = summary.get("checks", [])
    return {
        "verdict": summary.get("verdict"),
        "hard_breaks": sum(s.get("hard_breaks", 0) for s in services),
        "soft_breaks": sum(s.get("soft_breaks", 0) for s in services),
        "split_sessions": sum(s.get("split_sessions", 0) for s in services),
        "max_over_mean": summary.get("balance", {}).get("max_over_mean"),
        "error_rate_pct": summary.get("totals", {}).get("error_rate_pct"),
        "failed_checks": [c["name"] for c in checks if not c["pass"]],
    }
