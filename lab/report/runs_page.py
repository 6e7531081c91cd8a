"""The page of several runs side by side, one look for all of them: the suite's index.html, the
matrix's matrix.html and compare's HTML.

It shows, from each run's summary.json: the verdict and its reason with a link to the run's report, its
figures under human names with their units, a grid of services x runs (hard and soft breaks, split
sessions, cuts), a balance plot per run, and, given a comparison (lab.compare), the change from the
baseline per run and the figures that moved. templates/runs.html.j2 lays it out in the report's style.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caslab.vocab import SERVICES
from lab.report.page import TEMPLATES, number
from lab.report.plots import Plot, inline_svg, new_axes
from lab.runset import NO_VERDICT, RunEntry

if TYPE_CHECKING:
    from lab.compare import Comparison

COLUMNS = (  # the runs table's figures: (heading with its unit, how to read it from a summary)
    "requests",
    "hard breaks",
    "soft breaks",
    "split sessions needing affinity",
    "cuts",
    "error rate (%)",
    "balance max/mean",
    "max/mean random placement gives (95th pct.)",
)
NO_AFFINITY = ("oab", "autodiscover")  # their split sessions are harmless (lab.verifier.checks)
# A set with any of these vouches for less; a combination a driver refused is no problem of the set.
PROBLEMS = ("invalid", *(s for s in NO_VERDICT if s != "refused"))


@dataclass(frozen=True)
class Row:
    """A run as the runs table shows it."""

    name: str
    detail: str
    status: str
    reason: str
    link: str  # to its report.html, relative to the page ("" when it has none)
    figures: list[str]
    change: str  # from the baseline ("" without a comparison)
    regressed: bool


@dataclass(frozen=True)
class Cell:
    text: str
    css: str  # "bad" (hard breaks), "warn" (soft breaks, split sessions, cuts), "" or "unused"


def overall(entries: list[RunEntry], regressions: int = 0) -> tuple[str, str]:
    """The verdict of a set of runs and its reason: invalid when any run is invalid or has no verdict
    (a refused combination aside), else fail when any failed or got worse than its baseline, else pass."""
    statuses = [e.status for e in entries]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    reason = f"{len(entries)} run{'' if len(entries) == 1 else 's'}: {counts}" if entries else "no runs"
    if regressions:
        reason += f"; {regressions} regression{'s' if regressions > 1 else ''} from the baseline"
    if any(s in PROBLEMS for s in statuses) or not entries:
        return "invalid", reason
    if "fail" in statuses or regressions:
        return "fail", reason
    return "pass", reason


def runs_html(
    title: str,
    subtitle: str,
    entries: list[RunEntry],
    page_dir: Path,
    *,
    details: dict[str, str] | None = None,
    comparison: Comparison | None = None,
    headline: tuple[str, str, str] | None = None,
    template: str = "runs.html.j2",
    **extra: Any,
) -> str:
    """The page for `entries`, to be written in `page_dir` (links to the reports are relative to it).
    `details`: a line under a run's name, by name (e.g. its driver and preset). `headline`: (word,
    style, reason) of the banner instead of the set's verdict (compare's "no regression"). `template`:
    one that extends runs.html.j2 to put a section of its own first (block `intro`), with `extra` as
    its names (advice.html)."""
    details = details or {}
    if headline is None:
        verdict, reason = overall(entries, len(comparison.regressions) if comparison else 0)
        headline = (verdict, verdict, reason)
    changes = _changes_by_run(comparison) if comparison else {}
    rows = [_row(e, page_dir, details.get(e.name, ""), changes.get(e.name)) for e in entries]
    return TEMPLATES.get_template(template).render(
        title=title,
        subtitle=subtitle,
        headline=headline,
        columns=COLUMNS,
        rows=rows,
        compared=comparison is not None,
        grid=_grid(entries),
        plots=[(e.name, e.status, _balance_plot(e, i), _balance_note(e)) for i, e in enumerate(entries)],
        comparison=_comparison(comparison) if comparison else None,
        **extra,
    )


def _row(entry: RunEntry, page_dir: Path, detail: str, change: tuple[str, bool] | None) -> Row:
    link = ""
    if entry.run_dir is not None and (entry.run_dir / "report.html").is_file():
        link = os.path.relpath(entry.run_dir / "report.html", page_dir)
    elif entry.run_dir is not None and (entry.run_dir / "lab.log").is_file():
        link = os.path.relpath(entry.run_dir / "lab.log", page_dir)
    text, regressed = change if change else ("", False)
    return Row(entry.name, detail, entry.status, entry.reason, link, _figures(entry.summary), text, regressed)


def _figures(summary: dict[str, Any] | None) -> list[str]:
    if summary is None:
        return ["–"] * len(COLUMNS)
    services = summary.get("services", {})
    totals = summary.get("totals", {})
    balance = summary.get("balance", {})

    def total(key: str) -> Any:
        return sum(s.get(key, 0) for s in services.values()) if services else totals.get(key)

    split = sum(s.get("split_sessions", 0) for name, s in services.items() if name not in NO_AFFINITY)
    return [
        number(totals.get("requests")),
        number(total("hard_breaks")),
        number(total("soft_breaks")),
        number(split),
        number(total("cut")) if any("cut" in s for s in services.values()) else "–",
        number(totals.get("error_rate_pct")),
        number(balance.get("max_over_mean")),
        number(balance.get("random_max_over_mean_p95")),
    ]


def _grid(entries: list[RunEntry]) -> list[tuple[str, list[Cell]]]:
    """Per service (rows), per run (columns): its hard and soft breaks, split sessions and cuts."""
    used = [s for s in SERVICES if any(s in (e.summary or {}).get("services", {}) for e in entries)]
    rows = []
    for service in used:
        cells = []
        for entry in entries:
            if entry.summary is None:  # no figures: it did not run or did not finish
                cells.append(Cell("–", "unused"))
                continue
            cells.append(_cell(service, entry.summary.get("services", {}).get(service)))
        rows.append((service, cells))
    return rows


def _cell(service: str, figures: dict[str, Any] | None) -> Cell:
    if not figures or not figures.get("requests"):
        return Cell("not used", "unused")
    split_label = "split (harmless)" if service in NO_AFFINITY else "split"
    parts = [
        (figures.get("hard_breaks", 0), "hard", "bad"),
        (figures.get("soft_breaks", 0), "soft", "warn"),
        (figures.get("split_sessions", 0), split_label, "" if service in NO_AFFINITY else "warn"),
        (figures.get("cut", 0), "cuts", "warn"),
    ]
    shown = [(count, label, css) for count, label, css in parts if count]
    if not shown:
        return Cell("none", "")
    css = next((c for c in ("bad", "warn") if any(css == c for _n, _l, css in shown)), "")
    return Cell(" · ".join(f"{number(count)} {label}" for count, label, _css in shown), css)


def _balance_plot(entry: RunEntry, index: int) -> Plot:
    """Requests per CAS as bars, with their mean and what random placement of the run's sessions gives
    (the mean times the 95th percentile of max/mean): a bar above that line is the balancer's doing."""
    alt = f"requests per CAS of {entry.name}"
    if entry.summary is None:
        return Plot(alt, nothing_to_show=f"No figures: the run {entry.status}.")
    servers = (entry.summary or {}).get("servers", {})
    load = {name: figures.get("requests", 0) for name, figures in servers.items()}
    if not sum(load.values()):
        return Plot(alt, nothing_to_show="No CAS answered a request: no load to show.")
    import matplotlib

    from lab.report.plots import SVG_SETTINGS

    balance = (entry.summary or {}).get("balance", {})
    mean = sum(load.values()) / len(load)
    chance = balance.get("random_max_over_mean_p95")
    with matplotlib.rc_context(SVG_SETTINGS):
        ax = new_axes(3.4, 2.3)
        bad = chance is not None and balance.get("exceeds_random")
        ax.bar(list(load), list(load.values()), color="#cf222e" if bad else "#4c78a8")
        ax.axhline(mean, color="#444", linestyle="--", linewidth=1, label="mean")
        if chance is not None:
            ax.axhline(
                mean * chance, color="#bf8700", linestyle=":", linewidth=1.2, label="chance (95th pct.)"
            )
        ax.set_ylabel("answered requests", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False, loc="lower right")
        return inline_svg(ax, f"balance-{index}", alt)


