"""`caslab compare BASE NEW`: what got worse from one run (or one suite of runs) to another.

Runs pair by name (a suite's runs by their scenario file, a matrix's by driver x preset, two run folders
with each other) and are read from their summary.json. Per service, and for all services together:
hard and soft breaks, split sessions (of the services that need affinity), cuts, error rate and p95
latency; per run: balance and the verdict. A figure got worse -- a regression -- by these rules:

- Counts (hard breaks, soft breaks, split sessions, cuts, errors behind the error rate): a run's count
  is taken as a Poisson count of its exposure (requests; sessions for split sessions). The question
  "is NEW's rate higher than BASE's?" gets the exact one-sided test of two Poisson rates (Przyborowski
  and Wilenski, 1940): given the two counts' sum k, NEW's count is binomial(k, e_new / (e_base +
  e_new)) when the rates are equal, so p = P(X >= NEW's count). A regression needs p < ALPHA (0.001: a
  suite compares dozens of figures, and a count this far out arises by chance once in a thousand) AND
  a rise beyond the figure's tolerance: more than T events above BASE's rate at NEW's exposure (for
  the error rate, T is percentage points). So 0 -> 3 hard breaks in runs of equal size is chance
  (p = 0.125); 0 -> 10 is not (p = 0.001). Events that come in clusters (one CAS failing breaks many
  sessions at once) vary more than Poisson counts: a tolerance absorbs that where a scenario has them.
- p95 latency: worse when NEW's is more than the tolerance (percent) above BASE's and at least
  LATENCY_FLOOR_MS more, in a service with at least MIN_LATENCY_REQUESTS requests on both sides (a
  95th percentile of fewer is mostly chance).
- Balance: worse when NEW's max/mean is more than the tolerance above BASE's AND above what chance gives:
  the 95th percentile of max/mean over random placements of NEW's own sessions, which the verifier
  computes for every run (summary.json's balance.random_max_over_mean_p95).
- The verdict: pass -> fail is a regression. An invalid run is not compared (its figures prove nothing).

Improvements are found the same way, mirrored, and shown; they never change the exit code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caslab.vocab import SERVICES
from lab.runset import RunEntry, read_runs

ALPHA = 0.001
MIN_LATENCY_REQUESTS = 50
LATENCY_FLOOR_MS = 5.0
ALL_SERVICES = "all services"
RUN_SCOPE = "run"
# Services whose sessions need affinity (lab.verifier.checks): OAB's and Autodiscover's split sessions
# are harmless, so they are not compared.
AFFINITY_SERVICES = tuple(s for s in SERVICES if s not in ("oab", "autodiscover"))


@dataclass(frozen=True)
class Figure:
    """A figure compared, with its name for --tolerance, its label on pages and its default tolerance."""

    name: str
    label: str
    tolerance: float
    tolerance_unit: str  # what the tolerance counts, for --help and the pages


FIGURES = {
    f.name: f
    for f in (
        Figure("hard_breaks", "hard breaks", 0, "hard breaks more than BASE's rate gives"),
        Figure("soft_breaks", "soft breaks", 0, "soft breaks more than BASE's rate gives"),
        Figure("split_sessions", "split sessions", 0, "split sessions more than BASE's rate gives"),
        Figure("cuts", "cuts", 0, "cuts more than BASE's rate gives"),
        Figure("error_rate", "error rate (%)", 0, "percentage points"),
        Figure("p95_latency", "p95 latency (ms)", 50, "percent slower"),
        Figure("balance", "balance max/mean", 0.05, "max/mean higher"),
    )
}
COUNTS = {  # count figure -> (summary.json's field of a service, the exposure it is counted in)
    "hard_breaks": ("hard_breaks", "requests"),
    "soft_breaks": ("soft_breaks", "requests"),
    "split_sessions": ("split_sessions", "sessions"),
    "cuts": ("cut", "requests"),
    "error_rate": ("errors", "requests"),
}


class CompareError(ValueError):
    """The two folders cannot be compared (not runs, or one run beside a set); the message says why."""


@dataclass
class Change:
    """One figure of one scope (a service, all services, the run) from BASE to NEW, and what it means."""

    figure: str  # a FIGURES name, or "verdict"
    scope: str  # a service, ALL_SERVICES or RUN_SCOPE
    base: float | str | None
    new: float | str | None
    # "worse" (a regression), "within tolerance" (beyond chance, not beyond the tolerance), "within noise"
    # (not beyond chance), "better", "same", "not compared" (a service one run did not use)
    result: str
    p_value: float | None = None
    why: str = ""

    @property
    def regression(self) -> bool:
        return self.result == "worse"


@dataclass
class Pair:
    """A run of BASE and its run of NEW (either may be missing), and what changed between them."""

    name: str
    base: RunEntry | None
    new: RunEntry | None
    compared: bool = False
    note: str = ""  # why the pair was not compared
    changes: list[Change] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]


@dataclass
class Comparison:
    base: Path
    new: Path
    tolerances: dict[str, float]
    pairs: list[Pair]

    @property
    def regressions(self) -> list[tuple[str, Change]]:
        return [(p.name, c) for p in self.pairs for c in p.regressions]

    @property
    def unvouched(self) -> list[Pair]:
        """Pairs whose NEW run is missing, unfinished or invalid: nothing can be said of them."""
        return [p for p in self.pairs if p.base is not None and not (p.new and p.new.judged)]

    def to_dict(self) -> dict[str, Any]:
        """compare.json: schema caslab.compare/1."""
        return {
            "schema": "caslab.compare/1",
            "base": str(self.base),
            "new": str(self.new),
            "tolerances": self.tolerances,
            "rule": RULE,
            "regressions": len(self.regressions),
            "pairs": [
                {
                    "name": p.name,
                    "base": _side(p.base),
                    "new": _side(p.new),
                    "compared": p.compared,
                    "note": p.note,
                    "changes": [asdict(c) | {"regression": c.regression} for c in p.changes],
                }
                for p in self.pairs
            ],
        }


RULE = (  # the module docstring's rules in one paragraph, for compare.json and the pages
    f"Counts: the exact one-sided test of two Poisson rates (binomial, given their sum) at p < {ALPHA:g}, "
    "and a rise beyond the tolerance. p95 latency: above BASE by more than the tolerance (percent) and "
    f"{LATENCY_FLOOR_MS:g} ms, with {MIN_LATENCY_REQUESTS}+ requests on both sides. Balance: max/mean above "
    "BASE by more than the tolerance and above the 95th percentile of random placements of the same "
    "sessions. Verdict: pass -> fail."
)


def _side(run: RunEntry | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"run_dir": str(run.run_dir) if run.run_dir else None, "status": run.status, "reason": run.reason}


def parse_tolerances(given: list[str]) -> dict[str, float]:
    """The tolerances with `given` ("figure=value", several per item with commas) over the defaults."""
    tolerances = {name: f.tolerance for name, f in FIGURES.items()}
    for item in given:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in FIGURES:
                raise CompareError(
                    f"--tolerance {part!r}: give FIGURE=VALUE, FIGURE one of {', '.join(FIGURES)}"
                )
            try:
                number = float(value)
            except ValueError:
                raise CompareError(f"--tolerance {part!r}: {value!r} is not a number") from None
            if not number >= 0:
                raise CompareError(f"--tolerance {part!r}: must be 0 or more")
            tolerances[name.strip()] = number
    return tolerances


def compare_folders(base: Path, new: Path, tolerances: dict[str, float] | None = None) -> Comparison:
    """Compare two run folders, or two folders of runs (suites, matrices), run by run."""
    tolerances = tolerances or parse_tolerances([])
    base_kind, base_runs = read_runs(base)
    new_kind, new_runs = read_runs(new)
    if base_kind != new_kind:
        raise CompareError(
            f"{base} is a {base_kind} folder and {new} a {new_kind} folder: compare like with like"
        )
    if base_kind == "run":
        base_runs[0].name = new_runs[0].name
    return compare_runs(base, new, base_runs, new_runs, tolerances)


def compare_runs(
    base: Path, new: Path, base_runs: list[RunEntry], new_runs: list[RunEntry], tolerances: dict[str, float]
) -> Comparison:
    """Pair the runs by name (NEW's order, then those only BASE has) and compare each pair."""
    by_name = {r.name: r for r in base_runs}
    pairs = [Pair(r.name, by_name.pop(r.name, None), r) for r in new_runs]
    pairs += [Pair(name, run, None) for name, run in by_name.items()]
    for pair in pairs:
        _compare_pair(pair, tolerances)
    return Comparison(base, new, tolerances, pairs)


def _compare_pair(pair: Pair, tolerances: dict[str, float]) -> None:
    base, new = pair.base, pair.new
    if base is None:
        pair.note = "new: no run of this name in BASE"
        return
    if new is None:
        pair.note = "not in NEW"
        return
    for side, run in (("NEW", new), ("BASE", base)):
        if not run.judged:
            pair.note = f"not compared: the {side} run is {run.status} ({run.reason})"
            return
    pair.compared = True
    pair.changes = figure_changes(base.summary or {}, new.summary or {}, tolerances)
    if base.status == "pass" and new.status == "fail":
        pair.changes.insert(0, Change("verdict", RUN_SCOPE, "pass", "fail", "worse", why=new.reason))
    elif base.status == "fail" and new.status == "pass":
        pair.changes.insert(0, Change("verdict", RUN_SCOPE, "fail", "pass", "better"))


def figure_changes(base: dict[str, Any], new: dict[str, Any], tolerances: dict[str, float]) -> list[Change]:
    """Every figure of two summaries, per service and for all services, then balance."""
    changes = []
    base_services, new_services = base.get("services", {}), new.get("services", {})
    scopes = [s for s in SERVICES if s in base_services or s in new_services]
    for scope in [*scopes, ALL_SERVICES]:
        b, n = _service(base_services, scope), _service(new_services, scope)
        for figure, (field_name, exposure) in COUNTS.items():
            if figure == "split_sessions" and scope not in (*AFFINITY_SERVICES, ALL_SERVICES):
                continue
            if field_name not in b or field_name not in n:  # a summary of before the field was added
                continue
            changes.append(
                count_change(figure, scope, (b[field_name], b[exposure]), (n[field_name], n[exposure]),
                             tolerances[figure])
            )  # fmt: skip
        if scope != ALL_SERVICES:
            changes.append(latency_change(scope, b, n, tolerances["p95_latency"]))
    changes.append(balance_change(base.get("balance", {}), new.get("balance", {}), tolerances["balance"]))
    return changes


def _service(services: dict[str, Any], scope: str) -> dict[str, Any]:
    """A service's figures; for ALL_SERVICES their sums (split sessions of the affinity services only)."""
    if scope != ALL_SERVICES:
        return services.get(scope, {"requests": 0, "sessions": 0})
    out: dict[str, Any] = {}
    for name, figures in services.items():
        for key in ("requests", "hard_breaks", "soft_breaks", "cut", "errors"):
            if key in figures:
                out[key] = out.get(key, 0) + figures[key]
        if name in AFFINITY_SERVICES:
            out["sessions"] = out.get("sessions", 0) + figures.get("sessions", 0)
            out["split_sessions"] = out.get("split_sessions", 0) + figures.get("split_sessions", 0)
    return out


def count_change(
    figure: str, scope: str, base: tuple[int, int], new: tuple[int, int], tolerance: float
) -> Change:
    """A count (events, exposure) from BASE to NEW by the rule of counts (module docstring). The error
    rate is shown in percent and its tolerance is in percentage points; the other counts as counts."""
    (b, b_exposure), (n, n_exposure) = base, new
    rate = figure == "error_rate"
    shown = (_pct(b, b_exposure), _pct(n, n_exposure)) if rate else (b, n)
    if not b_exposure or not n_exposure:
        if not (b_exposure or n_exposure):
            return Change(figure, scope, *shown, "same")
        side = "BASE" if not b_exposure else "NEW"
        return Change(figure, scope, *shown, "not compared", why=f"no {COUNTS[figure][1]} in {side}")
    expected = b * n_exposure / b_exposure  # BASE's rate at NEW's exposure
    share = n_exposure / (b_exposure + n_exposure)
    if n > expected:
        p = binomial_tail(n, b + n, share)
        if p >= ALPHA:
            return Change(figure, scope, *shown, "within noise", p)
        allowed = tolerance / 100 * n_exposure if rate else tolerance
        if n - expected > allowed:
            beyond = (
                f"{n - expected:+.4g}" if not rate else f"{100 * (n - expected) / n_exposure:+.3g} points"
            )
            return Change(figure, scope, *shown, "worse", p, f"{beyond} beyond BASE's rate")
        return Change(figure, scope, *shown, "within tolerance", p, f"tolerance {tolerance:g}")
    if n < expected:
        p = binomial_tail(b, b + n, 1 - share)
        return Change(figure, scope, *shown, "better" if p < ALPHA else "within noise", p)
    return Change(figure, scope, *shown, "same")


def _pct(count: int, exposure: int) -> float | None:
    return round(100 * count / exposure, 3) if exposure else None


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ binomial(n, p), summed in log space from its first term (exact; no SciPy here
    for one tail)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    first = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    first += k * math.log(p) + (n - k) * math.log1p(-p)
    i = np.arange(k, n)  # term i+1 = term i * (n - i) / (i + 1) * p / (1 - p)
    steps = np.log((n - i) / (i + 1)) + math.log(p) - math.log1p(-p)
    terms = np.exp(first + np.concatenate(([0.0], np.cumsum(steps))))
    return float(min(1.0, terms.sum()))


def latency_change(scope: str, base: dict[str, Any], new: dict[str, Any], tolerance: float) -> Change:
    """p95 latency of one service, by the rule of latency (module docstring)."""
    b = (base.get("latency_ms") or {}).get("p95")
    n = (new.get("latency_ms") or {}).get("p95")
    if b is None or n is None or b == n:
        return Change("p95_latency", scope, b, n, "same" if b == n else "not compared", why="")
    if min(base.get("requests", 0), new.get("requests", 0)) < MIN_LATENCY_REQUESTS:
        return Change(
            "p95_latency", scope, b, n, "within noise", why=f"under {MIN_LATENCY_REQUESTS} requests"
        )
    slower, faster = n - b, b - n
    if slower >= LATENCY_FLOOR_MS and n > b * (1 + tolerance / 100):
        return Change("p95_latency", scope, b, n, "worse", why=f"{100 * slower / b:+.0f}%" if b else "")
    if faster >= LATENCY_FLOOR_MS and b > n * (1 + tolerance / 100):
        return Change("p95_latency", scope, b, n, "better")
    return Change("p95_latency", scope, b, n, "within tolerance" if slower > 0 else "within noise")


def balance_change(base: dict[str, Any], new: dict[str, Any], tolerance: float) -> Change:
    """max/mean of the run, by the rule of balance (module docstring)."""
    b, n = base.get("max_over_mean"), new.get("max_over_mean")
    if b is None or n is None or b == n:
        return Change("balance", RUN_SCOPE, b, n, "same" if b == n else "not compared", why="")
    chance = new.get("random_max_over_mean_p95")
    if n - b > tolerance:
        if chance is not None and n <= chance:
            return Change(
                "balance", RUN_SCOPE, b, n, "within noise", why=f"random placements give up to {chance:g}"
            )
        said = f"above the {chance:g} random placements give" if chance is not None else ""
        return Change("balance", RUN_SCOPE, b, n, "worse", why=said)
    base_chance = base.get("random_max_over_mean_p95")
    if b - n > tolerance and (base_chance is None or b > base_chance):
        return Change("balance", RUN_SCOPE, b, n, "better")
    return Change("balance", RUN_SCOPE, b, n, "within tolerance" if n > b else "within noise")
