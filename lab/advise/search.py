"""The search of `caslab advise` for one driver: one group of services at a time, successive halving
over its candidates, then one full-length run of the winning config.

The search is a sum over groups, not a product: while one group's candidates run, every other group
keeps its baseline (the recommended preset's method, or the group's winner once it is searched), so a
config of seven groups costs the sum of their candidates' runs. Successive halving (Jamieson and
Talwalkar, 2016): every candidate left runs a short load phase; one whose figures show it cannot pass
is dropped at once (lab.advise.judge), the better half of the rest goes on to a run twice as long,
until one is left or the rounds are used up (then the best of the last round wins). The winner of every
group together is confirmed by a run of the scenario's own length.

Runs are made by an Evaluator (lab.advise.runner runs them on the lab; tests give a stand-in). The
budget is wall time: the evaluator starts no run it does not expect to end before the deadline, and
the search then keeps what it has, the best so far, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from lab.advise.candidates import (
    COST,
    GroupCandidates,
    Rejection,
    all_services,
    baseline_methods,
    generate,
    used_groups,
)
from lab.advise.judge import Outcome, blocking, figures_line, score
from lab.model import Persistence
from lab.scenario import Scenario

SHORTEST_S, SHORT_FRACTION, LONGEST_SHORT_S = 3.0, 0.25, 10.0
CONFIRM = ("confirm",)  # the group of the confirming run: every service


@dataclass(frozen=True)
class Trial:
    """One run to make: the whole config (`methods`), which candidate of which group it tries, and the
    load phase in seconds."""

    group: tuple[str, ...]
    candidate: Persistence | None  # None for the confirming run
    methods: dict[str, Persistence] = field(hash=False)
    seconds: float

    @property
    def key(self) -> tuple:
        return (tuple(sorted((s, str(p), p.timeout_s) for s, p in self.methods.items())), self.seconds)

    @property
    def name(self) -> str:
        if self.candidate is None:
            return "confirm"
        what = str(self.candidate).replace(" (fallback ", "+").replace(")", "").replace(" ", "-")
        return f"{'-'.join(self.group)}-{what}-{self.seconds:g}s"


class Evaluator(Protocol):
    def __call__(self, trials: list[Trial], deadline: float) -> list[Outcome]:
        """An outcome per trial, in order; "not run" for those that could not end before `deadline`
        (time.monotonic())."""
        ...

    def estimate(self, seconds: float) -> float:
        """The wall time a run of a `seconds` load phase takes, start and verdict included."""
        ...


@dataclass
class GroupResult:
    group: tuple[str, ...]
    chosen: Persistence
    passing: bool  # False: every candidate showed it cannot pass; `chosen` is the closest
    evidence: str  # why it was chosen, with its figures
    rejected: list[Rejection]
    runs: list[tuple[Trial, Outcome]]
    searched: bool
    complete: bool = True  # False: the budget ran out before the search ended


@dataclass
class DriverAdvice:
    driver: str
    methods: dict[str, Persistence]
    groups: list[GroupResult]
    confirm: Outcome | None
    status: str  # pass, fail, could not run
    reason: str


def rungs(duration_s: float) -> list[float]:
    """The load phases of the rounds: a quarter of the scenario's (3 s to 10 s), then twice that, while
    shorter than the scenario's own."""
    short = min(max(SHORTEST_S, round(duration_s * SHORT_FRACTION)), LONGEST_SHORT_S)
    out = [min(short, duration_s)]
    while out[-1] * 2 < duration_s:
        out.append(out[-1] * 2)
    return out[:2]


