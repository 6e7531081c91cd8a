"""From the tally to the inference: clients, their rates and the peak hour, the populations, and what
the logs say as a whole (the balancer's own address, requests of no client).
"""

from __future__ import annotations

from lab.fromlogs.clients import find_clients
from lab.fromlogs.model import Inference
from lab.fromlogs.populations import find_populations
from lab.fromlogs.rates import kind_rates, peak_hour
from lab.fromlogs.sources import LogError
from lab.fromlogs.tally import Observed

SOURCE_NAT_MIN_USERS = 20  # fewer users than this behind one address prove nothing about a balancer
SOURCE_NAT_SHARE = 0.9  # one or two peers carrying this share of all users: the balancer's address


def infer(observed: Observed) -> Inference:
    clients = find_clients(observed)
    if clients.table.empty:
        raise LogError(
            ", ".join(f.path for f in observed.files),
            None,
            f"no client could be told apart: of {clients.unattributed + clients.unmodelled:,} requests to "
            f"Exchange services, {clients.unattributed:,} named no user and no ActiveSync DeviceId, and "
            f"{clients.unmodelled:,} came from programs of no client kind caslab models",
        )
    rates = kind_rates(clients, observed.time_scale)
    peak, bucket = peak_hour(clients, observed)
    populations = find_populations(clients, observed, bucket)
    notes = source_nat_notes(observed)
    if observed.tenants_note:
        notes.append(observed.tenants_note)
    if clients.unattributed:
        notes.append(
            f"{clients.unattributed:,} requests to Exchange services named no user (logon pages, 401 "
            "challenges, health probes): counted, not given to any client"
        )
    if clients.unmodelled:
        notes.append(
            f"{clients.unmodelled:,} requests named a user but came from programs of no client kind caslab "
            "models (by their User-Agent and service: not a browser on OWA or ECP, Outlook, a phone with a "
            "DeviceId, nor an EWS application): counted, not given to any client"
        )
    if clients.rpc_only:
        notes.append(
            f"{clients.rpc_only:,} Outlooks sent MSRPC channels and no request that names their version "
            "(Outlook 2003, which has no Autodiscover or EWS, or an Outlook whose other requests are in logs "
            f"not read): read as Outlook {clients.rpc_only_as} over RPC/HTTP, the version most of the "
            "Outlooks the logs name run (2007, which returns no cookie, when as many or more run it)"
        )
    if clients.not_exchange:
        notes.append(f"{clients.not_exchange:,} requests to paths of no Exchange service: not read")
    return Inference(
        populations=tuple(populations),
        rates=rates,
        peak=peak,
        notes=tuple(notes),
        observed=observed,
        requests=int(observed.activity["requests"].sum()),
        clients=len(clients.table),
        users=int(clients.table["person"].nunique()),
    )


def source_nat_notes(observed: Observed) -> list[str]:
    """What the peers (IIS c-ip) say about the balancer: behind a balancer that source-NATs, c-ip is the
    balancer's own address for every user; the clients' own addresses are then only in X-Forwarded-For."""
    named = observed.activity[observed.activity["user"] > 0]
    if named.empty:
        return []
    users = named["user"].nunique()
    per_peer = named.groupby("peer")["user"].nunique().sort_values(ascending=False)
    forwarded = named[named["client"] != named["peer"]]
    if not forwarded.empty:
        peers = forwarded["peer"].unique()
        carried = named[named["peer"].isin(peers)]["user"].nunique()
        return [
            f"c-ip {_addresses(observed, peers)} carried {carried:,} of {users:,} users while "
            f"X-Forwarded-For named {forwarded['client'].nunique():,} client addresses: the balancer's own "
            "address (it source-NATs); the clients' addresses were taken from X-Forwarded-For"
        ]
    top = per_peer.head(2)
    carried = named[named["peer"].isin(top.index)]["user"].nunique()
    if users >= SOURCE_NAT_MIN_USERS and carried >= SOURCE_NAT_SHARE * users:
        return [
            f"WARNING: c-ip {_addresses(observed, top.index)} carried {carried:,} of {users:,} users "
            "and no X-Forwarded-For was logged: most likely the balancer's own address (it source-NATs), "
            "so the clients' own addresses are lost and the populations below see one big NAT. Read the "
            "balancer's own access log (HAProxy's httplog, nginx's combined or main), which has them, or log "
            "X-Forwarded-For as the W3C field cs(X-Forwarded-For) (IIS 8.5's custom fields; the Advanced "
            "Logging module of IIS 7.5 writes another format, which caslab does not read)"
        ]
    return []


def _addresses(observed: Observed, ids) -> str:
    shown = [observed.addresses[i] for i in list(ids)[:3]]
    return ", ".join(shown) + (" and others" if len(ids) > 3 else "")
