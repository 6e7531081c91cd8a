"""What the report's Timers section says (DESIGN.md section 13): the cuts per service from both sides,
the heartbeats ActiveSync devices asked for, why sessions moved, and what to do about what it found,
in the words of Microsoft's guidance (research-timers.md). The plots are in plots.py.

In a run of the user's own balancer file, a cut service whose reading says what the file's timeouts cut
(`caslab balancer explain`'s timers: lab.balancers.userconfig.timers) is advised from that: the file's
own timeout and its fix, rather than the scenario's timeouts, which did not run (a route timeout that
ends busy channels is no matter of keep-alives)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from lab.scenario import Scenario, format_duration
from lab.verifier import CAUSES, Analysis

if TYPE_CHECKING:
    from lab.balancers.userconfig import Explanation

# Drivers of the lab that end TCP themselves (a full proxy), as against a device that forwards packets.
FULL_PROXIES = {"haproxy": "HAProxy", "nginx": "nginx", "envoy": "Envoy", "traefik": "Traefik"}
WINDOWS_KEEPALIVE_S = 7200  # Windows' default KeepAliveTime, the CAS's when the scenario sets none


@dataclass(frozen=True)
class TimersSection:
    cuts: pd.DataFrame | None  # service: cut (clients), cut_seen_by_cas; None when nothing was cut
    heartbeat: str  # the EAS heartbeat figures in words ("" when no device pinged)
    moves: pd.DataFrame | None  # service x cause: "moves (broke)"; None when no session moved
    advice: list[str]  # what the findings mean and what fixes them


def timers_section(
    analysis: Analysis, driver: str, scenario: Scenario, explanation: Explanation | None = None
) -> TimersSection:
    """The section; `explanation`: the user's own file as the lab read it, when the run had one."""
    services, timers = analysis.services, analysis.timers
    cut = services[["cut", "cut_seen_by_cas"]]
    cut = cut[(cut["cut"] > 0) | (cut["cut_seen_by_cas"] > 0)]
    cut = cut.rename(columns={"cut": "cut (clients saw)", "cut_seen_by_cas": "closed by the peer (CAS saw)"})
    moves = timers.moves
    moved = moves[moves.sum(axis=1) > 0] if not moves.empty else moves
    table = None
    if not moved.empty:
        broke = timers.move_breaks.loc[moved.index]
        table = pd.DataFrame(
            {c: [_moves(n, b) for n, b in zip(moved[c], broke[c], strict=True)] for c in CAUSES},
            index=moved.index,
        )
    return TimersSection(
        cuts=cut if not cut.empty else None,
        heartbeat=_heartbeat_words(timers.eas_heartbeat),
        moves=table,
        advice=_advice(services["cut"], timers.eas_heartbeat, moved, driver, scenario, explanation),
    )


def _moves(n: int, broke: int) -> str:
    return "–" if not n else f"{n:,}" if not broke else f"{n:,} ({broke:,} broke)"


def _heartbeat_words(figures: dict | None) -> str:
    if figures is None:
        return ""
    words = (
        f"{figures['pings']:,} Pings asked for heartbeats of {figures['min_s']:,} to {figures['max_s']:,} s, "
        f"{figures['mean_s']:,.0f} s on average; the last {min(figures['pings'], 200)} averaged "
        f"{figures['recent_mean_s']:,.0f} s"
    )
    if figures["alert"]:
        return words + ": at or below 540 s, Exchange 2010 logs event 1040 (Direct Push is not working well)."
    return words + ": above 540 s, no event 1040."


def _advice(
    cuts: pd.Series,
    heartbeat: dict | None,
    moved: pd.DataFrame,
    driver: str,
    scenario: Scenario,
    explanation: Explanation | None,
) -> list[str]:
    advice = []
    if cuts.get("rpchttp", 0):
        advice += _from_file(explanation, "rpchttp") or [_rpchttp_advice(driver, scenario)]
    if cuts.get("eas", 0) or (heartbeat is not None and heartbeat["alert"]):
        advice += _from_file(explanation, "eas") or [
            "ActiveSync Pings were cut before their heartbeat ended, and devices fall back to short "
            "heartbeats (battery, more requests). Microsoft (KB 905013) asks for idle timeouts of at least "
            "15 minutes on the ActiveSync path; 30 minutes lets devices keep their longest heartbeats."
        ]
    if cuts.get("mapi", 0) or cuts.get("addressbook", 0):
        tcp = [*_from_file(explanation, "mapi"), *_from_file(explanation, "addressbook")]
        advice += list(dict.fromkeys(tcp)) or [_mapi_advice(driver, scenario)]
    causes = moved.sum() if not moved.empty else pd.Series(dtype=int)
    if causes.get("expired", 0):
        advice.append(
            "Persistence entries expired while users were idle, and the users moved: raise the persistence "
            "timeout above the users' idle time (OWA's logon lives 15 minutes idle on a public computer, "
            "8 hours on a private one)."
        )
    if causes.get("evicted", 0):
        advice.append(
            "The persistence table was full, so the balancer dropped entries of idle users, who moved: "
            "raise persistence_table_size above the number of keys live at once."
        )
    return advice


