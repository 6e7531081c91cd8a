"""Who the clients were: the tally's activity turned into one row per client program, with its kind.

A client is what the lab calls a client kind's instance (DESIGN.md section 4), told from what a log
shows of it:
- an ActiveSync device (`eas-device`): one DeviceId, wherever it connected from;
- the rest, per user and address (a user's Outlook at the office and at home are two clients):
  - `browser`: a Mozilla User-Agent on /owa or /ecp;
  - Outlook: its own agent (`Microsoft Office/14.0` or `12.0`) on Autodiscover, EWS and the OAB
    manifest, BITS for the OAB files, and `MSRPC` on its RPC over HTTP channels. With RPC over HTTP it
    is `outlook2010-rpchttp` or `outlook2007-rpchttp` by the version of its agent (2010 when it named
    none: later versions and 2010 behave alike towards a balancer; each version seen at one address
    and user is one Outlook); without, it reached its mailbox over MAPI, which IIS does not log:
    `outlook-mapi`;
  - `ews-app`: an EWS application's agent (or an unknown agent) on /EWS.
Requests of no client (no user: logon pages, 401 challenges, a balancer's health probes; or a path of
no Exchange service) are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.fromlogs.classify import OTHER, SERVICES
from lab.fromlogs.tally import Observed

OUTLOOK_ROLE_FAMILIES = ("msrpc", "outlook2010", "outlook2007", "bits")
BROWSER_SERVICES = ("owa", "ecp")


@dataclass(frozen=True)
class Clients:
    """The clients (`table`: one row each) and what the activity rows of each were (`rows`)."""

    # kind, user, device, person, address (where it made most requests), requests, first and last
    # (seconds of the logs' clock). A person is a user id, or -(device + 1) for a device that named none.
    table: pd.DataFrame
    # the activity rows that belong to a client, with its index in `table` as column `client_id`
    rows: pd.DataFrame
    unattributed: int  # requests to Exchange services of no client: no user name (logon pages, probes)
    not_exchange: int  # requests to paths of no Exchange service
    unmodelled: int = 0  # requests that named a user, from a program of no client kind the lab models
    rpc_only: int = 0  # Outlooks that sent MSRPC channels and nothing naming their version
    rpc_only_as: str = ""  # the version they were read as ("2010", "2007")


def find_clients(observed: Observed) -> Clients:
    activity = observed.activity.copy()
    families = np.asarray(observed.agent_families, dtype=object)
    activity["family"] = families[activity["agent"].to_numpy()] if len(activity) else []
    activity["service_name"] = np.asarray(SERVICES, dtype=object)[activity["service"].to_numpy()]
    exchange = activity["service_name"] != OTHER
    not_exchange = int(activity.loc[~exchange, "requests"].sum())
    activity = activity[exchange]

    role = np.select(
        [
            activity["device"] > 0,
            (activity["family"] == "browser") & activity["service_name"].isin(BROWSER_SERVICES),
            activity["family"].isin(OUTLOOK_ROLE_FAMILIES),
            activity["family"].isin(("ews-app", OTHER)) & (activity["service_name"] == "ews"),
        ],
        ["eas-device", "browser", "outlook", "ews-app"],
        default="",
    )
    activity = activity.assign(role=role)
    named = (activity["role"] == "eas-device") | ((activity["role"] != "") & (activity["user"] > 0))
    unattributed = int(activity.loc[~named & (activity["user"] == 0), "requests"].sum())
    unmodelled = int(activity.loc[~named & (activity["user"] > 0), "requests"].sum())
    activity = activity[named].copy()
    activity["kind"] = activity["role"]
    outlook = activity["role"] == "outlook"
    rpc_only, rpc_only_as = 0, ""
    if outlook.any():
        activity.loc[outlook, "kind"], rpc_only_as, rpc_only = _outlook_kinds(activity[outlook])
    activity = activity[activity["kind"] != ""]

    devices = activity["kind"] == "eas-device"
    key = np.where(
        devices,
        "d" + activity["device"].astype(str),
        activity["kind"] + "/" + activity["client"].astype(str) + "/" + activity["user"].astype(str),
    )
    activity["client_id"], _ = pd.factorize(key)
    table = activity.groupby("client_id").agg(
        kind=("kind", "first"),
        device=("device", "max"),
        requests=("requests", "sum"),
        first=("first", "min"),
        last=("last", "max"),
    )
    table["user"] = _main_value(activity, "user", nonzero=True)
    table["address"] = _main_value(activity, "client")
    table["person"] = np.where(table["user"] > 0, table["user"], -table["device"] - 1)
    return Clients(table, activity, unattributed, not_exchange, unmodelled, rpc_only, rpc_only_as)


def _outlook_kinds(rows: pd.DataFrame) -> tuple[pd.Series, str, int]:
    """The kind of each Outlook row, decided per (address, user) by what that Outlook sent. Each Office
    version seen there is one Outlook (a person may run two); the MSRPC channels, which do not say
    their version, go to the newest, and make every Outlook there one over RPC/HTTP. MSRPC channels with
    no version seen at all (Outlook 2003, which has no Autodiscover or EWS, or an Outlook whose other
    requests are in logs not read) take the version most of the Outlooks the logs do name run, and
    2007 (which returns no cookie, the harder case for a balancer) when as many or more run 2007.
    Returns the kinds, that version and how many Outlooks took it."""
    family = rows["family"]
    flags = pd.DataFrame(
        {
            "client": rows["client"],
            "user": rows["user"],
            "rpc": family == "msrpc",
            "v2010": family == "outlook2010",
            "v2007": family == "outlook2007",
        }
    )
    seen = flags.groupby(["client", "user"]).transform("max")  # per row: what its Outlook sent at all
    outlooks = flags.groupby(["client", "user"])[["rpc", "v2010", "v2007"]].max()  # one row per Outlook
    unnamed = "2010" if outlooks["v2010"].sum() > (outlooks["v2007"] & ~outlooks["v2010"]).sum() else "2007"
    rpc_only = int((outlooks["rpc"] & ~outlooks["v2010"] & ~outlooks["v2007"]).sum())
    version = np.where(
        family == "outlook2007",
        "2007",
        np.where(
            (family == "outlook2010") | seen["v2010"],
            "2010",
            np.where(seen["v2007"], "2007", unnamed),
        ),
    )  # the MSRPC and BITS rows go to the newest version seen (`unnamed` when none is)
    kind = np.where(
        seen["rpc"],
        np.where(version == "2007", "outlook2007-rpchttp", "outlook2010-rpchttp"),
        np.where(seen["v2010"] | seen["v2007"], "outlook-mapi", ""),  # BITS alone: no Outlook seen
    )
    return pd.Series(kind, index=rows.index), unnamed, rpc_only


def _main_value(rows: pd.DataFrame, column: str, nonzero: bool = False) -> pd.Series:
    """Per client, the value of `column` with the most requests (ignoring 0 when `nonzero`)."""
    chosen = rows[rows[column] > 0] if nonzero else rows
    totals = chosen.groupby(["client_id", column])["requests"].sum().reset_index()
    best = totals.sort_values("requests", kind="stable").groupby("client_id").tail(1)
    return best.set_index("client_id")[column].reindex(rows["client_id"].unique(), fill_value=0)
