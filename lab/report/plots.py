"""The report's plots (DESIGN.md sections 9 and 13) as inline SVG: load per CAS, the population x CAS
heat map, requests per CAS over time with the faults marked, affinity per service, and for time: cuts
per service over time, the heartbeats ActiveSync devices asked for, and why sessions moved.

SVG stays sharp at any zoom and is smaller than the PNGs it replaces; its text stays text (the
browser's sans-serif font draws it, no glyphs are embedded) and nothing is raster: the heat map is
drawn as rectangles, not an image. A plot with nothing to show is not drawn: the page says so in words.
`new_axes` and `inline_svg` are how every page of caslab draws (the fit report of from-logs too).
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lab.verifier import CAUSES, Analysis

if TYPE_CHECKING:  # matplotlib is imported only when plotting: it is slow to import
    from matplotlib.axes import Axes

PALETTE = ["#1f6feb", "#e36209", "#2da44e", "#8250df", "#cf222e", "#6e7781", "#bf8700", "#0a7ea4", "#d63384"]
CAUSE_COLORS = {
    "expired": "#bf8700", "evicted": "#8250df", "cas-failed": "#cf222e", "no-persistence": "#6e7781",
    "other": "#0a7ea4",
}  # fmt: skip
HEARTBEAT_ALERT_S = 540  # Exchange 2010's event-1040 threshold (lab.verifier.timers)
POPULATION_PALETTE = ["#4c78a8", "#72b7b2", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#bab0ac", "#eeca3b"]
SVG_SETTINGS = {
    "svg.fonttype": "none",  # text as <text>, drawn by the browser: no embedded glyph outlines
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "sans-serif"],
}

NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}  # no date: same run, same page
GROUP_IDS = re.compile(r' id="[A-Za-z0-9.]+_\d+"')


@dataclass(frozen=True)
class Plot:
    """One plot of the page: its SVG markup, or the words said instead when there is nothing to draw."""

    alt: str
    svg: str = ""
    nothing_to_show: str = ""


def plots(analysis: Analysis, ramp_s: float) -> dict[str, Plot]:
    """The plots of the page, by name: load, heatmap, timeline, affinity, cuts, heartbeats, moves."""
    import matplotlib

    with matplotlib.rc_context(SVG_SETTINGS):
        return {
            "load": _load(analysis),
            "heatmap": _heatmap(analysis),
            "timeline": _timeline(analysis, ramp_s),
            "affinity": _affinity(analysis),
            "cuts": _cuts(analysis, ramp_s),
            "heartbeats": _heartbeats(analysis),
            "moves": _moves(analysis),
        }


def new_axes(width: float, height: float) -> Axes:
    """The axes of a new figure of `width` x `height` inches."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    return Figure(figsize=(width, height), layout="constrained").subplots()


