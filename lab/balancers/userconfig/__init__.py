"""The user's own balancer file under test (DESIGN.md section 14): the contract every reader keeps.

A user's candidate config (an haproxy.cfg, an nginx conf, an Envoy YAML, a Traefik dynamic config) is
run as written, with the lab put into it: its servers become the farm's CAS, its listeners move to the
VIP, its stats listener and TLS files become the lab's. One *reader* per driver knows that driver's
syntax; it lives in lab/balancers/userconfig/<driver>.py and registers itself with `@register`:

    reader = reader_for("haproxy")
    reader.looks_like(text)           # is this text a config of this driver? (another's is refused by name)
    adopted = reader.adopt(path, place)   # the file with the lab put into it, every rewrite accounted for
    reader.addresses(adopted.as_run())    # every address the file as run would listen on or connect to
    explanation = reader.explain(path)    # per service: route, persistence, timeouts, predictions

`adopt` is the only way in: it reads the file (placeholders filled in), refuses a file for another driver,
lets the reader apply its rules (`rewrite`), then refuses the result unless every address in it is the
lab's own (`safety.refusals`). It raises `ConfigRefused`, naming every line it refuses; nothing has been
started then, and nothing of the user's file has been handed to the balancer binary (HAProxy resolves
host names while it merely checks a file, so not even `haproxy -c` sees a file before it passed).

What a reader implements (see `Reader`):
- `looks_like(text)`: whether the text is this driver's syntax. The default asks `guess_driver`, which
  knows the four syntaxes by their marks; a reader may look closer.
- `rewrite(source, place) -> Adopted`: apply the driver's rules, line by line, recording each change as a
  `Rewrite` (file, line as written, was, now, the rule). The rules every reader keeps, so a user can
  predict the file as run (README, "Your own balancer config"):
  1. Servers. The servers of each backend / upstream / cluster / service become the farm's CAS. Where
     every pool names the same set of servers, the k-th distinct name (in order of first appearance) is
     CAS0k in every pool, so one production server is one CAS everywhere; else the i-th server of each
     pool is CAS0i. A pool with another number of servers than the farm has CAS is refused (the message
     says which `[farm] servers` would fit). The server's port picks the CAS port by its role (PORT_ROLES);
     the options of each server line stay (checks, cookies, tracking, weights), but TLS files become the
     run's (rule 4). `Adopted.servers` keeps the mapping, so counters and reports speak of CAS.
  2. Listeners. Each listener moves to the VIP by the role of its port (80 -> VIP HTTP, 443 -> VIP HTTPS,
     135/6001-6004/59531 -> MAPI, 59532 -> Address Book; the lab's own ports map to themselves), on the
     VIP address of the services it serves (one address on `single-vip`). A port of no role is refused
     with its line. Two listeners that would land on one VIP address and port are refused.
  3. Stats. The stats or admin listener moves to the VIP's stats port; the driver's admin socket (what
     the lab reads counters from) moves into the run folder, and is added where the file has none.
  4. TLS. Certificates, keys and CA files named in the file are the run's (trustme) files; a name the
     file checks certificates against (SNI, verifyhost) is the run certificate's name.
  5. Time. Idle and persistence timeouts (stick-table expire, cookie lifetimes, client/server/tunnel
     idle timeouts) are Exchange time like every other timer of the lab, so they are divided by the
     scenario's time_scale (nothing changes at time_scale 1). Connect, check and request timeouts stay.
  6. Run folder. Logs go to the balancer's output (its log in the run folder), sockets and pid files
     into the run folder; what would run the balancer as another user or in a chroot is dropped.
  7. Refused by name: whatever would reach a host the lab did not make (DNS resolvers, peers, mailers,
     remote log servers that cannot be redirected, scripts that can open connections), files the lab
     cannot follow (includes of a kind the reader does not follow, folders of config files, files named
     in the config that are not there), and environment variables the lab cannot know.
  Everything else stays exactly as written: methods, timeouts, ACLs and options are what is under test.
  Where a rule cannot be applied safely, the file may use placeholders instead (PLACEHOLDERS; jinja2,
  strict: an unknown name is an error with its line); a line that neither a rule nor a placeholder makes
  the lab's is refused with its line.
- `addresses(files) -> [Address]`: every address the files as run would listen on or connect to (every
  listener, server, health-check address, log target, resolver, peer, mailer, anything with a host), with
  file and line. The safety check reads only this, so a reader that misses a rewrite still cannot send a
  packet away: the address it left is refused here. List what you cannot place as kind "name".
- `readings(source, place) -> [Reading]`: per service (by the paths the file routes: caslab.vocab.
  SERVICE_PATHS), the pool it reaches, the persistence read from the file (a lab.model.Persistence where
  it is one of the lab's methods, else None with the file's own words), its timeouts, and what the lab
  cannot read.
  `rule` names what holds the client's CAS, so that services sharing it can be seen to (OWA and ECP).
  `explain` adds what that predicts for each client kind (lab.balancers.userconfig.predict).
- `server_lines(place, role, options)`: the farm's CAS as server lines in the driver's syntax, for the
  `{{ cas_servers }}` placeholder.
- `connection_limit(source, place) -> ConnectionLimit | None` (optional): the balancer's processes and
  the connections each may hold as the file sets them (nginx: worker_processes, worker_connections;
  HAProxy: the global maxconn), so the capacity check compares the scenario's connections with the
  file's limit (lab.capacity); None where the file sets none the lab reads (the driver's `processes()`
  and the open-file limit then decide).

Why this shape: the rules are data a user can predict and check in the diff (balancer/<file>.diff and
the report), not a re-rendering: the file as run is the user's file, line for line, with the lab's
addresses. The safety check is separate from the rules and reads only the result, so the guarantee
"no packet to a production host" does not depend on every rule being right. Explaining is separate from
running: it reads the file as written and starts nothing, so `caslab balancer explain` is safe on any
file. The driver that runs the file is the driver of the scenario, unchanged (lab.balancers: a spec
with `config` makes the driver write the adopted files instead of rendering its own).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from caslab.registry import NotRegistered, Registry
from caslab.vocab import (
    AB_PORT,
    DRIVERS,
    HTTP_PORT,
    HTTP_SERVICES,
    HTTPS_PORT,
    MAPI_PORT,
    SERVICES,
    STATS_PORT,
)
from lab.model import CasEndpoint, Persistence, TlsFiles, Vip

# The roles a listener or a server port can have, and the VIP / CAS port of each.
ROLES: tuple[str, ...] = ("http", "https", "mapi", "addressbook", "stats")

# Port -> role: the production ports of an Exchange 2010 CAS farm, and the lab's own (so a config the lab
# rendered, `caslab balancer config`, runs unchanged).
PORT_ROLES: dict[int, str] = {
    80: "http",
    443: "https",
    135: "mapi",
    **dict.fromkeys(range(6001, 6005), "mapi"),
    59531: "mapi",
    59532: "addressbook",
    HTTP_PORT: "http",
    HTTPS_PORT: "https",
    MAPI_PORT: "mapi",
    AB_PORT: "addressbook",
    STATS_PORT: "stats",
}

# The services behind each role's listener.
ROLE_SERVICES: dict[str, tuple[str, ...]] = {
    "http": HTTP_SERVICES,
    "https": HTTP_SERVICES,
    "mapi": ("mapi",),
    "addressbook": ("addressbook",),
    "stats": (),
}


class ConfigRefused(ValueError):
    """The user's file cannot run in the lab: one `Problem` per line refused. Nothing was started."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], headline: str = "") -> None:
        self.problems = tuple(problems)
        self.headline = headline or "the config cannot run in the lab"
        super().__init__("\n".join([f"{self.headline}:", *(f"  {p}" for p in self.problems)]))


