"""Whether every client the scenario plans took part: a client kind of a population that made no request
at all leaves the checks on its services holding on sessions that never ran (`hard_breaks.rpchttp = 0`
passes on no Outlook at all). Its main cause, a client whose own code raised, is counted by the load
generator; this catches the rest (a kind Locust never started, a worker that ran none of it)."""

from __future__ import annotations

import pandas as pd

from lab.scenario import Scenario


def silent_clients_reason(scenario: Scenario, events: pd.DataFrame) -> list[str]:
    """The invalid reason when a (population, client kind) the scenario plans has no event; else none."""
    made = set(events[["population", "client_kind"]].drop_duplicates().itertuples(index=False, name=None))
    silent = [
        f"{count:,} {kind} of {p.name}"
        for p in scenario.populations
        for kind, count in p.client_counts().items()
        if (p.name, kind) not in made
    ]
    if not silent:
        return []
    return [
        f"clients the scenario plans made no request at all ({', '.join(silent)}): the checks of their "
        "services would hold on sessions that never ran"
    ]
