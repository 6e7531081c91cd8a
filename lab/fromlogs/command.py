"""`caslab scenario from-logs`: logs in, a checked scenario out, with the fit in figures and, when
asked, as a report.

    read (read.py: w3c.py, haproxy.py, nginx.py -> tally.py) -> infer (infer.py) -> write (writer.py)
    -> check (lab.scenario.parse_scenario) -> fit (fit.py) -> figures / report (figures.py, page.py)

The scenario goes to the output file (or to stdout, and then everything else to stderr). Each file
read is named with what it held; lines of other formats are counted and the first few quoted on the
terminal, never in the written files (they hold user names).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lab.fromlogs.batch import FileNotes
from lab.fromlogs.figures import fit_text
from lab.fromlogs.fit import fit
from lab.fromlogs.infer import infer
from lab.fromlogs.page import fit_html
from lab.fromlogs.read import read_logs
from lab.fromlogs.sources import LogError
from lab.fromlogs.writer import scenario_name, scenario_toml
from lab.scenario import ScenarioError, parse_scenario
from lab.verdict import EXIT_CANNOT_RUN, EXIT_PASS

PROG = "caslab scenario from-logs"


def from_logs(
    paths: list[Path],
    output: Path | None = None,
    report: Path | None = None,
    time_scale: float = 1.0,
    haproxy_capture: tuple[str, ...] = (),
) -> int:
    """Run the command; returns its exit code (0 written, 2 the logs could not make a scenario)."""
    say: Callable[[str], None] = _printer(sys.stdout if output else sys.stderr)
    try:
        observed = read_logs(paths, time_scale, haproxy_capture, on_file=lambda notes: _tell_file(notes, say))
        inference = infer(observed)
    except LogError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    name = scenario_name(output)
    text = scenario_toml(inference, name)
    try:
        scenario = parse_scenario(text, origin=str(output or "<from-logs>"), default_name=name)
    except ScenarioError as err:  # the writer's mistake, not the logs'
        print(f"{PROG}: the scenario inferred is not valid (a bug of caslab): {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if output:
        output.write_text(text)
        say(f"scenario: {output} ({len(inference.populations)} populations, {inference.users:,} users)")
    else:
        sys.stdout.write(text)
    for note in inference.notes:
        say(f"note: {note}")
    for population in inference.populations:
        say(f"{population.name}: {population.evidence[0]}")
    result = fit(inference, scenario)
    say(fit_text(result))
    if report:
        report.write_text(fit_html(inference, result, text, name))
        say(f"fit report: {report}")
    return EXIT_PASS


def _tell_file(notes: FileNotes, say: Callable[[str], None]) -> None:
    line = f"read {notes.path}: {notes.format}, {notes.requests:,} requests"
    if notes.misfits:
        line += f", {notes.misfits:,} lines not read"
    say(line)
    for example in notes.examples:
        say(f"  not read: {example}")
    for field in notes.skipped_fields:
        say(f"  skipped field {field}: not an IIS field")
    for remark in notes.remarks:
        say(f"  {remark}")


def _printer(stream: TextIO) -> Callable[[str], None]:
    return lambda text: print(text, file=stream)