def _balance_note(entry: RunEntry) -> str:
    balance = (entry.summary or {}).get("balance", {})
    if balance.get("max_over_mean") is None:
        return ""
    verdict = "beyond chance: the balancer's doing" if balance.get("exceeds_random") else "within chance"
    percentile = number(balance.get("random_placement_pct"))
    return (
        f"max/mean {number(balance['max_over_mean'])}, at the {percentile}th percentile of random "
        f"placements: {verdict}"
    )


def _changes_by_run(comparison: Comparison) -> dict[str, tuple[str, bool]]:
    """Per run name: the change from the baseline in a few words, and whether it regressed."""
    from lab.compare import FIGURES

    out = {}
    for pair in comparison.pairs:
        worse = pair.regressions
        if worse:
            out[pair.name] = ("worse: " + ", ".join(_what(c, FIGURES) for c in worse), True)
        elif pair.compared:
            better = [c for c in pair.changes if c.result == "better"]
            text = "no regression" + (
                f"; better: {', '.join(_what(c, FIGURES) for c in better)}" if better else ""
            )
            out[pair.name] = (text, False)
        else:
            out[pair.name] = (pair.note, False)
    return out


def _what(change: Any, figures: dict) -> str:
    label = figures[change.figure].label if change.figure in figures else change.figure
    return label if change.scope == "run" else f"{label} ({change.scope})"


def _comparison(comparison: Comparison) -> dict[str, Any]:
    """The comparison section: the figures that moved (regressions first), the pairs not compared, the
    rule."""
    from lab.compare import FIGURES, RULE

    moved = []
    for pair in comparison.pairs:
        for c in pair.changes:
            if c.result in ("same",):
                continue
            label = FIGURES[c.figure].label if c.figure in FIGURES else c.figure
            p = "" if c.p_value is None else f"{c.p_value:.2g}"
            cells = [pair.name, c.scope, label, number(c.base), number(c.new), c.result, p, c.why]
            moved.append((c.regression, c.result == "better", cells))
    moved.sort(key=lambda m: (not m[0], not m[1]))
    tolerances = ", ".join(
        f"{FIGURES[k].label} {v:g} ({FIGURES[k].tolerance_unit})" for k, v in comparison.tolerances.items()
    )
    return {
        "base": str(comparison.base),
        "new": str(comparison.new),
        "rows": moved,
        "notes": [(p.name, p.note) for p in comparison.pairs if not p.compared],
        "rule": RULE,
        "tolerances": tolerances,
    }
