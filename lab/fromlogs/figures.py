"""The fit as text, for the command's own output: the four figures of the fit report, observed beside
synthesized, one line per population or kind.
"""

from __future__ import annotations

from lab.fromlogs.fit import Fit, Spread


def fit_text(fit: Fit) -> str:
    sections = [
        ("users per address", fit.users_per_address, _count),
        ("client mix (share of the population's users)", fit.client_mix, _share),
        ("requests per client per hour, Exchange time (synthesized: the lab's kinds)", fit.rates, _count),
        ("address changes per device per hour, Exchange time", fit.address_changes, _count),
    ]
    width = max((len(p.label) for _, pairs, _ in sections for p in pairs), default=10)
    lines = ["fit: observed in the logs | synthesized by the scenario"]
    for title, pairs, show in sections:
        if not pairs:
            continue
        lines.append(f"  {title}")
        for p in pairs:
            lines.append(
                f"    {p.label:<{width}}  {show(p.observed, p.observed_spread):>18} | "
                f"{show(p.synthesized, p.synthesized_spread)}"
            )
    return "\n".join(lines)


def _count(value: float | None, spread: Spread | None) -> str:
    if value is None:
        return "–"
    text = f"{value:,.1f}"
    if spread and spread.low != spread.high:
        text += f" ({spread.low:,.4g}-{spread.high:,.4g})"
    return text


def _share(value: float | None, _spread: Spread | None) -> str:
    return "–" if value is None else f"{value:.0%}"
