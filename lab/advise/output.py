"""What `caslab advise` writes: per driver the winning config as the balancer's own files (what
`caslab balancer config` prints for it), advice.json (schema caslab.advice/1) and advice.html (the runs
page of lab/report/runs_page.py: the confirming run of each driver first, linked to its report, then
every run of the search with what it tried and why it won or lost).

advice.json: {"schema", "scenario", "budget_s", "elapsed_s", "verdict", "reason", "best_driver",
"idle_timeouts": [a sentence per idle timeout raised for the connections the clients hold (none: the
scenario's own were long enough)], "drivers": [{"driver", "status", "reason", "confirm_run",
"config_files", "services": {service:
{"group", "method", "timeout_s", "passing", "evidence", "searched", "complete", "rejected": [{"method",
"stage", "why", "run"}]}}, "runs": [{"run", "group", "candidate", "seconds", "status", "figures"}]}]}
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.advise.candidates import Rejection, idle_timeouts
from lab.advise.judge import figures_line
from lab.advise.search import DriverAdvice
from lab.balancers import driver_class
from lab.model import TlsFiles, local_farm
from lab.report.runs_page import runs_html
from lab.runset import RunEntry, run_entry
from lab.scenario import Scenario, format_duration

SCHEMA = "caslab.advice/1"


def config_files(scenario: Scenario) -> dict[str, str]:
    """The files the scenario's driver renders for its balancer section in front of a local farm, as
    `caslab balancer config --scenario` prints them (paths relative to a run folder: balancer/, tls/)."""
    tls = Path("tls")
    tls_files = TlsFiles(tls / "ca.pem", tls / "server.crt", tls / "server.key", tls / "server.pem")
    spec = scenario.balancer_spec(
        local_farm(scenario.farm.servers), tls_files=tls_files if scenario.farm.tls != "none" else None
    )
    driver = driver_class(spec.driver)(spec, Path("."))
    driver.check()
    return driver.render()


def printed(files: dict[str, str]) -> str:
    """The files as one text, each headed by its name when there are several."""
    out = []
    for name, text in files.items():
        if len(files) > 1:
            out.append(f"# ---- {name} ----\n")
        out.append(text if text.endswith("\n") else text + "\n")
    return "".join(out)


def driver_record(advice: DriverAdvice, folder: Path, files: list[str]) -> dict:
    services = {}
    for result in advice.groups:
        for service in result.group:
            services[service] = {
                "group": list(result.group),
                "method": str(result.chosen),
                "timeout_s": result.chosen.timeout_s
                if result.chosen.method not in ("none", "leastconn")
                else None,
                "passing": result.passing,
                "evidence": result.evidence,
                "searched": result.searched,
                "complete": result.complete,
                "rejected": [
                    {"method": r.method, "stage": r.stage, "why": r.why, "run": r.run}
                    for r in result.rejected
                ],
            }
    runs = [
        {
            "run": o.run_dir.name if o.run_dir else None,
            "group": list(t.group),
            "candidate": str(t.candidate),
            "seconds": t.seconds,
            "status": o.status,
            "figures": figures_line(o, t.group),
        }
        for result in advice.groups
        for t, o in result.runs
    ]
    confirm = advice.confirm
    return {
        "driver": advice.driver,
        "status": advice.status,
        "reason": advice.reason,
        "methods": {s: str(p) for s, p in advice.methods.items()},
        "confirm_run": str(confirm.run_dir.relative_to(folder)) if confirm and confirm.run_dir else None,
        "config_files": files,
        "services": services,
        "runs": runs,
    }


def overall(records: list[dict]) -> tuple[str, str, str | None]:
    """(verdict, reason, best driver) of the drivers' advice: pass when one passed (the best is the
    passing one whose confirming run was best balanced), could not run when none could."""
    passing = [r for r in records if r["status"] == "pass"]
    if passing:
        best = min(passing, key=lambda r: r.get("_balance", 99.0))
        return "pass", f"{best['driver']}: {best['reason']}", best["driver"]
    if records and all(r["status"] == "could not run" for r in records):
        return "could not run", "; ".join(f"{r['driver']}: {r['reason']}" for r in records), None
    return "fail", "; ".join(f"{r['driver']}: {r['reason']}" for r in records), None


def write_advice(
    folder: Path, scenario: Scenario, budget_s: float, elapsed_s: float, records: list[dict],
    advices: list[DriverAdvice],
) -> str:  # fmt: skip
    """advice.json and advice.html into `folder`; returns the verdict."""
    verdict, reason, best = overall(records)
    data = {
        "schema": SCHEMA,
        "scenario": scenario.name,
        "budget_s": budget_s,
        "elapsed_s": round(elapsed_s, 1),
        "verdict": verdict,
        "reason": reason,
        "best_driver": best,
        "idle_timeouts": idle_timeouts(scenario)[1],
        "drivers": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
    }
    (folder / "advice.json").write_text(json.dumps(data, indent=2) + "\n")
    entries, details = _entries(advices)
    style = "pass" if verdict == "pass" else "invalid" if verdict == "could not run" else "fail"
    page = runs_html(
        f"advice for {scenario.name}",
        f"drivers {', '.join(a.driver for a in advices)}; budget {budget_s:g} s, used {elapsed_s:.0f} s",
        entries, folder, details=details, headline=(verdict, style, reason), template="advice.html.j2",
        advice=[_advice_section(a, r, folder) for a, r in zip(advices, records, strict=False)],
        idle_notes=idle_timeouts(scenario)[1],
    )  # fmt: skip
    (folder / "advice.html").write_text(page, encoding="utf-8")
    return verdict


def _advice_section(advice: DriverAdvice, record: dict, folder: Path) -> dict:
    """What the page's advice table shows of one driver."""
    runs = folder / advice.driver
    groups = []
    for result in advice.groups:
        p = result.chosen
        groups.append(
            {
                "group": " + ".join(result.group),
                "chosen": str(p) if result.passing else f"{p} (closest; none passes)",
                "timeout": format_duration(p.timeout_s) if p.method not in ("none", "leastconn") else "",
                "evidence": result.evidence,
                "rejected": [_rejected_row(r, advice.driver, runs) for r in result.rejected],
            }
        )
    files = record.get("config_files") or []
    return {
        "driver": advice.driver, "status": advice.status, "reason": advice.reason,
        "config": files[0] if files else "", "groups": groups,
    }  # fmt: skip


