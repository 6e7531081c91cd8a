"""What a file's idle timeouts predict against Exchange 2010's own timers, before any run
(research-timers.md has the facts and their sources; the timer scenarios measure them).

A request the CAS holds open is silent for as long as Exchange lets it be: an Outlook Anywhere channel
until its keep-alive (the CAS pings OUT after 15 minutes of silence, Outlook pings IN every 12, both
every MinimumConnectionTimeout where the CAS sets it lower: Microsoft advises 120 s), a Direct Push Ping
for its heartbeat (devices start near 9 minutes and lengthen it up to 59), an intranet Outlook's MAPI
connection for as long as its user is idle (Windows' TCP keep-alives, after 2 hours of silence, are no
activity to a full proxy). An idle timeout shorter than that cuts it.

Only the timeouts the lab has measured governing a held request are read, per driver:
- HAProxy's `timeout server` (a held Ping, an idle RPC_IN_DATA or RPC_OUT_DATA channel; the client side
  has no timer once a request is on its way) and, for MAPI, `timeout tunnel` (else the shorter of
  `timeout client` and `timeout server`);
- nginx's `proxy_read_timeout` and `client_body_timeout` (an idle IN channel) and the stream's
  `proxy_timeout`;
- Envoy's stream idle timeout: a route's `idle_timeout` where it sets one (it replaces the listener's
  `stream_idle_timeout` on that route, longer or shorter, and 0s switches it off), else the listener's; it
  watches both channels (an idle IN channel gets a 408). A route's `timeout` runs from the end of a
  request to the end of its answer: it ends a held Ping like an idle timeout, and every RPC_OUT_DATA
  channel, busy or not, since that answer lasts as long as the channel (an IN channel's request never
  ends, so it never starts there). The connection manager's `request_timeout` ends every RPC_IN_DATA
  channel likewise, and its `max_stream_duration` every channel and Ping. The tcp_proxy's
  `idle_timeout` for MAPI. 0s is never. Measured with Envoy 1.40 (tests/test_userconfig_reader_runs.py
  runs the route and request timeouts through the lab).
- Traefik's servers transport `responseHeaderTimeout`: a held Ping waits for its answer's headers. Once
  they came (an OUT channel) or while a body streams in (an IN channel), Traefik has no idle timer
  (measured with Traefik 3.7; its entry points' readTimeout is a note of the reader's: static config).
"""

from __future__ import annotations

import re

from lab.balancers.userconfig import Reading, Timeout
from lab.scenario.durations import format_duration

OUT_KEEPALIVE_S = 900.0  # the CAS pings RPC_OUT_DATA after this much silence, by default
IN_KEEPALIVE_S = 720.0  # Outlook pings RPC_IN_DATA this often, by default (CONN/A3's connection time-out)
MICROSOFT_MINIMUM_CONNECTION_TIMEOUT_S = 120.0
EAS_MIN_HEARTBEAT_S = 60.0  # Exchange 2010's MinHeartbeatInterval: a shorter Ping gets Status 5
EAS_FIRST_HEARTBEAT_S = 540.0  # devices start near 9 minutes; at or below it on average: event 1040
EAS_ADVISED_S = 900.0  # KB 905013: at least 15 minutes on the ActiveSync path
WINDOWS_KEEPALIVE_S = 7200.0

# Per driver and service, the timeouts (as the readers name them) that cut a request the CAS holds.
HELD: dict[str, dict[str, tuple[str, ...]]] = {
    "haproxy": {"rpchttp": ("timeout server",), "eas": ("timeout server",)},
    "nginx": {
        "rpchttp": ("proxy_read_timeout", "client_body_timeout"),
        "eas": ("proxy_read_timeout",),
        "mapi": ("proxy_timeout",),
        "addressbook": ("proxy_timeout",),
    },
    "traefik": {"eas": ("responseHeaderTimeout",)},
}


# Envoy's limits on the whole life of a request or an answer, not on its silence: each ends an Outlook
# Anywhere channel, busy or idle, since a channel is one request and its answer, as long as the channel
# lasts. Per limit: what it ends, why, and the fix (measured with Envoy 1.40).
LIFETIME_LIMITS = {
    "route timeout": (
        "every RPC_OUT_DATA channel",
        "it runs from the end of a request to the end of its answer, and an OUT channel's answer lasts as "
        "long as the channel",
        "set `timeout: 0s` on the route",
    ),
    "request_timeout": (
        "every RPC_IN_DATA channel",
        "it bounds the receipt of a whole request, and an IN channel's request lasts as long as the channel",
        "remove it (Envoy sets none)",
    ),
    "max_stream_duration": (
        "both channels of every Outlook Anywhere connection",
        "it bounds a request and its answer together",
        "remove it (Envoy sets none)",
    ),
}


def timer_notes(driver: str, reading: Reading) -> tuple[str, ...]:
    """What `reading`'s timeouts cut of what the CAS holds open; none when nothing (or the lab cannot tell
    for this driver)."""
    if reading.pool is None:
        return ()
    return (*_channel_lifetimes(driver, reading), *_idle_notes(driver, reading))


