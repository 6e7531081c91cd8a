"""`caslab suite DIR`: every scenario file of a folder, run one after another, judged together.

Each scenario file (DIR/*.toml, by name) is an ordinary run in its own folder under the suite folder,
OUT/suite-<DIR's name>-<UTC time>/<file's stem>-<UTC time>/, so two suites pair their runs by file
(`caslab compare`). The suite writes one junit.xml (a testsuite per scenario, a testcase per check),
index.html (the runs page, lab/report/runs_page.py) and suite.json; with a baseline also compare.json
and compare.md (the Markdown for a pull request comment).

A scenario file with an error is that run's error, not the suite's end. Ctrl-C tears the current run
down (lab.run does, then raises RunInterrupted), and the suite writes what it has and exits 2: the runs
not started are "not run". Exit code: 0 every run passed and none got worse than the baseline, 1 a check
failed or a figure got worse, 2 a run was invalid, could not run, or the suite was interrupted.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lab.report.junit import junit_document, run_testsuite
from lab.report.runs_page import overall, runs_html
from lab.runfolder import new_run_dir
from lab.runset import RunEntry, RunSetError, read_runs, run_entry
from lab.verdict import EXIT_CODES
from lab.verifier.checks import Check

if TYPE_CHECKING:
    from lab.compare import Comparison
    from lab.scenario import Scenario

RunScenario = Callable[..., tuple[int, Path]]  # lab.run.run_scenario's shape


class SuiteError(ValueError):
    """The suite cannot start (no scenario files, an unreadable baseline); the message says why."""


def say_on_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def scenario_files(folder: Path) -> list[Path]:
    """The scenario files of a suite folder, by name."""
    if not folder.is_dir():
        raise SuiteError(f"{folder}: no such folder")
    files = sorted(p for p in folder.glob("*.toml") if p.is_file())
    if not files:
        raise SuiteError(f"{folder}: no scenario files (*.toml) in it")
    return files


def run_suite(
    folder: Path,
    out: Path,
    *,
    driver: str | None = None,
    config: str | None = None,
    backend: str = "local",
    baseline: Path | None = None,
    tolerances: dict[str, float] | None = None,
    say: Callable[[str], None] = say_on_stderr,
    run: RunScenario | None = None,
) -> tuple[int, Path]:
    """Run the suite in `folder`; returns (exit code, suite folder). `run`: what runs one scenario
    (lab.run.run_scenario, imported only then: it brings Locust, which patches the process with gevent)."""
    files = scenario_files(folder)
    base_runs = _baseline_runs(baseline) if baseline is not None else None
    if run is None:
        from lab.run import run_scenario as run
    suite_dir = new_run_dir(out, f"suite-{folder.resolve().name}")
    say(f"caslab suite: {len(files)} scenarios of {folder}, results in {suite_dir}")
    entries: list[RunEntry] = []
    for i, path in enumerate(files, 1):
        name = path.stem
        say(f"caslab suite: [{i}/{len(files)}] {name}: starting")
        try:
            entry = _one_run(path, suite_dir, run, driver=driver, config=config, backend=backend, say=say)
        except KeyboardInterrupt as stop:  # lab.run.RunInterrupted: its lab is torn down by now
            run_dir = getattr(stop, "run_dir", None)
            entries.append(RunEntry(name, "interrupted", "Ctrl-C or SIGTERM stopped the suite", run_dir))
            entries += [RunEntry(p.stem, "not run", "the suite was interrupted before it") for p in files[i:]]
            say(f"caslab suite: [{i}/{len(files)}] {name}: interrupted; the suite stops here")
            break
        except Exception as err:  # the lab could not even make the run's folder: that run's error
            entry = RunEntry(name, "could not run", f"{type(err).__name__}: {err}")
        entries.append(entry)
        say(f"caslab suite: [{i}/{len(files)}] {name}: {entry.status}: {entry.reason}")
    comparison = None
    if base_runs is not None and baseline is not None:
        from lab.compare import compare_runs, parse_tolerances

        comparison = compare_runs(baseline, suite_dir, base_runs, entries, tolerances or parse_tolerances([]))
        _write_comparison(suite_dir, comparison)
    code = write_suite(suite_dir, folder, entries, comparison)
    say(f"caslab suite: {overall(entries, len(comparison.regressions) if comparison else 0)[1]}")
    say(f"caslab suite: {suite_dir / 'index.html'}")
    return code, suite_dir


def _baseline_runs(baseline: Path) -> list[RunEntry]:
    """The runs of the baseline suite, read before anything runs (an unreadable one stops the suite)."""
    try:
        kind, runs = read_runs(baseline)
    except RunSetError as err:
        raise SuiteError(f"--baseline {err}") from None
    if kind != "set":
        raise SuiteError(f"--baseline {baseline}: one run, not a suite folder (give the folder of its runs)")
    return runs


def _one_run(
    path: Path, suite_dir: Path, run: RunScenario, *, driver: str | None, config: str | None, backend: str,
    say: Callable[[str], None],
) -> RunEntry:  # fmt: skip
    """Run one scenario file; a file with an error, or a lab that could not run, is that run's error."""
    from lab.scenario import ScenarioError, load_scenario

    name = path.stem
    try:
        scenario: Scenario = load_scenario(str(path)).with_overrides(driver=driver, config=config)
        if scenario.config_path is not None and not scenario.config_path.is_file():
            raise ScenarioError(f"{scenario.config_path}: no such file (the balancer config to run)")
    except ScenarioError as err:
        run_dir = new_run_dir(suite_dir, name)
        (run_dir / "lab.log").write_text(f"caslab suite: {err}\n", encoding="utf-8")
        return RunEntry(name, "could not run", str(err), run_dir)
    said: list[str] = []

    def tell(text: str) -> None:
        said.append(text)
        say(text)

    code, run_dir = run(scenario, suite_dir, backend=backend, say=tell, run_name=name)
    entry = run_entry(run_dir, name)
    if entry.summary is None or EXIT_CODES.get(entry.status) != code:
        why = [line.removeprefix("caslab: ") for line in said if "could not run" in line]
        entry.status, entry.reason = "could not run", (why[-1] if why else entry.reason)
    return entry