def halve(
    gc: GroupCandidates,
    baseline: dict[str, Persistence],
    scenario: Scenario,
    evaluate: Evaluator,
    deadline: float,
    say: Callable[[str], None] = lambda _t: None,
) -> GroupResult:
    """Successive halving over the candidates of one group (see the module docstring)."""
    group = gc.group
    alive = list(gc.candidates)
    rejected = list(gc.rejected)
    runs: list[tuple[Trial, Outcome]] = []
    last: dict[Persistence, Outcome] = {}
    complete = True
    for seconds in rungs(scenario.duration_s):
        if len(alive) <= 1:
            break
        trials = [Trial(group, p, {**baseline, **dict.fromkeys(group, p)}, seconds) for p in alive]
        outcomes = evaluate(trials, deadline)
        runs += list(zip(trials, outcomes, strict=True))
        base = next((o for t, o in zip(trials, outcomes, strict=True) if t.candidate == gc.baseline), None)
        standing = []
        for trial, outcome in zip(trials, outcomes, strict=True):
            p = trial.candidate
            assert p is not None
            if outcome.status == "not run":
                complete = False
                standing.append(p)  # unjudged this round: neither dropped nor ahead
                continue
            last[p] = outcome
            if not outcome.judged:
                rejected.append(
                    _rejection(group, p, "run", f"the run {outcome.status}: {outcome.reason}", outcome)
                )
                continue
            why = blocking(outcome, group, scenario.thresholds, None if p == gc.baseline else base)
            if why:
                rejected.append(_rejection(group, p, "run", why, outcome))
                say(f"{'+'.join(group)}: {p} dropped: {why}")
                continue
            standing.append(p)
        judged = sorted(
            (p for p in standing if p in last and last[p].judged), key=lambda p: _rank(p, last[p], group)
        )
        if not complete:
            alive = judged[:1]
            break
        keep = max(1, math.ceil(len(judged) / 2))
        for p in judged[keep:]:
            rejected.append(_rejection(group, p, "ranked", _ranked_below(judged[0], p, last, group), last[p]))
        alive = judged[:keep]
    if not alive and not complete:  # the budget ran out before any candidate showed it can pass
        rejected_now = {r.method for r in rejected}
        unjudged = [p for p in gc.candidates if str(p) not in rejected_now]
        alive = sorted(unjudged, key=lambda p: p != gc.baseline)[:1]
    if len(alive) > 1:  # the rounds are used up: the best of the last one wins
        for p in alive[1:]:
            rejected.append(_rejection(group, p, "ranked", _ranked_below(alive[0], p, last, group), last[p]))
        alive = alive[:1]
    if alive:
        chosen = alive[0]
        outcome = last.get(chosen)
        evidence = figures_line(outcome, group) if outcome else "not evaluated: the budget ran out"
        rejected = [r for r in rejected if r.method != str(chosen)]
        decided = {r.method for r in rejected}
        for p in gc.candidates:  # left standing when the budget ran out
            if p != chosen and str(p) not in decided:
                why = "not evaluated to the end: the budget ran out"
                rejected.append(_rejection(group, p, "budget", why, last.get(p)))
        return GroupResult(group, chosen, True, evidence, rejected, runs, gc.searched, complete)
    closest = _closest(gc, last, group)
    why = next((r.why for r in rejected if r.method == str(closest)), "")
    rejected = [r for r in rejected if r.method != str(closest)]
    evidence = f"no candidate passes; the closest, and what blocks it: {why}"
    return GroupResult(group, closest, False, evidence, rejected, runs, gc.searched, complete)


def _rank(p: Persistence, outcome: Outcome, group: tuple[str, ...]) -> tuple:
    return (*score(outcome, group), COST[p.method])


def _closest(gc: GroupCandidates, last: dict[Persistence, Outcome], group: tuple[str, ...]) -> Persistence:
    judged = [p for p in gc.candidates if p in last and last[p].judged]
    if not judged:
        return gc.baseline
    return min(judged, key=lambda p: _rank(p, last[p], group))


def _ranked_below(best: Persistence, p: Persistence, last: dict[Persistence, Outcome], group: tuple) -> str:
    return f"ranked below {best} ({figures_line(last[best], group)}): {figures_line(last[p], group)}"