@dataclass(frozen=True)
class Problem:
    """One thing refused: where (file and line as the user wrote it; 0 for the file as a whole), the
    line's text, and why, in words that say what to do instead."""

    file: str
    line: int
    why: str
    text: str = ""

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        shown = f"\n      {self.text.strip()}" if self.text.strip() else ""
        return f"{where}: {self.why}{shown}"


@dataclass(frozen=True)
class Place:
    """Where the lab is: everything a reader puts into a file. `folder` is the run's balancer/ folder,
    the balancer's working directory: relative file names in a file as run are relative to it, and its
    sockets, logs and pid files go there."""

    servers: tuple[CasEndpoint, ...]
    vip: Vip
    tls_files: TlsFiles
    folder: Path
    topology: str = "single-vip"
    time_scale: float = 1.0

    def vip_port(self, role: str) -> int:
        vip = self.vip
        return {"http": vip.http_port, "https": vip.https_port, "mapi": vip.mapi_port,
                "addressbook": vip.ab_port, "stats": vip.stats_port}[role]  # fmt: skip

    @staticmethod
    def cas_port(cas: CasEndpoint, role: str) -> int:
        return {"http": cas.http_port, "https": cas.https_port, "mapi": cas.mapi_port,
                "addressbook": cas.ab_port}[role]  # fmt: skip

    def vip_hosts(self, services: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
        """The VIP addresses clients use for `services` (all web services when none are given), in the
        order of caslab.vocab.VIP_GROUPS; one address on `single-vip`. The stats port is on `vip.host`."""
        wanted = services or HTTP_SERVICES
        return tuple(dict.fromkeys(self.vip.service_host(s, self.topology) for s in SERVICES if s in wanted))

    def listen_addresses(self) -> frozenset[tuple[str, int]]:
        """Every address and port the balancer may listen on."""
        out = {(self.vip.host, self.vip.stats_port)}
        for role in ("http", "https", "mapi", "addressbook"):
            for host in self.vip_hosts(ROLE_SERVICES[role]):
                out.add((host, self.vip_port(role)))
        return frozenset(out)

    def connect_addresses(self) -> frozenset[tuple[str, int]]:
        """Every address and port the balancer may connect to: the CAS' service ports (never their admin
        port) and its own listeners."""
        cas = {
            (c.host, self.cas_port(c, r))
            for c in self.servers
            for r in ("http", "https", "mapi", "addressbook")
        }
        return frozenset(cas | self.listen_addresses())

    def same_ports(self) -> bool:
        """Whether every CAS listens on the VIP's port of each role, so a server given without a port
        (HAProxy: the port the client connected to) reaches the right CAS port."""
        roles = ("http", "https", "mapi", "addressbook")
        return all(self.cas_port(c, r) == self.vip_port(r) for c in self.servers for r in roles)


@dataclass(frozen=True)
class Source:
    """One file of the user's config, as written and with the lab's placeholders filled in (`text`).
    `origins[i]` is the line as written (1-based) that line i (0-based) of `text` came from."""

    name: str  # as the user named it: the main file's name, an include's path relative to it
    path: Path
    written: str
    text: str
    origins: tuple[int, ...]

    def line_of(self, index: int) -> int:
        """The line as written (1-based) of line `index` (0-based) of `text`."""
        return self.origins[index] if index < len(self.origins) else 0

    @property
    def has_placeholders(self) -> bool:
        return self.text != self.written


@dataclass(frozen=True)
class ConnectionLimit:
    """How many connections the balancer holds at once as the user's file sets it: `processes` each
    holding at most `per_process` connections (client and server sides both count, as with nginx's
    worker_connections); `words` say where that comes from, with lines, or the balancer's defaults."""

    processes: int
    per_process: int
    words: str


@dataclass(frozen=True)
class Rewrite:
    """One change the lab made to the user's file, by a documented rule."""

    file: str  # the user's name of the file
    line: int  # the line as written (1-based); 0 for a line the lab added
    was: str  # the line as written, placeholders filled in ("" when added)
    now: str  # the line(s) as run ("" when dropped)
    rule: str  # the rule, in a few words ("server -> CAS02 (the 2nd distinct server name)")

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "added"
        if not self.now:
            return f"{self.file} {where}: dropped ({self.rule}): {self.was.strip()}"
        if not self.was:
            return f"{self.file} {where} ({self.rule}): {self.now.strip()}"
        now = " | ".join(line.strip() for line in self.now.splitlines())
        return f"{self.file} {where} ({self.rule}): {self.was.strip()}  ->  {now}"


@dataclass(frozen=True)
class ServerMapping:
    """Which CAS a server of the user's file became."""

    pool: str  # the backend / upstream / cluster / service that lists it
    server: str  # its name in the file (or its address, where servers have no names)
    cas: str  # CAS01, CAS02, ...
    file: str
    line: int  # as written


@dataclass(frozen=True)
class AdoptedFile:
    """One file as the user wrote it and as it runs."""

    name: str  # as run, in the run's balancer/ folder (the main file takes the driver's name)
    written_name: str
    written: str
    text: str
    origins: tuple[int, ...]  # for each line of `text`, its line as written (0: the lab added it)

    def diff(self) -> str:
        """A unified diff from the file as written to the file as run."""
        return "".join(
            difflib.unified_diff(
                self.written.splitlines(keepends=True),
                self.text.splitlines(keepends=True),
                f"{self.written_name} (as written)",
                f"{self.name} (as run)",
            )
        )


@dataclass(frozen=True)
class Adopted:
    """The user's config with the lab put into it: what the driver writes and runs, and the account."""

    driver: str
    files: tuple[AdoptedFile, ...]  # the main file first
    rewrites: tuple[Rewrite, ...]
    servers: tuple[ServerMapping, ...]
    listeners: tuple[tuple[str, int], ...]  # (host, port) the balancer will listen on: its readiness
    tls: str  # the TLS mode the file has (caslab.vocab.TLS_MODES): decides what the clients and CAS speak
    tls_reason: str  # why, with the line

    @property
    def main(self) -> AdoptedFile:
        return self.files[0]

    def as_run(self) -> dict[str, str]:
        """File name (in run_dir/balancer/) -> text as run."""
        return {f.name: f.text for f in self.files}

    def cas_of(self, pool: str, server: str) -> str | None:
        """The CAS a server of a pool became (None: not a server the lab mapped)."""
        return next((m.cas for m in self.servers if (m.pool, m.server) == (pool, server)), None)

    def diff(self) -> str:
        return "".join(f.diff() for f in self.files)

    def origin(self, name: str, line: int) -> tuple[str, int]:
        """The file as written and its line for line `line` (1-based) of the file `name` as run."""
        for f in self.files:
            if f.name == name:
                return f.written_name, (f.origins[line - 1] if 0 < line <= len(f.origins) else 0)
        return name, 0


@dataclass(frozen=True)
class Address:
    """Somewhere the file as run would listen or connect."""

    file: str  # the file as run
    line: int  # its line as run (1-based)
    kind: str  # "listen", "connect", "unix" (a socket path) or "name" (something the lab cannot place)
    what: str  # the directive: "bind", "server", "log", "nameserver", "stats socket", ...
    host: str  # an IP address, a host name, or a socket path (kind "unix")
    port: int | None = None  # None: no port given (HAProxy: the port the client connected to)
    text: str = ""  # the line

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"socket {self.host}"
        return f"{self.host}:{self.port}" if self.port is not None else self.host


@dataclass(frozen=True)
class Timeout:
    """A time the file sets that matters to a service's sessions, as written (Exchange time)."""

    name: str  # "stick-table expire", "cookie maxidle", "timeout client", ...
    seconds: float
    line: int  # as written

    def __str__(self) -> str:
        from lab.scenario.durations import (
            format_duration,
        )  # imported late: lab.scenario imports lab.balancers

        return f"{self.name} {format_duration(self.seconds)}"


# What a prediction says will happen: the session holds, breaks (hard or soft: DESIGN.md section 2),
# piles onto one CAS (balance), or the lab cannot tell.
EFFECTS: tuple[str, ...] = ("holds", "hard", "soft", "balance", "unknown")


@dataclass(frozen=True)
class Prediction:
    client_kind: str
    effect: str  # one of EFFECTS
    why: str

    def __str__(self) -> str:
        return f"{self.client_kind}: {self.why} ({self.effect})"


# How a reading's route ends when its listener passes the web port through at layer 4 (Reading.tcp).
PASSED_THROUGH = "the connection passes through"


@dataclass(frozen=True)
class Reading:
    """What the file does for one service, as the lab reads it."""

    service: str
    pool: str | None  # the backend / upstream / cluster its requests reach; None: the file routes it nowhere
    route: str  # how, with the line ("use_backend owa if is_owa (line 31)"), or why there is none
    persistence: Persistence | None  # the lab's method it amounts to; None: none of the lab's methods
    words: str  # the file's own words for it ("cookie SRV insert indirect nocache", "stick on src")
    timeouts: tuple[Timeout, ...] = ()
    unread: tuple[str, ...] = ()  # what the file does here that the lab cannot read (the run measures it)
    # What holds the client's CAS (a stick table, a cookie, a hash key, named so that services sharing one
    # rule have the same text): services with one rule keep a client on one CAS across them (OWA and
    # ECP, MAPI and the Address Book). "" when none does or the lab cannot tell.
    rule: str = ""
    predictions: tuple[Prediction, ...] = ()
    timers: tuple[str, ...] = ()  # what its idle timeouts cut of what the CAS holds open (timers.py)
    tcp: bool = False  # its connections pass through unread (TLS passthrough, MAPI): placed per connection

    @property
    def method(self) -> str:
        """The persistence in the lab's words, else the file's."""
        return str(self.persistence) if self.persistence is not None else f"({self.words or 'unknown'})"


@dataclass(frozen=True)
class Explanation:
    """Per service, what a user's file does and predicts (`caslab balancer explain`, the report)."""

    driver: str
    file: str
    readings: tuple[Reading, ...]  # one per service, in caslab.vocab.SERVICES order
    notes: tuple[str, ...] = ()  # about the file as a whole

    def reading(self, service: str) -> Reading:
        return next(r for r in self.readings if r.service == service)

    def unrouted(self) -> list[str]:
        """The services the file sends nowhere."""
        return [r.service for r in self.readings if r.pool is None]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Explanation:
        readings = []
        for r in data["readings"]:
            p = r["persistence"]
            readings.append(
                Reading(
                    service=r["service"],
                    pool=r["pool"],
                    route=r["route"],
                    persistence=_persistence(p) if p else None,
                    words=r["words"],
                    timeouts=tuple(Timeout(**t) for t in r["timeouts"]),
                    unread=tuple(r["unread"]),
                    rule=r.get("rule", ""),
                    predictions=tuple(Prediction(**x) for x in r["predictions"]),
                    timers=tuple(r.get("timers", ())),  # runs from before timers.py have none
                    tcp=r.get("tcp", False),
                )
            )
        return cls(data["driver"], data["file"], tuple(readings), tuple(data["notes"]))


def _persistence(data: dict) -> Persistence:
    fallback = _persistence(data["fallback"]) if data.get("fallback") else None
    return Persistence(data["method"], data["name"], data["timeout_s"], fallback)


# ---- readers ---------------------------------------------------------------------------------------


class Reader:
    """A driver's reader of user configs (the contract is the module docstring). Subclasses set the
    class attributes and implement `rewrite`, `addresses`, `readings` and `server_lines`, and `notes`
    where a file can do something that changes what a run measures beyond persistence and timeouts."""

    driver: ClassVar[str]  # its driver's name (caslab.vocab.DRIVERS)
    label: ClassVar[str]  # the balancer's name in messages: "HAProxy"
    main_file: ClassVar[str]  # the name of the main file as run (what the driver's command reads)

    def looks_like(self, text: str) -> bool:
        return guess_driver(text) == self.driver

    def rewrite(self, source: Source, place: Place) -> Adopted:
        raise NotImplementedError

    def addresses(self, files: dict[str, str]) -> list[Address]:
        raise NotImplementedError

    def readings(self, source: Source, place: Place) -> list[Reading]:
        raise NotImplementedError

    def server_lines(self, place: Place, role: str = "http", options: str = "") -> str:
        raise NotImplementedError

    def notes(self, source: Source, place: Place) -> list[str]:
        """What the file does that changes what a run measures beyond persistence and timeouts, said to
        the user before the run and in its report; none by default."""
        return []

    def connection_limit(self, source: Source, place: Place) -> ConnectionLimit | None:
        """The balancer's processes and the connections each may hold, as the file sets them; None by
        default (the file sets none the lab reads)."""
        return None

    # -- what every reader shares ---------------------------------------------------------------------

    def open(self, path: Path, place: Place, name: str | None = None) -> Source:
        """Read one file of the user's config, with the placeholders filled in for `place`."""
        from lab.balancers.userconfig.placeholders import open_source

        return open_source(self, path, place, name)

    def check_kind(self, source: Source) -> None:
        """ConfigRefused when the file is not this driver's syntax, naming the driver whose it looks like."""
        if self.looks_like(source.text):
            return
        other = guess_driver(source.text)
        if other and other != self.driver:
            why = (
                f"this looks like {ARTICLES[other]} config, not {self.label}'s; "
                f"set the scenario's driver to {other}"
            )
        else:
            why = f"this does not look like {ARTICLES[self.driver]} config"
        raise ConfigRefused(
            [Problem(source.name, 0, why)], f"{source.name} is not a config for {self.driver}"
        )

    def adopt(self, path: Path, place: Place) -> Adopted:
        """The file at `path` with the lab put into it, refused (ConfigRefused) unless every address of
        the file as run is the lab's own."""
        from lab.balancers.userconfig.safety import refusals

        if path.is_dir():
            raise ConfigRefused(
                [
                    Problem(
                        str(path),
                        0,
                        f"a folder of config files; the lab runs one {self.label} file: "
                        "join them into one (they are read in name order) and give that",
                    )
                ]
            )
        source = self.open(path, place)
        self.check_kind(source)
        adopted = self.rewrite(source, place)
        problems = refusals(self, adopted, place)
        if problems:
            raise ConfigRefused(
                problems, f"{source.name} as run would reach addresses that are not the lab's"
            )
        return adopted

    def explain(self, path: Path, place: Place | None = None) -> Explanation:
        """Per service, what the file at `path` does and predicts. Reads only; starts nothing."""
        from lab.balancers.userconfig.placeholders import example_place
        from lab.balancers.userconfig.predict import predicted
        from lab.balancers.userconfig.timers import timer_notes

        place = place or example_place()
        source = self.open(path, place)
        self.check_kind(source)
        readings = tuple(
            dataclasses.replace(r, timers=timer_notes(self.driver, r))
            for r in predicted(self.readings(source, place))
        )
        notes = []
        if source.has_placeholders:
            notes.append("placeholders filled in with the lab's addresses before reading")
        notes += self.notes(source, place)
        return Explanation(self.driver, source.name, readings, tuple(notes))


READERS: Registry[type[Reader]] = Registry("config reader", DRIVERS, __name__, lambda cls: cls.driver)
register = READERS.register

ARTICLES = {"envoy": "an Envoy", "haproxy": "an HAProxy", "nginx": "an nginx", "traefik": "a Traefik"}


def reader_for(driver: str) -> Reader:
    """The reader of `driver`'s configs; ConfigRefused naming the drivers that have one."""
    try:
        return READERS[driver]()
    except NotRegistered:
        have = ", ".join(READERS)
        why = (
            "the external driver is a VIP you run yourself: put your config on it"
            if driver == "external"
            else f"caslab cannot read {driver} configs yet"
        )
        raise ConfigRefused(
            [Problem(driver, 0, f"{why}; readers: {have}")], "no reader for this driver"
        ) from None


# Marks of each driver's syntax: (pattern, weight). The driver with the highest score wins, if it has any.
_MARKS: dict[str, tuple[tuple[str, int], ...]] = {
    "haproxy": (
        (r"^\s*(global|defaults)\s*$", 3),
        (r"^\s*(frontend|backend|listen)\s+\S+\s*$", 3),
        (r"^\s+(default_backend|use_backend|balance|stick-table|bind)\s", 2),
        (r"^\s+server\s+\S+\s+\S+:\d+(\s|$)", 1),
    ),
    "nginx": (
        (r"^\s*(http|stream|events)\s*\{", 3),
        (r"^\s*upstream\s+\S+\s*\{", 3),
        (r"^\s*server\s*\{", 2),  # a server block (HAProxy's `server` lines name a server, never a block)
        (r"^\s*(proxy_pass|listen|server_name|location)\s[^;]*;?", 2),
        (r";\s*$", 1),
    ),
    "envoy": (
        (r"static_resources", 3),
        (r"\"?@type\"?\s*:", 3),
        (r"\b(clusters|listeners|filter_chains|load_assignment|lb_endpoints)\"?\s*:", 2),
    ),
    "traefik": (
        (r"^\s*\[?http\.?(routers|services|middlewares)", 3),
        (r"^\s*(routers|services|middlewares)\s*:", 2),
        (r"\b(loadBalancer|entryPoints|sticky)\b", 2),
        (r"\brule\s*[:=]\s*[\"']?(Host|PathPrefix|Path)\(", 3),
    ),
}


def guess_driver(text: str) -> str | None:
    """The driver whose syntax `text` looks like most, or None when it looks like none of them."""
    scores = {}
    for driver, marks in _MARKS.items():
        score = 0
        for pattern, weight in marks:
            if re.search(pattern, text, re.MULTILINE):
                score += weight
        scores[driver] = score
    best = max(scores, key=lambda d: scores[d])
    return best if scores[best] >= 4 else None


class Lines:
    """A file as run, built line by line by a reader: each line with the line as written it came from
    (0: added by the lab), and the rewrites made on the way."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.lines = source.text.splitlines()
        self.out: list[str] = []
        self.origins: list[int] = []
        self.rewrites: list[Rewrite] = []

    def keep(self, index: int) -> None:
        """Line `index` (0-based) of the source's text, unchanged."""
        self.out.append(self.lines[index])
        self.origins.append(self.source.line_of(index))

    def put(self, text: str, written_line: int) -> None:
        self.out.append(text)
        self.origins.append(written_line)

    def note(self, written_line: int, was: str, now: str, rule: str) -> None:
        self.rewrites.append(Rewrite(self.source.name, written_line, was, now, rule))

    def file(self, name: str) -> AdoptedFile:
        text = "\n".join(self.out) + ("\n" if self.out else "")
        return AdoptedFile(name, self.source.name, self.source.written, text, tuple(self.origins))
