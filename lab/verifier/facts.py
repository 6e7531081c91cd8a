"""What a run knows beyond its client events and ledgers: its id, the balancer it ran, when the load
started and ended, which faults fired when, the counters the CAS and the balancer kept, and why the
lab cannot vouch for the run, if it cannot. The run writes these into facts.json, so `caslab report`
judges a stored run exactly as the run itself did."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OLD_INVALID_NOTE = "invalid run: "


@dataclass(frozen=True)
class FaultFact:
    """A fault as it was fired: which server, what, and when (epoch seconds)."""

    server: str
    action: str
    ts: float


@dataclass
class RunFacts:
    """What the run knows beyond events and ledgers: the balancer it ran and when things happened."""

    driver: str
    driver_version: str = ""
    methods: dict[str, str] = field(default_factory=dict)  # service -> "cookie-hash OutlookSession ..."
    preset: str | None = None
    started_ts: float | None = None  # epoch seconds when the load generator started (the ramp begins)
    ended_ts: float | None = None
    faults: list[FaultFact] = field(default_factory=list)
    server_stats: dict[str, dict] = field(default_factory=dict)  # /caslab/stats of each CAS at the end
    balancer_counters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # things the reader should know, shown in the report
    # Why the lab cannot vouch for the run (e.g. its load generator saturated): any reason makes it invalid.
    invalid_reasons: list[str] = field(default_factory=list)
    run_id: str = ""  # the id the run's clients sent and its CAS wrote into their ledger rows
    # The persistence as the balancer ran it, for telling why sessions moved (lab/verifier/moves.py):
    # per service, how long an idle entry lived (seconds of wall time: the scenario's, time-scaled), and
    # how many entries a table held (None: no limit set). Absent, the scenario's are used.
    persistence_timeouts_s: dict[str, float] = field(default_factory=dict)
    persistence_table_size: int | None = None
    balancer_limits: list[str] = field(default_factory=list)  # limits of its own the balancer reached
    cas_lags: list[str] = field(default_factory=list)  # CAS whose event loop fell behind during the load

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunFacts:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["faults"] = [FaultFact(f["server"], f["action"], f["ts"]) for f in data.get("faults", [])]
        # Runs from before invalid_reasons existed said "invalid run: <reason>" as a note.
        old_style = [n for n in values.get("notes", []) if n.startswith(OLD_INVALID_NOTE)]
        if old_style and "invalid_reasons" not in data:
            values["notes"] = [n for n in values["notes"] if n not in old_style]
            values["invalid_reasons"] = [n.removeprefix(OLD_INVALID_NOTE) for n in old_style]
        return cls(**values)
