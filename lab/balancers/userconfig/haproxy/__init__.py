"""The reader of users' HAProxy configs (the contract is lab.balancers.userconfig).

    parse.py        HAProxy's words, sections with their defaults, times
    layout.py       what the file listens on (roles of ports), its pools, its TLS mode
    rules.py        the rules that put the lab into the file, line by line
    addresses.py    every address of the file as run (for the safety check)
    routes.py       which backend each service reaches (use_backend, ACLs)
    persistence.py  a backend's persistence in the lab's words
    explain.py      per service: route, persistence, timeouts

HAProxy has no include directive; a folder of files (`-f conf.d/`) is refused by the contract's `adopt`
with what to do instead. The file as run is `haproxy.cfg` in the run's balancer/ folder, which the
HAProxy driver runs and checks (`haproxy -c`) as it does its own.
"""

from __future__ import annotations

from lab.balancers.userconfig import (
    Address,
    Adopted,
    ConnectionLimit,
    Place,
    Reader,
    Reading,
    Source,
    register,
)


@register
class HAProxyReader(Reader):
    driver = "haproxy"
    label = "HAProxy"
    main_file = "haproxy.cfg"

    def rewrite(self, source: Source, place: Place) -> Adopted:
        from lab.balancers.userconfig.haproxy.rules import adopt

        return adopt(source, place, self.main_file)

    def addresses(self, files: dict[str, str]) -> list[Address]:
        from lab.balancers.userconfig.haproxy.addresses import addresses

        return [a for name, text in files.items() if name == self.main_file for a in addresses(name, text)]

    def readings(self, source: Source, place: Place) -> list[Reading]:
        from lab.balancers.userconfig.haproxy.explain import readings

        return readings(source, place)

    def notes(self, source: Source, place: Place) -> list[str]:
        from lab.balancers.userconfig.haproxy.explain import notes

        return notes(source, place)

    def connection_limit(self, source: Source, place: Place) -> ConnectionLimit | None:
        """HAProxy is one process (its threads share its connections). The global `maxconn` is how many
        client connections it accepts at once, each with a connection to a CAS beside it; the rest wait
        in the listen queue. None without one: HAProxy then sizes it from the open-file limit, which
        lab.capacity counts anyway. (A global maxconn above what this machine's files allow is lowered
        in the file as run, rule 6: the open-file limit then binds here, not the file.)"""
        from lab.balancers.userconfig.haproxy.parse import parse

        _lines, sections = parse(source.text)
        found = [line for s in sections if s.kind == "global" for line in s.all("maxconn")]
        line = found[-1] if found else None  # the last one counts, as HAProxy reads the file
        if line is None or not line.args or not line.args[0].isdigit():
            return None
        value = int(line.args[0])
        return ConnectionLimit(1, 2 * value, f"global maxconn {value} (line {source.line_of(line.index)})")

    def server_lines(self, place: Place, role: str = "http", options: str = "") -> str:
        tail = f" {options}" if options else ""
        return "\n    ".join(
            f"server {cas.name} {cas.host}:{Place.cas_port(cas, role)}{tail}" for cas in place.servers
        )