def inline_svg(ax: Axes, name: str, alt: str) -> Plot:
    """The figure of `ax` as an <svg> element to put inline in the page. `name` salts its element ids,
    so the ids of two plots on one page never collide."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"caslab-{name}"}):
        ax.figure.savefig(buffer, format="svg", metadata=NO_METADATA)
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]  # inline: without the XML declaration and DOCTYPE
    # matplotlib names its groups figure_1, axes_1, ... in every plot: ids that would repeat on the page
    # and that nothing refers to (references go to the salted ids, such as clip paths).
    svg = GROUP_IDS.sub("", svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(alt)}" ', 1)
    return Plot(alt, svg=svg)


def _load(analysis: Analysis) -> Plot:
    """Load per CAS, stacked by population: a NAT-ed tenant on one CAS shows as one tall block."""
    alt = "load per CAS"
    servers = list(analysis.servers.index)
    pops = analysis.population_requests
    if not pops.to_numpy().sum():
        return Plot(alt, nothing_to_show="No CAS answered a request: there is no load to show.")
    ax = new_axes(5.6, 3.4)
    bottom = np.zeros(len(servers))
    for i, population in enumerate(pops.index):
        values = pops.loc[population].reindex(servers, fill_value=0).to_numpy()
        color = POPULATION_PALETTE[i % len(POPULATION_PALETTE)]
        ax.bar(servers, values, bottom=bottom, label=population, color=color)
        bottom += values
    ax.axhline(bottom.mean(), color="#444", linestyle="--", linewidth=1, label="mean")
    ax.legend(fontsize=7, frameon=False)
    ax.set_ylabel("answered requests")
    ax.set_title("Load per CAS (by population)")
    return inline_svg(ax, "load", alt)


def _heatmap(analysis: Analysis) -> Plot:
    """Population x CAS heat map of shares, a rectangle per cell."""
    alt = "population x CAS"
    servers = list(analysis.servers.index)
    shares = analysis.population_shares.reindex(columns=servers, fill_value=0)
    if not analysis.population_requests.to_numpy().sum():
        return Plot(alt, nothing_to_show="No population got an answer: there are no shares to show.")
    values = shares.to_numpy()
    ax = new_axes(5.6, 0.8 + 0.45 * len(shares))
    ax.pcolormesh(values, cmap="Blues", vmin=0, vmax=1, edgecolors="white", linewidth=1)
    ax.invert_yaxis()  # the first population on top, as in the table below the plot
    ax.set_xticks(np.arange(len(servers)) + 0.5, servers)
    ax.set_yticks(np.arange(len(shares)) + 0.5, shares.index)
    ax.tick_params(length=0)
    for (row, column), value in np.ndenumerate(values):
        ax.text(
            column + 0.5,
            row + 0.5,
            f"{value:.0%}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > 0.6 else "black",
        )
    ax.set_title("Share of each population's requests per CAS")
    return inline_svg(ax, "heatmap", alt)


def _timeline(analysis: Analysis, ramp_s: float) -> Plot:
    """Requests per CAS over time, the ramp shaded and the faults marked."""
    alt = "requests per CAS over time"
    timeline = analysis.timeline
    if not timeline.to_numpy().sum():
        return Plot(alt, nothing_to_show="No CAS answered a request: there is no traffic over time to show.")
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(analysis.servers.index)}
    ax = new_axes(11, 3.2)
    width = float(timeline.index[1] - timeline.index[0]) if len(timeline) > 1 else 1.0
    for server in timeline.columns:
        per_second = timeline[server] / width
        ax.plot(timeline.index, per_second, label=server, color=colors.get(server), linewidth=1.4)
    if ramp_s:
        ax.axvspan(0, ramp_s, color="#d0d7de", alpha=0.5, linewidth=0, label="ramp")
    for fault in analysis.faults:
        marks = [
            (fault["at_s"], fault["action"], "#cf222e"),
            (fault["back_at_s"], fault["back_action"], "#2da44e"),
        ]
        for at, action, color in marks:
            if at is None:
                continue
            ax.axvline(at, color=color, linestyle="--", linewidth=1)
            ax.annotate(
                f"{fault['server']} {action}", (at, 1), xycoords=("data", "axes fraction"), fontsize=8,
                color=color, rotation=90, va="top", ha="right",
            )  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("requests/s")
    ax.set_title("Requests per CAS over time")
    ax.legend(fontsize=7, frameon=False, ncol=min(len(timeline.columns), 6) or 1)
    return inline_svg(ax, "timeline", alt)


def _affinity(analysis: Analysis) -> Plot:
    """Affinity per service: split sessions and breaks per 100 requests."""
    alt = "affinity per service"
    table = analysis.services
    per_100 = 100 / np.maximum(table["requests"].to_numpy(), 1)
    series = [
        ("split sessions %", table["split_pct"].to_numpy(), "#8250df"),
        ("hard breaks /100 req", table["hard_breaks"].to_numpy() * per_100, "#cf222e"),
        ("soft breaks /100 req", table["soft_breaks"].to_numpy() * per_100, "#bf8700"),
    ]
    if not any(values.any() for _label, values, _color in series):
        return Plot(
            alt, nothing_to_show="No session was split and no request broke, in any service: nothing to plot."
        )
    ax = new_axes(5.6, 3.4)
    x = np.arange(len(table))
    for i, (label, values, color) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=label, color=color)
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title("Affinity per service")
    ax.legend(fontsize=7, frameon=False)
    return inline_svg(ax, "affinity", alt)


def _cuts(analysis: Analysis, ramp_s: float) -> Plot:
    """Cuts the clients saw per service over time: when a balancer's idle timeout bites."""
    alt = "cuts per service over time"
    cuts = analysis.timers.cut_timeline
    cuts = cuts.loc[:, cuts.sum() > 0] if not cuts.empty else cuts
    if cuts.empty:
        return Plot(alt, nothing_to_show="No held request, channel or connection was cut: nothing to plot.")
    ax = new_axes(5.6, 3.2)
    for i, service in enumerate(cuts.columns):
        ax.step(cuts.index, cuts[service], where="post", label=service, color=PALETTE[i % len(PALETTE)])
    if ramp_s:
        ax.axvspan(0, ramp_s, color="#d0d7de", alpha=0.5, linewidth=0, label="ramp")
    ax.set_ylim(bottom=0)
    _whole_numbers(ax)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("cuts per time bin")
    ax.set_title("Cuts per service over time")
    ax.legend(fontsize=7, frameon=False)
    return inline_svg(ax, "cuts", alt)


