"""The settings of one mock CAS (the flags of `caslab cas`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from caslab.records import RPC_PAIRING_WAIT_S
from caslab.vocab import AB_PORT, ADMIN_PORT, HTTP_PORT, HTTPS_PORT, MAPI_PORT


@dataclass
class CasConfig:
    name: str = "CAS01"
    host: str = "127.0.1.11"
    http_port: int = HTTP_PORT
    https_port: int = HTTPS_PORT  # used only when cert_file is set
    mapi_port: int = MAPI_PORT
    ab_port: int = AB_PORT
    admin_port: int = ADMIN_PORT
    # State that lives in the mailbox (EAS policy/sync keys, OAB content): any CAS of the farm accepts it.
    farm_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # State only this CAS accepts (OWA/ECP logon cookies, MAPI context handles). Random unless seeded.
    key_seed: str | None = None
    time_scale: float = 1.0  # protocol timers (idle expiry, heartbeats, keep-alives) run this much faster
    users: int = 100_000  # user1..userN@caslab.test
    password: str = "caslab"
    domain: str = "caslab.test"
    vip_host: str = "mail.caslab.test"  # what Autodiscover hands out (EXCH/EXPR and EAS URLs)
    cert_file: Path | None = None
    key_file: Path | None = None
    oab_skew: bool = False  # CAS differ in OAB version: a download spread over two CAS fails its checksum
    eas_cold_cost_ms: float = 40.0  # extra cost when a device is new to this CAS (assumed size)
    ab_referral_cost_ms: float = 20.0  # an Address Book bind referred to the user's CAS (assumed size)
    rpc_pairing_wait_s: float = (
        RPC_PAIRING_WAIT_S  # not time-scaled: a lone RPC/HTTP channel is closed after this
    )
    max_body_bytes: int = 1 << 20  # bodies above this are refused (RPC_IN_DATA streams, it is not read whole)
    # Exchange/Windows settings of the CAS (DESIGN.md section 13), in seconds of Exchange time (scaled):
    # the RPC proxy's MinimumConnectionTimeout (None: not set, so the defaults 720 s IN / 900 s OUT hold).
    rpc_min_connection_timeout_s: float | None = None
    eas_heartbeat_min_s: float = 60  # MinHeartbeatInterval: a Ping asking for less gets Status 5
    eas_heartbeat_max_s: float = 3540  # MaxHeartbeatInterval: a Ping asking for more gets Status 5
    owa_timeout_s: float = 900  # the forms logon's idle lifetime (public computer)
    tcp_keepalive_s: float = 7200  # Windows KeepAliveTime on MAPI and Address Book connections
    # The run this CAS serves: its admin answers name it, so a lab can tell its own CAS from another
    # lab's on the same address (the run id of each request is in the request: X-CasLab-Run).
    run_id: str = ""
    # Where this CAS writes its IIS W3C log (u_exYYMMDD.log, mockcas.w3c); None writes none.
    w3c_log_dir: Path | None = None

    def scaled(self, seconds: float) -> float:
        """A protocol timer of `seconds` real Exchange time, in this lab's time."""
        return seconds / self.time_scale
