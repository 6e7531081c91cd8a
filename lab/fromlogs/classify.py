"""What one logged request says about its client: the service (from the path), the program (from the
User-Agent) and, for ActiveSync, the device (from the query). Pure functions on one value each: the
tally calls them once per distinct value, never per line.

Services are the lab's (caslab.vocab.SERVICE_PATHS: /owa, /ecp, /ews, /Microsoft-Server-ActiveSync,
/rpc, /oab, /autodiscover, any case); a path of none of them is "other" (the site's root, favicon,
a health probe of another URL).

Agent families, as Exchange 2010 sees its clients:
- outlook2010 / outlook2007: `Microsoft Office/14.0 (...; Microsoft Outlook 14.0...)` and
  `Microsoft Office/12.0 (...)`, which Outlook sends on its own HTTP calls (Autodiscover, EWS, the OAB
  manifest). Later Outlooks (15.0, 16.0) behave as 2010 does towards a balancer (they keep cookies and
  send OutlookSession), so they count as outlook2010; 11.0 (2003) as 2007 (no cookies);
- msrpc: `MSRPC`, the User-Agent of every RPC over HTTP channel, whatever the Outlook version;
- bits: `Microsoft BITS/...`, the service that fetches the OAB files for Outlook;
- eas: phones and ActiveSync apps (their requests carry DeviceId, which is what decides);
- ews-app: EWS applications (`ExchangeServicesClient/...`, the EWS Managed API, and the like);
- browser: `Mozilla/...` (every browser's agent starts so);
- other: anything else, and "none" for a line without a User-Agent.
IIS writes spaces in a User-Agent as "+"; both spellings are read.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from caslab.vocab import SERVICE_PATHS

OTHER = "other"
SERVICES: tuple[str, ...] = (OTHER, *SERVICE_PATHS)  # code 0 is "other"
AGENT_FAMILIES: tuple[str, ...] = (
    "none",
    "outlook2010",
    "outlook2007",
    "msrpc",
    "bits",
    "eas",
    "ews-app",
    "browser",
    OTHER,
)
OUTLOOK_FAMILIES = ("outlook2010", "outlook2007")

_OFFICE = re.compile(r"^Microsoft[ +]Office/(\d+)\.", re.IGNORECASE)
_EAS_AGENTS = re.compile(
    r"^(Apple-|Android|MSFT-|SAMSUNG|TouchDown|Nine|Outlook-iOS|Outlook-Android|BlackBerry|Nokia|HTC|Moto)",
    re.IGNORECASE,
)
_EWS_AGENTS = re.compile(
    r"^(ExchangeServicesClient|ExchangeWebServices|EWS|MacOutlook|Entourage)", re.IGNORECASE
)
# Fields of an ActiveSync query, for pyarrow's extract_regex (RE2), which the tally runs on a column.
DEVICE_ID_PATTERN = r"(?i)(?:^|&)DeviceId=(?P<value>[^&]*)"
DEVICE_TYPE_PATTERN = r"(?i)(?:^|&)DeviceType=(?P<value>[^&]*)"
EAS_USER_PATTERN = r"(?i)(?:^|&)User=(?P<value>[^&]*)"


def service_of(path: str) -> str:
    """The service whose virtual directory holds `path` (query already removed), else "other"."""
    lowered = path.lower()
    for service, prefixes in SERVICE_PATHS.items():
        for prefix in prefixes:
            if lowered == prefix or lowered.startswith(prefix + "/"):
                return service
    return OTHER


def agent_family(agent: str) -> str:
    """The family of a User-Agent (see the module docstring)."""
    if not agent or agent == "-":
        return "none"
    office = _OFFICE.match(agent)
    if office:
        return "outlook2007" if int(office.group(1)) <= 12 else "outlook2010"
    if agent == "MSRPC":
        return "msrpc"
    if agent.lower().startswith(("microsoft bits/", "microsoft+bits/")):
        return "bits"
    if _EAS_AGENTS.match(agent):
        return "eas"
    if _EWS_AGENTS.match(agent):
        return "ews-app"
    if agent.startswith("Mozilla/"):
        return "browser"
    return OTHER


def user_key(name: str) -> str:
    """A user name as logged (`DOMAIN\\user`, `user@domain`, `user`, URL-encoded or not) in lower case and
    decoded; "" for no user (`-`). Which spellings are one person is `person_keys`'s to say."""
    if not name or name == "-":
        return ""
    return unquote_plus(name).lower()


def person_keys(spellings: list[str]) -> tuple[list[str], str]:
    """The person each spelling (`user_key`) stands for, and a sentence when some names span tenants.

    One organisation's logs write a user as `DOMAIN\\user`, `user@domain` or `user`: one person, keyed
    by the bare name, however many UPN suffixes the organisation has. A hosted farm's logs carry several
    tenants' UPN domains, where user1@alpha.com and user1@beta.com are two people: a name that appears
    under two or more UPN domains is keyed by name and domain, its `DOMAIN\\user` spelling by the UPN
    domain (of those) whose first label is DOMAIN where exactly one is, else (and its bare spelling) by
    the name alone, as the sentence says."""
    parts = [_name_parts(s) for s in spellings]
    domains_of: dict[str, set[str]] = {}
    for local, upn, _netbios in parts:
        if upn and local:
            domains_of.setdefault(local, set()).add(upn)
    shared = {local for local, domains in domains_of.items() if len(domains) > 1}
    if not shared:
        return [local for local, _upn, _netbios in parts], ""
    keys, by_name_alone = [], 0
    for local, upn, netbios in parts:
        domain = ""
        if local in shared:
            labelled = [d for d in domains_of[local] if d.split(".", 1)[0] == netbios]
            domain = upn or (labelled[0] if len(labelled) == 1 else "")
            by_name_alone += not domain
        keys.append(f"{local}@{domain}" if domain else local)
    tenants = len({d for local in shared for d in domains_of[local]})
    alone = f"; {by_name_alone:,} spellings without such a domain by the name alone" if by_name_alone else ""
    return keys, (
        f"{len(shared):,} user names appear under {tenants} UPN domains (tenants of a hosted farm): those "
        f"are told apart by domain, their DOMAIN\\user spellings by the UPN domain whose first label is "
        f"DOMAIN{alone}"
    )


def _name_parts(spelling: str) -> tuple[str, str, str]:
    """(name, UPN domain or "", NetBIOS domain or "") of a `user_key` spelling."""
    netbios, _, rest = spelling.rpartition("\\")
    local, _, upn = rest.partition("@")
    return local, upn, netbios


def first_address(forwarded: str) -> str:
    """The client's address in an X-Forwarded-For value (its first entry; IIS writes the ", " between
    entries as ",+"), without the port some proxies add (ARR: `203.0.113.10:51234`, `[2001:db8::1]:443`);
    "" for none."""
    first = forwarded.split(",", 1)[0].replace("+", "").strip()
    if first.startswith("["):  # [IPv6]:port
        first = first[1:].split("]", 1)[0]
    elif first.count(":") == 1:  # IPv4:port (a bare IPv6 address has several colons)
        first = first.split(":", 1)[0]
    return "" if first == "-" else first
