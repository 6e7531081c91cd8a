"""`caslab advise`: every driver asked for, one after another, each with an equal share of what is left
of the wall-time budget; the advice folder OUT/advise-<name>-<UTC time>/ holds a folder per driver (its
runs and its winning config's files), advice.json and advice.html.

Exit code: 0 a driver's winning config passed its confirming run, 1 none did (the closest is written,
with what blocks it), 2 the lab could not run (or Ctrl-C).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab.advise.candidates import with_methods
from lab.advise.output import config_files, driver_record, printed, write_advice
from lab.advise.search import DriverAdvice, Evaluator, advise_driver
from lab.runfolder import new_run_dir
from lab.scenario import Scenario
from lab.verdict import EXIT_CANNOT_RUN, EXIT_FAIL, EXIT_PASS

MakeEvaluator = Callable[[Scenario, str, Path], Evaluator]


def say_on_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _lab_evaluator(scenario: Scenario, driver: str, folder: Path) -> Evaluator:
    from lab.advise.runner import LabEvaluator

    return LabEvaluator(scenario, driver, folder, say_on_stderr)


def advise(
    scenario: Scenario,
    drivers: list[str],
    budget_s: float,
    out: Path,
    *,
    say: Callable[[str], None] = say_on_stderr,
    evaluator: MakeEvaluator = _lab_evaluator,
) -> tuple[int, Path]:
    """Advise on every driver; returns (exit code, advice folder)."""
    start = time.monotonic()
    end = start + budget_s
    folder = new_run_dir(out, f"advise-{scenario.name}")
    say(f"caslab advise: {scenario.name} on {', '.join(drivers)}, budget {budget_s:g} s, results in {folder}")
    records, advices = [], []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for i, driver in enumerate(drivers):
            share = (end - time.monotonic()) / (len(drivers) - i)
            driver_dir = folder / driver
            driver_dir.mkdir()
            advice = advise_driver(
                scenario, driver, evaluator(scenario, driver, driver_dir), time.monotonic() + share,
                lambda text, d=driver: say(f"caslab advise: {d}: {text}"),
            )  # fmt: skip
            advices.append(advice)
            records.append(_record(scenario, advice, folder, driver_dir))
            say(f"caslab advise: {driver}: {advice.status}: {advice.reason}")
    except KeyboardInterrupt:
        say("caslab advise: interrupted; writing what finished")
        write_advice(folder, scenario, budget_s, time.monotonic() - start, records, advices)
        return EXIT_CANNOT_RUN, folder
    finally:
        signal.signal(signal.SIGTERM, previous)
    verdict = write_advice(folder, scenario, budget_s, time.monotonic() - start, records, advices)
    for record in records:
        methods = ", ".join(f"{s}={m}" for s, m in record["methods"].items())
        say(f"caslab advise: {record['driver']} {record['status']}: {methods}")
        for name in record["config_files"]:
            say(f"caslab advise: {record['driver']} config: {folder / name}")
    say(f"caslab advise: {folder / 'advice.html'}")
    best = min(records, key=lambda r: (r["status"] != "pass", r["_balance"]), default=None)
    if best is not None and best["_printed"]:  # the winning config on stdout, as `balancer config` prints
        print(best["_printed"], end="")
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(verdict, EXIT_CANNOT_RUN), folder


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _record(scenario: Scenario, advice: DriverAdvice, folder: Path, driver_dir: Path) -> dict:
    """The driver's record for advice.json, with its winning config written as the balancer's files."""
    files = []
    if advice.status != "could not run":
        rendered = config_files(with_methods(scenario, advice.driver, advice.methods))
        head = f"# caslab advise for {scenario.name}: {advice.status} ({advice.reason})\n"
        rendered = {name: head + text for name, text in rendered.items()}
        for name, text in rendered.items():
            path = driver_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files.append(str(path.relative_to(folder)))
    record = driver_record(advice, folder, files)
    record["_printed"] = printed(rendered) if files else ""
    confirm = advice.confirm
    record["_balance"] = ((confirm.summary or {}).get("balance", {}) if confirm else {}).get(
        "max_over_mean"
    ) or 99.0
    return record