def _channel_lifetimes(driver: str, reading: Reading) -> list[str]:
    """Envoy's lifetime limits on Outlook Anywhere (LIFETIME_LIMITS): the end of channels, whatever they
    carry."""
    if driver != "envoy" or reading.service != "rpchttp" or reading.tcp:
        return []
    by_name, notes = _by_name(reading), []
    for name, (ends, why, fix) in LIFETIME_LIMITS.items():
        limit = by_name.get(name)
        if limit is not None and limit.seconds > 0:
            notes.append(
                f"{_said(limit)} ends {ends} {format_duration(limit.seconds)} after it opened, busy or idle "
                f"(a hard break, the virtual connection is lost): {why}; {fix} and leave idle channels to "
                "the stream idle timeout"
            )
    return notes


def _said(timeout: Timeout) -> str:
    return f"{timeout}" + (f" (line {timeout.line})" if timeout.line else "")


def _idle_notes(driver: str, reading: Reading) -> tuple[str, ...]:
    governing = _governing(driver, reading)
    if reading.service == "rpchttp":  # each timeout against the keep-alive of the channel it watches
        governing = [t for t in governing if t.seconds < _channel_keepalive_s(t)]
    if not governing:
        return ()
    shortest = min(governing, key=lambda t: t.seconds)
    t, said = shortest.seconds, _said(shortest)
    if reading.service == "rpchttp":
        words = (
            f"{said} cuts idle Outlook Anywhere channels (a hard break, the virtual connection is lost): "
            "their keep-alives come every 12 minutes (Outlook's, on IN) and 15 (the CAS's, on OUT) unless "
            f"the CAS's MinimumConnectionTimeout is set below {format_duration(t)}"
        )
        if t <= MICROSOFT_MINIMUM_CONNECTION_TIMEOUT_S:
            return (words + "; even Microsoft's 120 s is not below it: raise the timeout",)
        above = format_duration(_channel_keepalive_s(shortest))
        return (words + f" (Microsoft advises 120 s), or the timeout is raised above {above}",)
    if reading.service == "eas" and t < EAS_ADVISED_S:
        words = (
            f"{said} cuts Direct Push Pings held longer: devices start near 9 minutes and lengthen their "
            "heartbeat up to 59; Microsoft asks for at least 15 minutes on the ActiveSync path (KB 905013)"
        )
        if t <= EAS_MIN_HEARTBEAT_S:
            words += (
                "; every Ping is cut, even at the shortest heartbeat Exchange 2010 takes (60 s, "
                "MinHeartbeatInterval): Direct Push cannot work through it"
            )
        elif t <= EAS_FIRST_HEARTBEAT_S:
            words += (
                f"; devices fall back to heartbeats under {format_duration(t)}, at or below 540 s on "
                "average, and Exchange 2010 logs event 1040"
            )
        return (words,)
    if reading.service in ("mapi", "addressbook") and t < WINDOWS_KEEPALIVE_S:
        return (
            f"{said} closes an intranet Outlook's {reading.service} connection once its user is idle that "
            "long: Windows' TCP keep-alives come after 2 hours, and a full proxy does not count them as "
            "activity, so lowering KeepAliveTime on the CAS (KB 2535656) does not help here; raise the "
            "timeout above your users' idle hours",
        )
    return ()


def _channel_keepalive_s(timeout: Timeout) -> float:
    """How long an RPC/HTTP channel that `timeout` governs stays silent by default: nginx's
    client_body_timeout watches only IN, which Outlook pings every 12 minutes; the others watch OUT too,
    silent until the CAS's keep-alive after 15."""
    return IN_KEEPALIVE_S if timeout.name.startswith("client_body_timeout") else OUT_KEEPALIVE_S


def _by_name(reading: Reading) -> dict[str, Timeout]:
    """`reading`'s timeouts by name, a balancer's own default named as the file would set it."""
    return {re.sub(r" \(\w+'s default\)$", "", t.name): t for t in reading.timeouts}


def _governing(driver: str, reading: Reading) -> list[Timeout]:
    by_name = _by_name(reading)
    if driver == "envoy":
        if reading.tcp or reading.service in ("mapi", "addressbook"):
            held = [by_name.get("tcp_proxy idle_timeout")]
        else:  # the route's idle_timeout replaces the listener's on its route (see the module's words)
            held = [by_name.get("route idle_timeout") or by_name.get("stream_idle_timeout")]
            if reading.service == "eas":  # a Ping is silent until its answer: its whole life is idle
                held += [by_name.get("route timeout"), by_name.get("max_stream_duration")]
        return [t for t in held if t is not None and t.seconds > 0]  # 0s: never
    if driver == "nginx" and reading.tcp:  # a stream server passing a web port through (layer 4)
        return [by_name[name] for name in ("proxy_timeout",) if name in by_name]
    if driver == "haproxy" and reading.tcp:
        # TCP mode (MAPI, TLS passthrough): `timeout tunnel` replaces both sides once the connection has no
        # analyser left; without it, the shorter of the two sides.
        held = ("timeout tunnel",) if "timeout tunnel" in by_name else ("timeout client", "timeout server")
    else:
        held = HELD.get(driver, {}).get(reading.service, ())
    return [by_name[name] for name in held if name in by_name]
