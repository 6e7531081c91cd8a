"""Rules 1, 2 and 5 of lab.balancers.userconfig as functions the readers share: which CAS each server of a
user's file becomes, which VIP address and port each listener becomes, and a timeout in Exchange time.

Rule 1, exactly as a user can predict it (the contract's words, in this order):
- a server already on a CAS of the farm (a config the lab rendered, a `{{ cas_servers }}` line) stays
  that CAS;
- where every server is named after a CAS of the farm (CAS01, cas02...), it is that CAS;
- where every pool lists the same set of servers, the k-th distinct server (in order of first
  appearance) is the k-th CAS in every pool, so one production server is one CAS everywhere;
- else the i-th server of each pool is the i-th CAS.
The number of servers must fit the farm: a pool (or the set, where all pools share one) with another
number of servers than the farm has CAS is refused, naming the `[farm] servers` that would fit.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lab.balancers.userconfig import PORT_ROLES, ROLE_SERVICES, Place, Problem
from lab.model import CasEndpoint


@dataclass(frozen=True)
class PoolServer:
    """One server of a pool as the file writes it."""

    pool: str  # the upstream / cluster / service that lists it
    server: str  # its name in the file, or its address where servers have no names
    host: str  # the address or host name as written (what "the same server" means across pools)
    port: int | None
    file: str
    line: int  # as written
    text: str = ""


def map_servers(
    servers: list[PoolServer], place: Place
) -> tuple[dict[PoolServer, CasEndpoint], list[Problem]]:
    """The CAS each server becomes (rule 1), and the problems when the file's servers do not fit the farm."""
    farm = list(place.servers)
    if not servers:
        return {}, []
    on_cas = {(c.host, p): c for c in farm for p in (c.http_port, c.https_port, c.mapi_port, c.ab_port)}
    by_name = {c.name.lower(): c for c in farm}
    out: dict[PoolServer, CasEndpoint] = {}
    rest = []
    for s in servers:
        cas = on_cas.get((s.host, s.port)) or (by_name.get(s.host.lower()) if not _is_ip(s.host) else None)
        if cas is not None:
            out[s] = cas
        else:
            rest.append(s)
    if not rest:
        return out, []
    if all(s.server.lower() in by_name for s in rest):
        out.update({s: by_name[s.server.lower()] for s in rest})
        return out, []
    pools: dict[str, list[PoolServer]] = {}
    for s in rest:
        pools.setdefault(s.pool, []).append(s)
    distinct = list(dict.fromkeys(s.host for s in rest))
    same_set = all({s.host for s in members} == set(distinct) for members in pools.values())
    problems = []
    if same_set:
        if len(distinct) != len(farm):
            first = rest[0]
            problems.append(
                Problem(
                    first.file,
                    first.line,
                    f"the file's pools list {len(distinct)} servers ({', '.join(distinct)}) and the farm has "
                    f"{len(farm)} CAS: set `[farm] servers = {len(distinct)}`, or list {len(farm)} servers",
                    first.text,
                )
            )
            return out, problems
        index = {host: farm[k] for k, host in enumerate(distinct)}
        out.update({s: index[s.host] for s in rest})
        return out, []
    for pool, members in pools.items():
        if len(members) != len(farm):
            first = members[0]
            problems.append(
                Problem(
                    first.file,
                    first.line,
                    f"{pool} has {len(members)} servers and the farm {len(farm)} CAS: set "
                    f"`[farm] servers = {len(members)}`, or list {len(farm)} servers in every pool",
                    first.text,
                )
            )
            continue
        out.update({s: farm[i] for i, s in enumerate(members)})
    return out, problems


def cas_port(cas: CasEndpoint, port: int | None, default_role: str = "http") -> int | None:
    """The CAS port of the role of a server's port (rule 1); None for a port of no role."""
    role = PORT_ROLES.get(port) if port is not None else default_role
    if role is None or role == "stats":
        return None
    return Place.cas_port(cas, role)


def vip_for(place: Place, role: str, services: tuple[str, ...] | list[str] = ()) -> list[tuple[str, int]]:
    """The VIP addresses and port a listener of `role` becomes (rule 2): one per VIP address of the services
    it serves (one on single-vip); the stats listener is on the VIP's own address."""
    port = place.vip_port(role)
    if role == "stats":
        return [(place.vip.host, port)]
    wanted = [s for s in services if s in ROLE_SERVICES[role]] or list(ROLE_SERVICES[role])
    return [(host, port) for host in place.vip_hosts(wanted)]


def scaled(seconds: float, place: Place) -> float:
    """An idle or persistence timeout in wall time (rule 5): Exchange time divided by the time scale."""
    return seconds / place.time_scale


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# A request of each HTTP service as the lab's clients send it (loadgen.wire): the path a route must take.
CLIENT_PATHS: dict[str, str] = {
    "owa": "/owa/",
    "ecp": "/ecp/",
    "ews": "/EWS/Exchange.asmx",
    "eas": "/Microsoft-Server-ActiveSync",
    "rpchttp": "/rpc/rpcproxy.dll",
    "oab": "/OAB/00000000-0000-0000-0000-000000000000/oab.xml",
    "autodiscover": "/Autodiscover/Autodiscover.xml",
}


def header_name(variable: str) -> str:
    """An HTTP header's name from its nginx-style variable part (`user_agent` -> `User-Agent`)."""
    return "-".join(part.capitalize() for part in variable.replace("_", "-").split("-"))
