"""Never a production address: every address of a user's file as run must be one of the lab's own.

This check reads only the file as run (through the reader's `addresses`), never the rewrite rules, so a
rule that misses a line cannot let a production address through: the address it left is refused here,
with the line the user wrote. What may be there:
- listeners on the VIP's addresses and ports of the run (and the stats port on the VIP's address);
- connections to the farm's CAS on their service ports (never their admin port), or to the VIP itself;
  a server without a port (HAProxy: the port the client connected to) only on a CAS, and only where
  the CAS listen on the VIP's ports;
- unix sockets inside the run's balancer folder.
Anything else is refused: another address, a wildcard listener (it would listen on every interface),
a host name (resolving it would send a DNS query), and whatever the reader could not place (kind "name":
resolvers, peers, mailers, scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab.balancers.userconfig import Address, Adopted, Place, Problem

if TYPE_CHECKING:
    from lab.balancers.userconfig import Reader

WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


def refusals(reader: Reader, adopted: Adopted, place: Place) -> list[Problem]:
    """One Problem per address of the adopted files that is not the lab's, at the line as written."""
    out = []
    for address in reader.addresses(adopted.as_run()):
        why = not_the_labs(address, place)
        if why:
            file, line = adopted.origin(address.file, address.line)
            out.append(Problem(file, line, why, address.text))
    return out


def not_the_labs(address: Address, place: Place) -> str | None:
    """Why `address` is not one of the lab's own, or None when it is."""
    what = address.what
    if address.kind == "name":
        return f"{what}: {address.host} would reach outside the lab, which runs no such thing"
    if address.kind == "unix":
        return None if inside(address.host, place.folder) else f"{what}: a socket outside the run's folder"
    if address.host in WILDCARDS:
        return f"{what} on every address ({address}): the lab listens on its VIP only"
    if not _is_ip(address.host):
        return (
            f"{what} {address}: a host name; the lab never resolves names (a DNS query would leave it): "
            "write the address the name has in production, or a placeholder ({{ cas[0].host }})"
        )
    if address.kind == "listen":
        if (address.host, address.port) in place.listen_addresses():
            return None
        return f"{what} {address} is not one of the lab's VIP addresses ({_listeners(place)})"
    if address.port is None:
        if address.host in {cas.host for cas in place.servers} and place.same_ports():
            return None
        return f"{what} {address} without a port, and not on a CAS whose ports are the VIP's"
    if (address.host, address.port) in place.connect_addresses():
        return None
    return (
        f"{what} {address} is not a CAS of the farm nor the VIP: the lab would connect to it; name the CAS "
        "as the servers of a backend or upstream (the lab maps those to its CAS), or write a placeholder "
        "({{ cas[0].host }}, {{ vip }})"
    )


def inside(path: str, folder: Path) -> bool:
    """Whether a socket path (relative: to the balancer's folder, its working directory) is in `folder`."""
    resolved = (folder / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    return resolved.is_relative_to(folder.resolve())


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _listeners(place: Place) -> str:
    return ", ".join(f"{h}:{p}" for h, p in sorted(place.listen_addresses()))
