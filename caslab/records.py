"""The two records a run is judged on (DESIGN.md section 7), as their writers write them and the
verifier reads them: the ledger row a CAS writes per request it saw, and the event row a client writes
per request it made.
"""

from __future__ import annotations

from typing import NamedTuple

# new: the request created server state; own: it used state this CAS holds; foreign: it carried state
# another CAS made (a hard break); cold: served, but this CAS had to warm up (a soft break); expired:
# its state timed out; invalid: malformed input answered with the protocol's own error; none: the
# request used no server state (a logon page, Autodiscover, OAB files, a health probe).
LEDGER_STATES: tuple[str, ...] = ("new", "own", "foreign", "cold", "expired", "invalid", "none")


class LedgerRow(NamedTuple):  # a tuple: one is made per request, on the CAS's hot path
    seq: int
    ts: float  # when the request arrived (epoch seconds)
    server: str
    service: str
    session_key: str  # what the server keyed state on (user, device, subscription, channel cookie...)
    client_ip: str  # X-Forwarded-For's first address, else the TCP peer
    state: str
    status: int  # HTTP status, or the TCP protocol's own code (0 = ok)
    request_id: str  # the client's X-CasLab-Request, for reconciliation with client events
    run_id: str  # the run the request said it belongs to (X-CasLab-Run); "" when it said none
    detail: str  # e.g. "channel-split", "context-handle-unknown", "invalid canary"
    latency_ms: float


LEDGER_COLUMNS: tuple[str, ...] = LedgerRow._fields

# One client event: who sent it (population, user, client kind, session, source address), to which
# service, who answered (X-CasLab-Server; empty when nobody did), and how it went.
EVENT_COLUMNS: tuple[str, ...] = (
    "ts",
    "population",
    "user",
    "client_kind",
    "service",
    "session",
    "source_ip",
    "server",
    "status",
    "outcome",
    "latency_ms",
    "request_id",
    "detail",
)
# ok: answered as the client wanted; foreign: the CAS did not know the client's state (a hard break);
# cold: served, but the CAS had to warm up (a soft break); error: answered with an error; transport: no
# answer at all (refused, reset, timed out); cut: a held request, channel or TCP session (an EAS Ping, an
# RPC/HTTP virtual connection, a MAPI or Address Book connection) that was closed by something other
# than the CAS's own answer, such as a balancer's idle timeout (DESIGN.md section 13). An error in error
# rates; its detail says what the client saw (CUT_DETAILS).
OUTCOMES: tuple[str, ...] = ("ok", "foreign", "cold", "error", "transport", "cut")
# The peer closed (FIN) or reset (RST) the connection; or, for a held HTTP request, a balancer gave up
# waiting and answered itself with its time-out ("http 504", "http 408").
CUT_DETAILS: tuple[str, ...] = ("eof", "reset", "http 504", "http 408")

# The ledger detail of a held request, channel or TCP session that the other side closed before the
# CAS answered or before the client said goodbye: the CAS's side of a cut. Rows before this word
# existed said "client-gone" (RPC/HTTP channels, a line-protocol client reset mid-line): same meaning.
PEER_CLOSED = "peer-closed"
PEER_CLOSED_OLD = "client-gone"
# The ledger detail of a request or channel a CAS ended because it was stopping (the lab's stop, a
# fault), not for anything the client or the balancer did.
CAS_CLOSING = "cas-closing"
# How long a CAS holds one half of an Outlook Anywhere virtual connection for its partner before it records
# the split (real seconds, not time-scaled): the CAS's default, and the verifier's words for a run that
# stopped inside it.
RPC_PAIRING_WAIT_S = 10.0

# A detail may carry figures as `name=value` words after its text, e.g. the event of an EAS Ping:
# "heartbeat=540" (answered), "eof heartbeat=840" (cut): the heartbeat the device asked for, in seconds
# of Exchange time (HEARTBEAT_FIELD), which the verifier reads for Exchange's event-1040 condition.
HEARTBEAT_FIELD = "heartbeat"
# The cut of an Outlook Anywhere virtual connection found when a keep-alive ping was overdue by more than
# KEEPALIVE_LATE_S says by how much, in seconds of the lab's time: the client's cut event, for its ping up
# IN ("eof keepalive-late=1.20"), and the CAS's ledger rows of the virtual connection closed from
# outside, for its ping down OUT ("peer-closed keepalive-late=1.20").
# The channel was silent that much longer than the protocol asks, so the balancer's idle timeout may have
# run out because the lab fell behind, not because of its setting.
KEEPALIVE_LATE_FIELD = "keepalive-late"
KEEPALIVE_LATE_S = 0.25


def detail_with(detail: str, name: str, value: object) -> str:
    """`detail` with the figure `name=value` appended (DESIGN.md section 7's documented form)."""
    return f"{detail} {name}={value}".strip()
