"""The verifier: client events + CAS ledgers + scenario -> figures, checks and a verdict (DESIGN.md 7-9).

Everything is computed with whole-column operations (numpy/pandas), never a Python loop over events,
so a run of a million requests is judged in seconds. One module per step, in the order `verify` runs
them:

    facts.py           what the run knows beyond events and ledgers (RunFacts, FaultFact)
    coding.py          the inputs as integer codes; reading the client event files
    breaks.py          split sessions, hard and soft breaks and errors; the per-service table
    faults.py          per outage: the sessions on the CAS, failover, collateral breaks, after its return
    load.py            where the answers went: per CAS, per population and CAS, over time
    balance.py         max/mean, CV, Jain's index, and the same sessions placed at random
    reconciliation.py  every client event matched to its ledger row, the rest counted by why
    held.py            breaks the lab made: a logon that expired while its request waited in the lab
    limits.py          breaks while the balancer ran into a limit of its own (its connection limit)
    timers.py          cuts seen by the clients and by the CAS; the heartbeats ActiveSync devices asked for
    moves.py           why sessions moved: an expired or evicted persistence entry, a failed CAS, ...
    checks.py          the scenario's thresholds as checks
    analysis.py        the result (Analysis) and its verdict
    pipeline.py        `verify`: the steps in order
"""

from lab.verifier.analysis import Analysis, Timers
from lab.verifier.checks import AFFINITY_SERVICES, Check
from lab.verifier.coding import read_events
from lab.verifier.facts import FaultFact, RunFacts
from lab.verifier.moves import CAUSES
from lab.verifier.pipeline import verify

__all__ = [
    "AFFINITY_SERVICES",
    "CAUSES",
    "Analysis",
    "Check",
    "FaultFact",
    "RunFacts",
    "Timers",
    "read_events",
    "verify",
]
