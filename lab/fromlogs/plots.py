"""The fit report's four plots, drawn as every caslab page draws (lab.report.plots: inline SVG): each
figure of the fit as a pair of bars, observed beside synthesized, with the spread over addresses or
devices as a whisker where there is one.
"""

from __future__ import annotations

import numpy as np

from lab.fromlogs.fit import Fit, Pair
from lab.report.plots import SVG_SETTINGS, Plot, inline_svg, new_axes

OBSERVED, SYNTHESIZED = "#1f6feb", "#e36209"


def fit_plots(fit: Fit) -> dict[str, Plot]:
    import matplotlib

    with matplotlib.rc_context(SVG_SETTINGS):
        return {
            "users_per_address": _pairs(
                fit.users_per_address,
                "users_per_address",
                "Users (devices) per address, by population",
                "distinct users per address (whiskers: least to most)",
                "No population: nothing to show.",
            ),
            "client_mix": _pairs(
                fit.client_mix,
                "client_mix",
                "Client mix: share of each population's users running a kind",
                "% of the population's users",
                "No client: nothing to show.",
                percent=True,
            ),
            "rates": _pairs(
                fit.rates,
                "rates",
                "Requests per client per hour (Exchange time), by kind",
                "requests per client per hour",
                "No kind made enough requests to tell its rate.",
            ),
            "address_changes": _pairs(
                fit.address_changes,
                "address_changes",
                "Address changes per device per hour (Exchange time)",
                "changes per device per hour (whiskers: least to most)",
                "No phone population: no address changes to show.",
            ),
        }


def _pairs(
    pairs: list[Pair], name: str, title: str, xlabel: str, nothing: str, percent: bool = False
) -> Plot:
    shown = [p for p in pairs if p.observed is not None or p.synthesized is not None]
    if not shown:
        return Plot(title, nothing_to_show=nothing)
    scale = 100 if percent else 1
    ax = new_axes(7.2, 0.9 + 0.42 * len(shown))
    y = np.arange(len(shown))
    for offset, side, color, label in (
        (-0.2, "observed", OBSERVED, "in the logs"),
        (0.2, "synthesized", SYNTHESIZED, "the scenario in the lab"),
    ):
        values = np.array([(getattr(p, side) or 0.0) * scale for p in shown])
        spreads = [getattr(p, f"{side}_spread") for p in shown]
        errors = np.array(
            [
                [v - s.low * scale, s.high * scale - v] if s else [0.0, 0.0]
                for v, s in zip(values, spreads, strict=True)
            ]
        ).T
        ax.barh(
            y + offset, values, height=0.38, color=color, label=label, xerr=errors, ecolor="#444", capsize=2
        )
    ax.set_yticks(y, [p.label for p in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    return inline_svg(ax, f"fit-{name}", title)