def _heartbeats(analysis: Analysis) -> Plot:
    """How many Pings asked for each heartbeat, with Exchange's alert threshold marked."""
    alt = "EAS heartbeats asked for"
    asked = analysis.timers.heartbeats
    if asked.empty:
        return Plot(alt, nothing_to_show="No ActiveSync device pinged: there are no heartbeats to show.")
    counts = asked["heartbeat_s"].value_counts().sort_index()
    minutes = counts.index.to_numpy() / 60
    ax = new_axes(5.6, 3.2)
    width = min(0.8, 0.8 * float(np.min(np.diff(minutes)))) if len(minutes) > 1 else 0.8
    ax.bar(minutes, counts.to_numpy(), width=width, color="#1f6feb", label="Pings")
    _whole_numbers(ax)
    ax.axvline(
        HEARTBEAT_ALERT_S / 60, color="#cf222e", linestyle="--", linewidth=1, label="event-1040 threshold"
    )
    ax.set_xlim(left=0)
    ax.set_xlabel("heartbeat asked for (minutes)")
    ax.set_ylabel("Pings")
    ax.set_title("ActiveSync heartbeats")
    ax.legend(fontsize=7, frameon=False)
    return inline_svg(ax, "heartbeats", alt)


def _moves(analysis: Analysis) -> Plot:
    """Moves per service, stacked by why the session moved."""
    alt = "why sessions moved"
    moves = analysis.timers.moves
    moves = moves[moves.sum(axis=1) > 0] if not moves.empty else moves
    if moves.empty:
        return Plot(alt, nothing_to_show="No session moved to another CAS: there is nothing to explain.")
    ax = new_axes(5.6, 3.2)
    x = np.arange(len(moves))
    bottom = np.zeros(len(moves))
    for cause in CAUSES:
        values = moves[cause].to_numpy()
        if values.any():
            ax.bar(x, values, bottom=bottom, label=cause, color=CAUSE_COLORS[cause])
            bottom += values
    ax.set_xticks(x, moves.index, rotation=30, ha="right")
    _whole_numbers(ax)
    ax.set_ylabel("moves")
    ax.set_title("Why sessions moved")
    ax.legend(fontsize=7, frameon=False)
    return inline_svg(ax, "moves", alt)


def _whole_numbers(ax: Axes) -> None:
    """Ticks on whole numbers only: the y axis counts things."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