def _write_comparison(suite_dir: Path, comparison: Comparison) -> None:
    from lab.report.compared import markdown

    (suite_dir / "compare.json").write_text(json.dumps(comparison.to_dict(), indent=2) + "\n")
    (suite_dir / "compare.md").write_text(markdown(comparison), encoding="utf-8")


def write_suite(
    suite_dir: Path, folder: Path, entries: list[RunEntry], comparison: Comparison | None = None
) -> int:
    """junit.xml, index.html and suite.json of the runs so far; returns the suite's exit code."""
    regressions = len(comparison.regressions) if comparison else 0
    verdict, reason = overall(entries, regressions)
    (suite_dir / "junit.xml").write_text(junit_document([_testsuite(e) for e in entries]), encoding="utf-8")
    page = runs_html(f"suite {folder.resolve().name}", str(folder), entries, suite_dir, comparison=comparison)
    (suite_dir / "index.html").write_text(page, encoding="utf-8")
    record = {
        "schema": "caslab.suite/1",
        "folder": str(folder),
        "verdict": verdict,
        "verdict_reason": reason,
        "baseline": str(comparison.base) if comparison else None,
        "regressions": regressions,
        "runs": [
            {
                "name": e.name,
                "status": e.status,
                "reason": e.reason,
                "run_dir": e.run_dir.name if e.run_dir else None,
            }
            for e in entries
        ],
    }
    (suite_dir / "suite.json").write_text(json.dumps(record, indent=2) + "\n")
    return EXIT_CODES[verdict]


def _testsuite(entry: RunEntry) -> ET.Element:
    """A run's testsuite: its checks; a run without a verdict is invalid with the reason."""
    checks = [Check.from_dict(c) for c in (entry.summary or {}).get("checks", [])]
    invalid = None
    if entry.status == "invalid":
        invalid = entry.reason
    elif entry.status not in ("pass", "fail"):
        invalid, checks = f"{entry.status}: {entry.reason}", []
    return run_testsuite(f"caslab.{entry.name}", checks, invalid)