def _from_file(explanation: Explanation | None, service: str) -> list[str]:
    """What the user's file's own timeouts cut of `service`, as explain said it; none without a file, or
    where the lab read no timeout of the file's that does (the generic advice stands then)."""
    if explanation is None:
        return []
    return [f"Your file {explanation.file}: {note}." for note in explanation.reading(service).timers]


def _rpchttp_advice(driver: str, scenario: Scenario) -> str:
    """Outlook Anywhere channels cut: Microsoft's fix, or, where the CAS has it already and the channels
    were cut all the same, what to look for in the balancer."""
    keepalive = scenario.farm.exchange.rpc_min_connection_timeout_s
    idle = scenario.balancer.timeouts.of("rpchttp").idle_s
    if keepalive is None or idle is None or keepalive >= idle:
        return (
            "Outlook Anywhere channels were cut while idle: by default the CAS keeps them alive only every "
            "12 minutes (IN) and 15 minutes (OUT). Set the RPC proxy's MinimumConnectionTimeout to 120 s on "
            "every CAS ([farm.exchange] rpc_min_connection_timeout), or raise the balancer's idle timeout "
            "for RPC/HTTP above 15 minutes."
        )
    return (
        f"Outlook Anywhere channels were cut although the CAS keeps them alive every "
        f"{format_duration(keepalive)} (MinimumConnectionTimeout), within the balancer's idle timeout of "
        f"{format_duration(idle)}: something closed channels that were not silent that long. Check that the "
        "balancer's timeout for RPC/HTTP counts silence in both directions, not the age of a request or a "
        "connection (the RPC proxy answers an RPC_IN_DATA channel only when the channel ends); the fix is "
        "then its own timeout for RPC/HTTP ([balancer.timeouts] rpchttp = { server_idle = ... }), longer "
        "than Outlook keeps a channel open."
    )


def _mapi_advice(driver: str, scenario: Scenario) -> str:
    """Intranet Outlook connections cut: Microsoft's fix (a shorter KeepAliveTime) and where it holds. On
    a full proxy it does not, and where the scenario set it and the cut stayed, the advice says so."""
    keepalive = scenario.farm.exchange.tcp_keepalive_s or WINDOWS_KEEPALIVE_S
    idle = scenario.balancer.timeouts.of("mapi").idle_s
    proxy = FULL_PROXIES.get(driver)
    words = (
        "Intranet Outlook connections were cut while idle: nothing crosses them but the CAS's TCP "
        f"keep-alives, after its KeepAliveTime of {format_duration(keepalive)} of silence. "
    )
    fix = (
        "Microsoft's fix (KB 2535656), a KeepAliveTime below the device's idle timeout, holds for "
        "devices that forward packets only (a firewall, an appliance in L4 mode), where the probes are "
        "activity. "
    )
    if proxy and idle is not None and keepalive < idle:
        words += (
            f"That is shorter than the balancer's idle timeout of {format_duration(idle)}, and they were cut "
            f"all the same. {fix}{proxy} is a full proxy: it ends TCP itself, its kernel answers the probes "
            "and it sees no data, so its idle timer runs on. "
        )
    elif proxy:
        words += (
            f"{fix}{proxy} is a full proxy: it ends TCP itself, its kernel answers the probes and it sees "
            "no data, so lowering KeepAliveTime does not help here. "
        )
    else:
        words += f"{fix}On a full proxy the probes are no activity. "
    return words + (
        "The fix that works on a proxy is its own idle timeout for the MAPI and Address Book ports "
        "([balancer.timeouts] mapi and addressbook), longer than Outlook leaves a connection idle."
    )
