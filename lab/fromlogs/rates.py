"""How often each kind of client made requests, and the busiest hour, in Exchange time.

A client's rate is its requests after the first over the time from its first to its last request
(`(n - 1) / span`: unbiased however long the logs ran), summed over the clients of a kind; its
reciprocal is the mean time between two requests of one client: the think time of a person, or the
protocol's own period for programs that poll (an ActiveSync Ping, an EWS GetEvents). Logs of a caslab
run are `time_scale` times faster than Exchange: their times are multiplied back.
"""

from __future__ import annotations

from lab.fromlogs.clients import Clients
from lab.fromlogs.model import KindRate, PeakHour
from lab.fromlogs.tally import Observed


def kind_rates(clients: Clients, time_scale: float) -> dict[str, KindRate]:
    table = clients.table
    span_s = (table["last"] - table["first"]) * time_scale
    counted = (table["requests"] >= 2) & (span_s > 0)
    by_service = clients.rows.groupby(["kind", "service_name"])["requests"].sum()
    rates = {}
    for kind, members in table.groupby("kind"):
        used = counted.loc[members.index]
        span = float(span_s.loc[members.index][used].sum())
        calls = float((members.loc[used, "requests"] - 1).sum())
        services = by_service.loc[kind]
        rates[str(kind)] = KindRate(
            kind=str(kind),
            clients=len(members),
            requests=int(members["requests"].sum()),
            per_hour=calls / span * 3600 if span > 0 and calls > 0 else None,
            services={
                str(s): float(n / services.sum()) for s, n in services.sort_values(ascending=False).items()
            },
        )
    return rates


def peak_hour(clients: Clients, observed: Observed) -> tuple[PeakHour | None, int | None]:
    """The Exchange hour with the most clients active, and its bucket (lab.fromlogs.tally)."""
    rows = clients.rows
    if rows.empty:
        return None, None
    hours = rows.groupby("bucket").agg(clients=("client_id", "nunique"), requests=("requests", "sum"))
    bucket = int(hours["clients"].idxmax())
    in_peak = rows[rows["bucket"] == bucket]
    users = int(clients.table.loc[in_peak["client_id"].unique(), "person"].nunique())
    return (
        PeakHour(
            start_ts=bucket * observed.bucket_s,
            clients=int(hours.at[bucket, "clients"]),
            users=users,
            requests=int(hours.at[bucket, "requests"]),
        ),
        bucket,
    )