def _rejected_row(r: Rejection, driver: str, runs: Path) -> dict:
    link = f"{driver}/{r.run}/report.html" if r.run and (runs / r.run).is_dir() else ""
    return {"method": r.method, "stage": r.stage, "why": r.why, "link": link}


def _entries(advices: list[DriverAdvice]) -> tuple[list[RunEntry], dict[str, str]]:
    """The confirming runs first (named by driver, with the advice per group), then every search run
    once (with what it tried and what came of it; a run one group made may serve another's baseline)."""
    entries, details = [], {}
    for a in advices:
        name = f"{a.driver}: advice"
        if a.confirm is not None and a.confirm.run_dir is not None:
            entry = run_entry(a.confirm.run_dir, name)
        else:
            entry = RunEntry(name, "not run", a.reason)
        entries.append(entry)
        details[name] = "; ".join(f"{'+'.join(r.group)} {r.chosen}" for r in a.groups)
    roles: dict[Path, list[str]] = {}
    for a in advices:
        for result in a.groups:
            fate = {r.method: f"{r.stage}: {r.why}" for r in result.rejected}
            for trial, outcome in result.runs:
                if outcome.run_dir is None:
                    continue
                won = "chosen" if trial.candidate == result.chosen else fate.get(str(trial.candidate), "")
                text = f"{'+'.join(trial.group)} = {trial.candidate}, {trial.seconds:g} s: {won}"
                if outcome.run_dir not in roles:
                    roles[outcome.run_dir] = []
                    entries.append(run_entry(outcome.run_dir, f"{a.driver}: {outcome.run_dir.name}"))
                roles[outcome.run_dir].append(text)
    for run_dir, texts in roles.items():
        details[f"{run_dir.parent.name}: {run_dir.name}"] = " · ".join(texts)
    return entries, details
