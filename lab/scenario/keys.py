"""The keys of a scenario file, declared once: for each table its keys, their types, allowed values,
defaults and a sentence saying what each one does.

Two readers use these declarations and nothing else: `lab.scenario.reader` reads a file by them (the
allowed keys, a value's type, choices and limits, so its errors name them) and `lab.scenario.schema`
turns them into the JSON Schema editors check as people type. A key added here is in both at once.

Types: "string", "integer", "number" (never negative), "boolean", "duration" (lab.scenario.durations),
"table" (its `keys`), "tables" (an array of tables, [[name]], each with `keys`) and "persistence" (a
string such as "cookie-hash OutlookSession" or a table with `keys`). A scalar key with `keys` also takes
a table of them: a limit for the whole run, or one per service.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from caslab.vocab import CLIENT_KINDS, DRIVERS, FAULT_ACTIONS, METHODS, SERVICES, TLS_MODES, TOPOLOGIES
from lab.balancers.presets import PRESETS
from lab.scenario.model import DEFAULT_THRESHOLDS, EXPECTATIONS, MAX_SERVERS, POPULATION_KINDS

TYPES = ("string", "integer", "number", "boolean", "duration", "table", "tables", "persistence")


@dataclass(frozen=True)
class Key:
    """One key of a scenario file."""

    name: str
    type: str  # one of TYPES
    help: str  # one sentence: what it does, shown by editors
    choices: tuple[str, ...] = ()  # the allowed values of a string
    default: str | int | float | bool | None = None  # the value when the key is left out, if fixed
    required: bool = False
    minimum: int | None = None  # the smallest integer allowed
    maximum: int | float | None = None  # the largest allowed (a share: the reader says so in its words)
    positive: bool = False  # a number above 0 (every number is at least 0)
    keys: tuple[Key, ...] = ()  # of a table, an array of tables, a persistence table, or per service

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"scenario key {self.name!r}: unknown type {self.type!r}; types: {TYPES}")


def per_service(key: Key) -> Key:
    """`key`, which also takes a table with the same kind of value per service (`{ eas = 5 }`)."""
    services = tuple(replace(key, name=s, help=f"{key.help} For {s}.", default=None) for s in SERVICES)
    return replace(key, keys=services)


# ---- [balancer] ------------------------------------------------------------------------------------

NAMED_METHODS = tuple(m for m, takes_name in METHODS.items() if takes_name)
FALLBACK_KEYS = (
    Key(
        "method",
        "string",
        "How the balancer keeps a client on one CAS (DESIGN.md section 5).",
        choices=tuple(METHODS),
        required=True,
    ),
    Key(
        "name",
        "string",
        f"The cookie or header the method reads; needed by {', '.join(NAMED_METHODS)}, taken by no other.",
    ),
    Key(
        "timeout",
        "duration",
        "Idle lifetime of a stick entry or balancer cookie, in Exchange time (divided by time_scale).",
        default="30m",
    ),
)
PERSISTENCE_KEYS = (
    *FALLBACK_KEYS,
    Key(
        "fallback",
        "persistence",
        "The method used when the first finds nothing to read (e.g. Outlook 2007 sends no cookie).",
        keys=FALLBACK_KEYS,
    ),
)
HEALTH_KEYS = (
    Key("interval", "duration", "Time between the balancer's health probes of each CAS.", default="1s"),
    Key("fall", "integer", "Failed probes in a row before a CAS is taken out.", default=2, minimum=1),
    Key("rise", "integer", "Good probes in a row before it is taken back.", default=2, minimum=1),
)
IDLE_KEYS = (
    Key(
        "client_idle",
        "duration",
        "A client's connection to the balancer that is silent both ways this long is closed, in Exchange "
        "time (divided by time_scale). Left out: the driver's long default (an hour).",
    ),
    Key(
        "server_idle",
        "duration",
        "A connection from the balancer to a CAS that is silent both ways this long is closed, in Exchange "
        "time (divided by time_scale). Left out: the driver's long default (an hour).",
    ),
)
TIMEOUT_KEYS = (
    *IDLE_KEYS,
    *(
        Key(s, "table", f"The idle timeouts of {s}, where they differ from the ones above.", keys=IDLE_KEYS)
        for s in SERVICES
    ),
)
BALANCER_KEYS = (
    Key(
        "driver",
        "string",
        "The balancer: envoy, haproxy, nginx, traefik, or external (a VIP you run yourself).",
        choices=tuple(sorted(DRIVERS)),
        default=DRIVERS[0],
    ),
    Key(
        "topology",
        "string",
        "single-vip: one address for every service; vip-per-service: one address per service group.",
        choices=TOPOLOGIES,
        default="single-vip",
    ),
    Key(
        "preset",
        "string",
        "The persistence method of every service, as a named set (lab/balancers/presets.py).",
        choices=tuple(PRESETS),
        default="recommended",
    ),
    Key(
        "persistence",
        "table",
        'Per-service overrides of the preset: "source-ip", "cookie-hash OutlookSession" or '
        '{ method = "header", name = "Authorization", timeout = "45m" }.',
        keys=tuple(
            Key(s, "persistence", f"How the balancer keeps {s} clients on one CAS.", keys=PERSISTENCE_KEYS)
            for s in SERVICES
        ),
    ),
    Key("health", "table", "How the balancer probes each CAS.", keys=HEALTH_KEYS),
    Key(
        "timeouts",
        "table",
        "The balancer's idle timeouts (DESIGN.md section 13), and per-service ones: "
        'rpchttp = { client_idle = "20m" }.',
        keys=TIMEOUT_KEYS,
    ),
    Key(
        "persistence_table_size",
        "integer",
        "Records a persistence table (stick table) holds; the oldest go when it is full. Left out: the "
        "driver's default.",
        minimum=1,
    ),
    Key(
        "config",
        "string",
        "Your own config file for `driver`, run as written with the lab put into it (its servers become "
        "the farm's CAS, its listeners move to the VIP); relative to this file. Presets and persistence "
        "then do not apply.",
    ),
)

# ---- [farm] ----------------------------------------------------------------------------------------

# Exchange 2010 accepts heartbeat limits in this range (research/research-timers.md; MS-ASCMD gives
# 60..3540 s as Exchange 2010's heartbeats, Exchange 2003 allowed a minimum from 1 s).
HEARTBEAT_RANGE_S = (1.0, 3540.0)
HEARTBEAT_KEYS = (
    Key(
        "min", "duration", "MinHeartbeatInterval: the shortest Ping heartbeat the CAS accepts.", default="60s"
    ),
    Key(
        "max", "duration", "MaxHeartbeatInterval: the longest Ping heartbeat the CAS accepts.", default="59m"
    ),
)
EXCHANGE_KEYS = (
    Key(
        "rpc_min_connection_timeout",
        "duration",
        "RPC MinimumConnectionTimeout: Outlook Anywhere's keep-alive interval, announced by the RPC proxy. "
        "Left out: Exchange's defaults, 12 minutes client to server and 15 minutes server to client.",
    ),
    Key(
        "eas_heartbeat",
        "table",
        "The ActiveSync Ping heartbeats the CAS accepts; a Ping outside them gets Status 5 and the limit.",
        keys=HEARTBEAT_KEYS,
    ),
    Key(
        "owa_timeout", "duration", "How long an idle OWA forms logon lives (public computer).", default="15m"
    ),
    Key(
        "tcp_keepalive",
        "duration",
        "Windows KeepAliveTime: TCP keep-alives on MAPI and Address Book connections after this silence.",
        default="2h",
    ),
)
FARM_KEYS = (
    Key(
        "servers",
        "integer",
        "Number of mock CAS: CAS01, CAS02, ...",
        default=3,
        minimum=1,
        maximum=MAX_SERVERS,
    ),
    Key(
        "tls",
        "string",
        "Where TLS ends: none (plain HTTP), offload (at the balancer), bridge (at the balancer and again "
        "to each CAS), passthrough (at the CAS; the balancer sees only TCP).",
        choices=TLS_MODES,
        default="none",
    ),
    Key(
        "tls_max_version",
        "string",
        "The highest TLS version the clients offer: 1.3, or 1.2 as the Windows 7 and iOS clients of "
        "Exchange 2010's time did (they resume sessions by ID, which ssl-session-id persistence keys on; "
        "TLS 1.3 offers a fresh ID in every hello).",
        choices=("1.2", "1.3"),
        default="1.3",
    ),
    Key(
        "oab_skew",
        "boolean",
        "The CAS serve different versions of the Offline Address Book (DESIGN.md section 3).",
        default=False,
    ),
    Key(
        "exchange",
        "table",
        "Settings of every CAS, named after Exchange and Windows settings, in Exchange time (divided by "
        "time_scale); DESIGN.md section 13.",
        keys=EXCHANGE_KEYS,
    ),
)

# ---- [[population]] and [[fault]] ------------------------------------------------------------------

POPULATION_KEYS = (
    Key(
        "kind",
        "string",
        "Who the users are: tenant-nat (behind an office NAT), mobile-carrier (phones behind carrier NAT), "
        "intranet, citrix (a terminal farm), direct (home users); DESIGN.md section 6.",
        choices=tuple(POPULATION_KINDS),
        required=True,
    ),
    Key(
        "name",
        "string",
        "The population's label in events and reports; default the kind (kind#index when it repeats).",
    ),
    Key("users", "integer", "Number of users.", required=True, minimum=1),
    Key(
        "source_ips",
        "integer",
        "Distinct source addresses the users share (at most one per user); not for intranet and direct "
        "users, who each have their own.",
        minimum=1,
    ),
    Key(
        "clients",
        "table",
        "Share of users (0 to 1) running each client kind; shares may sum above 1. Default: the kind's mix.",
        keys=tuple(
            Key(c, "number", f"Share of users running {c}, from 0 to 1.", maximum=1) for c in CLIENT_KINDS
        ),
    ),
    Key(
        "ip_change_every",
        "duration",
        "mobile-carrier: each device moves to another address of the pool this often, in Exchange time.",
    ),
    Key(
        "keeps_cookies",
        "boolean",
        "Whether ews-app clients keep cookies (DESIGN.md section 4).",
        default=True,
    ),
)
FAULT_KEYS = (
    Key(
        "at",
        "duration",
        "When, counted from the start of the load phase (after the ramp); before its end.",
        required=True,
    ),
    Key("server", "string", "Which CAS: CAS01, CAS02, ...", required=True),
    Key(
        "action",
        "string",
        "stop / start the CAS, drain it (no new sessions), or make its health probe fail / pass.",
        choices=FAULT_ACTIONS,
        required=True,
    ),
)

# ---- [thresholds] ----------------------------------------------------------------------------------

THRESHOLD_KEYS = (  # the fields of lab.scenario.model.Thresholds
    per_service(
        Key(
            "hard_breaks",
            "integer",
            "Most sessions allowed to break (the user must log on again).",
            minimum=0,
        )
    ),
    per_service(
        Key("split_sessions_pct", "number", "Most sessions allowed to be served by more than one CAS, in %.")
    ),
    Key("balance_max_over_mean", "number", "Most requests of the busiest CAS over the mean of all CAS."),
    Key("error_rate_pct", "number", "Most client requests allowed to fail, in %."),
    Key(
        "fault_collateral_breaks",
        "integer",
        "Most sessions allowed to break while a CAS was out that were not on that CAS (needs a [[fault]]).",
        minimum=0,
    ),
    per_service(
        Key(
            "cut",
            "integer",
            "Most held requests, channels and TCP sessions allowed to be closed by anything but the CAS's "
            "own answer (DESIGN.md section 13).",
            minimum=0,
        )
    ),
    Key(
        "eas_heartbeat_alert",
        "boolean",
        "The allowed value of Exchange 2010's heartbeat alert (event 1040: mean heartbeat at most 540 s); "
        "false: the run fails when the alert condition holds.",
    ),
)

# ---- the file ----------------------------------------------------------------------------------------

DRIVER_EXPECTATION_KEYS = (
    Key("expect", "string", "The verdict on this driver.", choices=EXPECTATIONS, required=True),
    Key(
        "reason",
        "string",
        "Why this driver gives another verdict than the known answer (shown in the report).",
        required=True,
    ),
)

TOP_KEYS = (
    Key(
        "name",
        "string",
        "The scenario's name: its report goes to reports/<name>-<UTC time>/. Default: the file name.",
    ),
    Key("description", "string", "One line saying what the scenario shows (caslab scenarios, the report)."),
    Key(
        "expect",
        "string",
        "The verdict the scenario is meant to produce (a known answer).",
        choices=EXPECTATIONS,
    ),
    Key(
        "expect_by_driver",
        "table",
        "Drivers on which the known answer does not hold, each with the verdict it gives instead and why: "
        'haproxy = { expect = "fail", reason = "..." }.',
        keys=tuple(
            Key(
                d,
                "table",
                f"The verdict the scenario is meant to produce on {d}, where it differs from expect.",
                keys=DRIVER_EXPECTATION_KEYS,
            )
            for d in DRIVERS
        ),
    ),
    Key("duration", "duration", "Length of the load phase, after the ramp (wall-clock time).", default="60s"),
    Key("ramp", "duration", "Time over which the users start, before the load phase.", default="0s"),
    Key(
        "time_scale",
        "number",
        "Exchange's own times (protocol timers, persistence timeouts, ip_change_every) run this many "
        "times faster.",
        default=1,
        positive=True,
    ),
    Key("seed", "integer", "Seed of the run's random choices, for repeatable runs.", default=0),
    Key("farm", "table", "The farm of mock Exchange 2010 CAS.", keys=FARM_KEYS),
    Key(
        "balancer", "table", "The load balancer in front of the farm and its persistence.", keys=BALANCER_KEYS
    ),
    Key(
        "population",
        "tables",
        "A group of users of one kind: [[population]], one or more.",
        required=True,
        keys=POPULATION_KEYS,
    ),
    Key("fault", "tables", "Something done to one CAS during the load: [[fault]].", keys=FAULT_KEYS),
    Key(
        "thresholds",
        "table",
        "Limits the run must stay within. Left out: "
        + ", ".join(f"{k} = {v:g}" for k, v in asdict(DEFAULT_THRESHOLDS).items() if v is not None),
        keys=THRESHOLD_KEYS,
    ),
)
