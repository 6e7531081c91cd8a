"""Where the answered requests went: per CAS, per population and CAS, and per CAS over time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.verifier.breaks import Breaks
from lab.verifier.coding import CodedEvents, codes_of, ledger_column, numbers
from lab.verifier.facts import RunFacts

TIME_BINS = 80  # about this many bins on the timeline, at a round width
BIN_WIDTHS_S = (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
WIDEST_BIN_S = 1800


def server_table(
    events: CodedEvents, breaks: Breaks, ledger: pd.DataFrame, ledger_server: np.ndarray, facts: RunFacts
) -> pd.DataFrame:
    """Per CAS: answered requests, share, sessions, peak connections, ledger rows, the balancer's count."""
    names = events.server_names
    requests = events.per_server()
    total = requests.sum()
    peak_from_ledger = peak_concurrency(ledger, ledger_server, len(names))
    own_count = [facts.server_stats.get(name, {}).get("peak_inflight") for name in names]
    peaks = [peak_from_ledger[i] if count is None else count for i, count in enumerate(own_count)]
    return pd.DataFrame(
        {
            "requests": requests,
            "share": np.round(requests / total, 4) if total else np.zeros(len(names)),
            "sessions": breaks.sessions_per_server,
            "peak_connections": np.asarray(peaks, dtype=np.int64),
            "ledger_rows": np.bincount(ledger_server[ledger_server >= 0], minlength=len(names)),
            "balancer_count": [facts.balancer_counters.get(name) for name in names],
        },
        index=pd.Index(names, name="server"),
    )


def peak_concurrency(ledger: pd.DataFrame, ledger_server: np.ndarray, n_servers: int) -> np.ndarray:
    """Most requests in progress at once on each CAS, from arrival time + latency of its ledger rows."""
    start = numbers(ledger_column(ledger, "ts"))
    end = start + np.nan_to_num(numbers(ledger_column(ledger, "latency_ms"))) / 1000
    peaks = np.zeros(n_servers, dtype=np.int64)
    for server in range(n_servers):  # per CAS (a few), each with whole-array operations
        starts, ends = np.sort(start[ledger_server == server]), np.sort(end[ledger_server == server])
        if len(starts):
            # Open at the i-th arrival: arrivals so far minus requests that ended by then.
            open_at_arrival = np.arange(1, len(starts) + 1) - np.searchsorted(ends, starts, side="right")
            peaks[server] = int(open_at_arrival.max())
    return peaks


def population_tables(population: pd.Series, events: CodedEvents) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Population x CAS: answered requests, and the same as shares of each population's requests."""
    pop, pop_names = codes_of(population)
    answered = events.answered
    n_servers, n_pops = len(events.server_names), len(pop_names)
    counts = np.bincount(pop[answered] * n_servers + events.server[answered], minlength=n_pops * n_servers)
    requests = pd.DataFrame(
        counts.reshape(n_pops, n_servers),
        index=pd.Index(pop_names, name="population"),
        columns=pd.Index(events.server_names, name="server"),
    )
    shares = requests.div(requests.sum(axis=1).replace(0, np.nan), axis=0).fillna(0).round(4)
    return requests, shares


def timeline(events: CodedEvents, run_start: float, run_end: float) -> pd.DataFrame:
    """Answered requests per CAS per time bin, from the run's start to its end (or its last answer).
    Index: seconds since the run started (the bin's start); columns: servers."""
    answered = events.answered
    return binned(events.ts[answered], events.server[answered], events.server_names, run_start, run_end)


def binned(
    ts: np.ndarray, group: np.ndarray, names: list[str], run_start: float, run_end: float
) -> pd.DataFrame:
    """Events (their times `ts` and `group`s, positions in `names`) counted per group per time bin, over
    the run (or to its last event). Index: seconds since the run started (the bin's start)."""
    n_groups = len(names)
    since_start = np.maximum(ts - run_start, 0)
    span = max(float(since_start.max(initial=0)), run_end - run_start) or 1.0
    width = next((w for w in BIN_WIDTHS_S if span / w <= TIME_BINS), WIDEST_BIN_S)
    bins = (since_start // width).astype(np.int64)
    n_bins = int(span // width) + 1
    counts = np.bincount(bins * n_groups + group, minlength=n_bins * n_groups).reshape(n_bins, n_groups)
    bin_starts = pd.Index(np.arange(n_bins) * width, name="t_s")
    return pd.DataFrame(counts, index=bin_starts, columns=names)
