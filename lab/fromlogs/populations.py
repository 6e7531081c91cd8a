"""Populations from addresses (DESIGN.md section 6): which clients sit behind which addresses, and what
that makes them.

- A phone on a carrier: an ActiveSync device seen from several addresses, which it shares with other
  such devices. Addresses where most clients are such movers form a carrier's pool (addresses a
  device moved between are one pool); its devices are a `mobile-carrier` population, with the rate at
  which they changed address (the smallest pools beyond MAX_GROUPS are one population).
- A NAT: an address with NAT_MIN_USERS or more distinct users. A `citrix` farm when all its clients are
  desktop Outlook over MAPI (no RPC over HTTP: the terminal servers are on the intranet), a carrier's
  NAT when all are ActiveSync devices (that did not move), else a `tenant-nat`. NAT addresses of one
  kind whose sizes lie within a factor of two are one population with that many `source_ips` (the lab
  spreads a population's users evenly over its addresses).
- An address with fewer users is one person's: `intranet` when it is a private address or its Outlook
  speaks MAPI (only the intranet reaches MAPI), else `direct` (home and travelling users).

A person is a user name; a device whose requests named no user counts as a person of its own.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter
from collections.abc import Iterable

import pandas as pd

from lab.fromlogs.clients import Clients
from lab.fromlogs.model import InferredPopulation
from lab.fromlogs.tally import Observed
from lab.scenario import format_duration

NAT_MIN_USERS = 3
SIZE_FACTOR = 2.0  # NAT addresses whose sizes lie within this factor are one population
MAX_GROUPS = 8  # populations per NAT kind at most (the factor widens until they fit)
DESKTOP_OUTLOOK = "outlook-mapi"
CLIENT_WORDS = {
    "browser": "browsers (Mozilla agents on /owa, /ecp)",
    "outlook2010-rpchttp": "Outlook 2010 over RPC/HTTP (MSRPC channels, Microsoft Office/14.0 calls)",
    "outlook2007-rpchttp": "Outlook 2007 over RPC/HTTP (MSRPC channels, Microsoft Office/12.0 calls)",
    "outlook-mapi": "Outlook over MAPI (Microsoft Office agents on Autodiscover/EWS/OAB, no RPC/HTTP)",
    "eas-device": "ActiveSync devices (DeviceId in the query)",
    "ews-app": "EWS applications (their own agents on /EWS)",
}


def find_populations(
    clients: Clients, observed: Observed, peak_bucket: int | None
) -> list[InferredPopulation]:
    """The populations of the clients, largest first within each kind."""
    table = clients.table.copy()
    moves = _Moves(table, observed.runs)
    presence = _presence(table, moves)
    pools = _carrier_pools(presence, moves)
    active = _active_in(clients.rows, peak_bucket)

    # Phones on a carrier's addresses are its population; other clients there are direct users.
    on_pool = presence[presence["address"].isin(list(pools))].drop_duplicates("client_id")
    pool_of = on_pool.set_index("client_id")["address"].map(pools)
    table["group"] = None
    phones = pool_of.index[table.loc[pool_of.index, "kind"].to_numpy() == "eas-device"]
    largest = set(pool_of[phones].value_counts().index[: MAX_GROUPS - 1])  # the rest become one
    table.loc[phones, "group"] = [
        f"mobile-carrier:pool{pool_of[c] if pool_of[c] in largest else 'others'}" for c in phones
    ]
    stray = len(pool_of) - len(phones)
    table.loc[pool_of.index.difference(phones), "group"] = "direct"
    by_address = table[table["group"].isna()]
    if not by_address.empty:
        table.loc[by_address.index, "group"] = pd.Series(_by_address(by_address, observed.addresses))

    populations = []
    for group, members in table.groupby("group", sort=False):
        populations.append(_population(str(group), members, presence, moves, observed, active))
    if stray:
        direct = next((p for p in populations if p.kind == "direct"), None)
        if direct is not None:
            note = f"{stray} clients other than phones came from carrier addresses: counted as direct users"
            populations[populations.index(direct)] = _with_evidence(direct, note)
    order = ["tenant-nat", "citrix", "mobile-carrier", "intranet", "direct"]
    populations.sort(key=lambda p: (order.index(p.kind), -p.users))
    return _named(populations)


# -- addresses and moves ------------------------------------------------------------------------------


class _Moves:
    """Per ActiveSync client: the addresses it was seen from, how often it changed, over how long."""

    def __init__(self, table: pd.DataFrame, runs: pd.DataFrame) -> None:
        devices = table[table["kind"] == "eas-device"]
        client_of = pd.Series(devices.index, index=devices["device"])
        runs = runs[runs["device"].isin(client_of.index)]
        runs = runs.assign(client_id=client_of.reindex(runs["device"]).to_numpy())
        self.runs = runs
        self.addresses: dict[int, list[int]] = (
            runs.groupby("client_id")["client"].unique().map(list).to_dict()
        )
        grouped = runs.groupby("client_id").agg(
            stretches=("client", "size"), first=("first", "min"), last=("last", "max")
        )
        self.changes = (grouped["stretches"] - 1).to_dict()
        self.span_s = (grouped["last"] - grouped["first"]).to_dict()  # in the logs' clock
        self.movers = {c for c, a in self.addresses.items() if len(a) >= 2}


def _presence(table: pd.DataFrame, moves: _Moves) -> pd.DataFrame:
    """(client_id, address, person, kind, mover): one row per address a client was seen from."""
    others = table[table["kind"] != "eas-device"]
    pairs = pd.concat(
        [
            pd.DataFrame({"client_id": others.index, "address": others["address"].to_numpy()}),
            moves.runs[["client_id", "client"]].rename(columns={"client": "address"}).drop_duplicates(),
        ],
        ignore_index=True,
    )
    pairs["person"] = table["person"].reindex(pairs["client_id"]).to_numpy()
    pairs["kind"] = table["kind"].reindex(pairs["client_id"]).to_numpy()
    pairs["mover"] = pairs["client_id"].isin(list(moves.movers))
    return pairs


def _carrier_pools(presence: pd.DataFrame, moves: _Moves) -> dict[int, int]:
    """address -> its pool (the smallest address id of the pool), for addresses most of whose clients
    are phones that moved; addresses a phone moved between are one pool."""
    per_address = presence.groupby("address").agg(clients=("client_id", "nunique"), movers=("mover", "sum"))
    carrier = set(
        per_address.index[(per_address["movers"] > 0) & (2 * per_address["movers"] >= per_address["clients"])]
    )
    parent = {a: a for a in carrier}

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for client_id in moves.movers:
        linked = [a for a in moves.addresses[client_id] if a in carrier]
        for a in linked[1:]:
            ra, rb = root(linked[0]), root(a)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {a: root(a) for a in carrier}


def _by_address(table: pd.DataFrame, addresses: list[str]) -> dict[int, str]:
    """client id -> group, for clients placed by the one address they came from."""
    if table.empty:
        return {}
    flags = table.assign(mapi=table["kind"] == DESKTOP_OUTLOOK, phone=table["kind"] == "eas-device")
    per_address = flags.groupby("address").agg(
        persons=("person", "nunique"),
        any_mapi=("mapi", "max"),
        all_mapi=("mapi", "min"),
        all_phones=("phone", "min"),
    )
    kind_of: dict[int, str] = {}
    for address, row in per_address.iterrows():
        if row["persons"] >= NAT_MIN_USERS:
            if row["all_mapi"]:
                kind_of[address] = "citrix"
            elif row["all_phones"]:
                kind_of[address] = "mobile-carrier"
            else:
                kind_of[address] = "tenant-nat"
        elif row["any_mapi"] or is_private(addresses[address]):
            kind_of[address] = "intranet"
        else:
            kind_of[address] = "direct"
    group_of_address: dict[int, str] = {}
    for kind in ("tenant-nat", "citrix", "mobile-carrier"):
        sizes = {a: int(per_address.at[a, "persons"]) for a, k in kind_of.items() if k == kind}
        for index, members in enumerate(_size_groups(sizes)):
            for a in members:
                group_of_address[a] = f"{kind}:{index}"
    return {
        client_id: group_of_address.get(address, kind_of[address])
        for client_id, address in table["address"].items()
    }


def _size_groups(sizes: dict[int, int]) -> list[list[int]]:
    """Addresses grouped so that sizes within a group lie within SIZE_FACTOR (widened until at most
    MAX_GROUPS groups are left), largest first."""
    factor = SIZE_FACTOR
    ordered = sorted(sizes, key=lambda a: (sizes[a], a))
    while True:
        groups: list[list[int]] = []
        for a in ordered:
            if groups and sizes[a] <= factor * sizes[groups[-1][0]]:
                groups[-1].append(a)
            else:
                groups.append([a])
        if len(groups) <= MAX_GROUPS:
            return groups[::-1]
        factor *= 2


def is_private(address: str) -> bool:
    """An RFC 1918 or unique-local address: one only an intranet uses. (Not `is_private` of the
    ipaddress module, which counts loopback in: the lab's own clients are on 127.x.)"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in PRIVATE_NETWORKS if ip.version == net.version)


PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


# -- one population -----------------------------------------------------------------------------------


def _population(
    group: str,
    members: pd.DataFrame,
    presence: pd.DataFrame,
    moves: _Moves,
    observed: Observed,
    active: set[int],
) -> InferredPopulation:
    kind = group.split(":", 1)[0]
    persons = int(members["person"].nunique())
    clients = {k: int(n) for k, n in members.groupby("kind")["person"].nunique().items()}
    seen = presence[presence["client_id"].isin(members.index)]
    per_address = seen.groupby("address")["person"].nunique()
    evidence = [_address_evidence(kind, group, per_address, members, observed)]
    change_every = None
    per_hour: list[float] = []
    if kind == "mobile-carrier":
        devices = [c for c in members.index if c in moves.changes]
        changes = sum(moves.changes[c] for c in devices)
        span_s = sum(moves.span_s[c] for c in devices) * observed.time_scale
        per_hour = [
            moves.changes[c] / (moves.span_s[c] * observed.time_scale / 3600)
            for c in devices
            if moves.span_s[c] > 0
        ]
        if changes:
            change_every = span_s / changes
            evidence.append(
                f"{changes} address changes in {span_s / 3600:.1f} device-hours of Exchange time: "
                f"each device moved every {format_duration(round(change_every))} on average"
            )
        elif devices:
            evidence.append("no device changed address while the logs ran")
    evidence.append(
        "clients: "
        + "; ".join(
            f"{CLIENT_WORDS[k]}: {n} of {persons} users"
            for k, n in sorted(clients.items(), key=lambda kv: -kv[1])
        )
    )
    peak_users = int(members.loc[members.index.isin(active), "person"].nunique())
    return InferredPopulation(
        kind=kind,
        name=group,
        users=persons,
        addresses=len(per_address),
        clients=clients,
        evidence=tuple(evidence),
        users_per_address=tuple(int(v) for v in per_address.to_numpy()),
        ip_change_every_s=change_every,
        changes_per_hour=tuple(per_hour),
        peak_users=peak_users,
    )


def _address_evidence(
    kind: str, group: str, per_address: pd.Series, members: pd.DataFrame, observed: Observed
) -> str:
    n = len(per_address)
    lo, hi = int(per_address.min()), int(per_address.max())
    each = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if hi == 1:
        carried = f"{n} addresses carried one user each" if n != 1 else "1 address carried one user"
    else:
        carried = (
            f"{n} address{'es' if n != 1 else ''} carried {each} distinct users{' each' if n != 1 else ''}"
        )
    if kind == "tenant-nat":
        return f"{carried}: a NAT-ed tenant"
    if kind == "citrix":
        return (
            f"{carried}, all of them desktop Outlook over MAPI (no RPC over HTTP): "
            "a Citrix or terminal server farm"
        )
    if kind == "mobile-carrier":
        types = _device_types(members, observed)
        if group.startswith("mobile-carrier:pool"):
            return (
                f"{len(members)} ActiveSync devices ({types}) moved among {n} addresses, "
                f"which carried {each} devices each: phones behind a carrier's NAT"
            )
        return f"{carried}, nothing but ActiveSync devices ({types}): phones behind a carrier's NAT"
    if kind == "intranet":
        return (
            f"{carried}, on private addresses or with Outlook over MAPI (which only the intranet reaches; "
            "IIS does not log MAPI itself): intranet users"
        )
    return f"{carried}, on public addresses and without MAPI: home or travelling users"


def _device_types(members: pd.DataFrame, observed: Observed) -> str:
    types = pd.Series([observed.device_types[d] or "no DeviceType" for d in members["device"] if d > 0])
    return ", ".join(f"{t} {n}" for t, n in types.value_counts().items()) or "no DeviceType"


def _active_in(rows: pd.DataFrame, bucket: int | None) -> set[int]:
    if bucket is None:
        return set()
    return set(rows.loc[rows["bucket"] == bucket, "client_id"].unique())


def _with_evidence(population: InferredPopulation, sentence: str) -> InferredPopulation:
    return dataclasses.replace(population, evidence=(*population.evidence, sentence))


def _named(populations: Iterable[InferredPopulation]) -> list[InferredPopulation]:
    """Names as the scenario shows them: the kind, numbered when a kind repeats (tenant-nat-1, ...)."""
    populations = list(populations)
    counts = Counter(p.kind for p in populations)
    seen: Counter[str] = Counter()
    named = []
    for p in populations:
        seen[p.kind] += 1
        name = p.kind if counts[p.kind] == 1 else f"{p.kind}-{seen[p.kind]}"
        named.append(dataclasses.replace(p, name=name))
    return named