def _rejection(
    group: tuple[str, ...], p: Persistence, stage: str, why: str, outcome: Outcome | None = None
) -> Rejection:
    run = outcome.run_dir.name if outcome is not None and outcome.run_dir is not None else ""
    return Rejection(group, str(p), stage, why, run)


def advise_driver(
    scenario: Scenario,
    driver: str,
    evaluate: Evaluator,
    deadline: float,
    say: Callable[[str], None] = lambda _t: None,
) -> DriverAdvice:
    """Search every group the population uses, then confirm the winners with a full-length run."""
    methods = baseline_methods(scenario, driver)
    confirm_s = evaluate.estimate(scenario.duration_s)
    results = []
    for group in used_groups(scenario):
        gc = generate(scenario, driver, group, methods)
        methods.update(dict.fromkeys(group, gc.baseline))
        if not gc.searched:
            chosen = gc.candidates[0] if gc.candidates else gc.baseline
            note = gc.note or "the only candidate"
            rejected = list(gc.rejected)
            result = GroupResult(group, chosen, bool(gc.candidates), note, rejected, [], False)
        else:
            say(f"{'+'.join(group)}: {len(gc.candidates)} candidates: {', '.join(map(str, gc.candidates))}")
            result = halve(gc, methods, scenario, evaluate, deadline - confirm_s, say)
        say(f"{'+'.join(group)}: {result.chosen} ({result.evidence})")
        methods.update(dict.fromkeys(group, result.chosen))
        results.append(result)
    methods = all_services(methods)
    confirm = evaluate([Trial(CONFIRM, None, methods, scenario.duration_s)], deadline)[0]
    status, reason = _verdict(results, confirm)
    return DriverAdvice(
        driver, methods, results, None if confirm.status == "not run" else confirm, status, reason
    )


def _verdict(results: list[GroupResult], confirm: Outcome) -> tuple[str, str]:
    runs = [o for r in results for _t, o in r.runs] + [confirm]
    if all(o.status in ("could not run", "not run") for o in runs) and confirm.status == "could not run":
        return "could not run", confirm.reason
    blocked = [r for r in results if not r.passing]
    blocks = "; ".join(f"{'+'.join(r.group)}: {r.evidence}" for r in blocked)
    if confirm.status == "fail":  # a group with no choice may be what blocks it: say why it had none
        forced = [r for r in results if not r.searched and r.rejected]
        forced_text = [
            f"{'+'.join(r.group)} can only be {r.chosen} here ({r.rejected[0].method}: {r.rejected[0].why})"
            for r in forced
        ]
        blocks = "; ".join([blocks] * bool(blocks) + forced_text)
    if confirm.status == "not run":
        why = "the budget ran out before the confirming run: the best so far, not confirmed"
        return "fail", why + (f"; {blocks}" if blocks else "")
    if confirm.status == "pass":
        cut_short = [r for r in results if not r.complete]
        note = (
            f"; the budget cut the search of {', '.join('+'.join(r.group) for r in cut_short)} short: the "
            "best so far"
        ) * bool(cut_short)
        return "pass", f"confirmed by a {confirm.seconds:g} s run: {confirm.reason}{note}"
    failed = [c for c in (confirm.summary or {}).get("checks", []) if not c["pass"]]
    said = "; ".join(_check_text(c, confirm.summary or {}) for c in failed) or confirm.reason
    happened = {"fail": "failed", "invalid": "was invalid"}.get(confirm.status, confirm.status)
    return "fail", f"the confirming run {happened}: {said}" + (f"; {blocks}" if blocks else "")


def _check_text(check: dict, summary: dict) -> str:
    from lab.advise.judge import skew

    text = f"{check['name']} {check['value']:g}, must be {check.get('op', '<=')} {check['limit']:g}"
    return text + (skew(summary) if check["name"] == "balance_max_over_mean" else "")
