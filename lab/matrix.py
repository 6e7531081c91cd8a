"""`caslab matrix`: one scenario on several drivers x presets, judged side by side.

Each combination is an ordinary run (its own folder and report under the matrix folder); a combination
a driver cannot express is shown as refused, with the driver's reason, not run. The matrix writes
matrix.json and a self-contained matrix.html linking every run's report.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from pathlib import Path

from lab.run import run_scenario
from lab.scenario import Scenario, ScenarioError
from lab.verdict import EXIT_CANNOT_RUN, EXIT_CODES

COLUMNS = ("verdict", "hard_breaks", "soft_breaks", "split_sessions", "max_over_mean", "error_rate_pct")


def run_matrix(
    scenario: Scenario, drivers: list[str], presets: list[str], out: Path, say: Callable[[str], None] = print
) -> tuple[int, Path]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (out / f"matrix-{scenario.name}-{stamp}").resolve()
    folder.mkdir(parents=True)
    cells = []
    for driver in drivers:
        for preset in presets:
            cell: dict = {"driver": driver, "preset": preset}
            try:
                variant = scenario.with_overrides(driver=driver, preset=preset)
            except ScenarioError as err:
                cell.update(status="refused", reason=str(err))
                say(f"caslab matrix: {driver} x {preset}: refused: {err}")
                cells.append(cell)
                continue
            code, run_dir = run_scenario(variant, folder, say=say, run_name=f"{driver}-{preset}")
            cell.update(status="could not run", run_dir=run_dir.name)
            summary_file = run_dir / "summary.json"
            if summary_file.exists():
                summary = json.loads(summary_file.read_text())
                cell.update(_figures(summary))
                if EXIT_CODES.get(summary.get("verdict")) == code:  # the run ended with its verdict
                    cell["status"] = summary["verdict"]
                if cell["status"] == "invalid":
                    cell["reason"] = summary.get("verdict_reason", "")
            cells.append(cell)
    result = {"schema": "caslab.matrix/1", "scenario": scenario.name, "drivers": drivers, "presets": presets,
              "cells": cells}  # fmt: skip
    (folder / "matrix.json").write_text(json.dumps(result, indent=2))
    (folder / "matrix.html").write_text(_html(result), encoding="utf-8")
    say(f"caslab matrix: {folder / 'matrix.html'}")
    statuses = {c["status"] for c in cells}
    if statuses & {"could not run", "invalid"}:
        return EXIT_CANNOT_RUN, folder
    return (EXIT_CODES["fail"] if "fail" in statuses else EXIT_CODES["pass"]), folder


def _figures(summary: dict) -> dict:
    services = summary.get("services", {}).values()
    checks = summary.get("checks", [])
    error = next((c["value"] for c in checks if c["name"] == "error_rate_pct"), None)
    return {
        "verdict": summary.get("verdict"),
        "hard_breaks": sum(s.get("hard_breaks", 0) for s in services),
        "soft_breaks": sum(s.get("soft_breaks", 0) for s in services),
        "split_sessions": sum(s.get("split_sessions", 0) for s in services),
        "max_over_mean": summary.get("balance", {}).get("max_over_mean"),
        "error_rate_pct": error,
        "failed_checks": [c["name"] for c in checks if not c["pass"]],
    }


def _html(result: dict) -> str:
    rows = []
    for c in result["cells"]:
        color = {"pass": "#d9f2d9", "fail": "#f8d7d7", "refused": "#eeeeee"}.get(c["status"], "#fce8b2")
        link = f'<a href="{html.escape(c["run_dir"])}/report.html">report</a>' if c.get("run_dir") else ""
        figures = "".join(f"<td>{html.escape(str(c.get(k, '')))}</td>" for k in COLUMNS[1:])
        note = html.escape(c.get("reason") or ", ".join(c.get("failed_checks", [])))
        rows.append(
            f'<tr style="background:{color}"><td>{html.escape(c["driver"])}</td>'
            f"<td>{html.escape(c['preset'])}</td><td><b>{html.escape(c['status'])}</b></td>{figures}"
            f"<td>{note}</td><td>{link}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("driver", "preset", "status", *COLUMNS[1:], "why", ""))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>caslab matrix</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>caslab matrix: {html.escape(result['scenario'])}</h1>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table></body></html>\n"
    )
