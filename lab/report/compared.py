"""`caslab compare` in words: a table for the terminal and Markdown for a pull-request comment (its JSON
is Comparison.to_dict, its HTML the runs page). Both list what got worse first, then what else moved;
figures that did not move are left out."""

from __future__ import annotations

from lab.compare import FIGURES, RULE, Change, Comparison
from lab.report.page import number

HEADINGS = ("run", "scope", "figure", "base", "new", "result", "p", "why")


def _label(change: Change) -> str:
    return FIGURES[change.figure].label if change.figure in FIGURES else change.figure


def _moved(comparison: Comparison) -> list[list[str]]:
    """A row per change that is not "same", regressions first, then improvements, then the rest."""
    rows = []
    for pair in comparison.pairs:
        for c in pair.changes:
            if c.result == "same":
                continue
            p = "" if c.p_value is None else f"{c.p_value:.2g}"
            result = "WORSE" if c.regression else c.result
            rows.append([pair.name, c.scope, _label(c), number(c.base), number(c.new), result, p, c.why])
    order = {"WORSE": 0, "better": 1}
    return sorted(rows, key=lambda row: order.get(row[5], 2))


def headline(comparison: Comparison) -> str:
    """E.g. "regression: 2 figures got worse in 1 of 3 compared runs", or "no regression in 3 compared
    runs"."""
    compared = sum(p.compared for p in comparison.pairs)
    runs = f"{compared} compared run{'s' if compared != 1 else ''}"
    figures = len(comparison.regressions)
    if figures:
        regressed = sum(bool(p.regressions) for p in comparison.pairs)
        return f"regression: {figures} figure{'s' if figures > 1 else ''} got worse in {regressed} of {runs}"
    return f"no regression in {runs}"


def terminal_table(comparison: Comparison) -> str:
    """Aligned columns; the notes of pairs not compared; the headline last."""
    rows = _moved(comparison)
    lines = [f"caslab compare: BASE {comparison.base} -> NEW {comparison.new}"]
    if rows:
        widths = [max(len(str(r[i])) for r in [list(HEADINGS), *rows]) for i in range(len(HEADINGS))]
        for row in [list(HEADINGS), *rows]:
            lines.append(
                "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )
    else:
        lines.append("no figure moved")
    lines += [f"{p.name}: {p.note}" for p in comparison.pairs if not p.compared]
    lines.append(headline(comparison))
    return "\n".join(lines) + "\n"


def markdown(comparison: Comparison) -> str:
    """A heading with the headline, a table of the runs (verdicts and regressions), every figure that
    moved in a folded section, and the rule."""
    icon = ":x:" if comparison.regressions else ":white_check_mark:"
    out = [f"### {icon} caslab compare: {headline(comparison)}", ""]
    out += ["| run | verdict (BASE → NEW) | got worse |", "|---|---|---|"]
    for pair in comparison.pairs:
        verdicts = " → ".join(r.status if r else "–" for r in (pair.base, pair.new))
        if pair.compared:
            worse = "; ".join(
                f"{_label(c)} ({c.scope}) {number(c.base)} → {number(c.new)}" for c in pair.regressions
            )
            worse = worse or "nothing"
        else:
            worse = pair.note
        out.append(f"| {_cell(pair.name)} | {verdicts} | {_cell(worse)} |")
    rows = _moved(comparison)
    if rows:
        out += ["", f"<details><summary>Every figure that moved ({len(rows)})</summary>", ""]
        out += ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
        out += ["| " + " | ".join(_cell(str(cell)) for cell in row) + " |" for row in rows]
        out += ["", "</details>"]
    out += ["", f"<sub>{RULE}</sub>", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
