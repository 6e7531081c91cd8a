"""Persistence presets: one method per service (DESIGN.md section 5).

A scenario names a preset and may override single services; `resolve` merges the two.
"""

from __future__ import annotations

from caslab.vocab import SERVICES
from lab.model import Persistence

_NONE = Persistence("none")
_SRC = Persistence("source-ip")
_LB = Persistence("lb-cookie")

PRESETS: dict[str, dict[str, Persistence]] = {
    # The table of the source article, literally: each service its own backend.
    "article": {
        "owa": Persistence("app-cookie", "OutlookSession"),
        "ecp": Persistence("app-cookie", "msExchEcpCanary"),
        "ews": _LB,
        "eas": Persistence("header", "Authorization"),
        "rpchttp": Persistence("cookie-hash", "OutlookSession"),
        "oab": _SRC,
        "autodiscover": _NONE,
        "mapi": _SRC,
        "addressbook": _SRC,
    },
    # caslab's own best practice. OWA and ECP share the logon cookie, so they share one balancer cookie
    # (drivers put them on one backend); Outlook 2007 sends no OutlookSession, so RPC/HTTP falls back to
    # the source address; MAPI and Address Book are one source-IP rule across both ports.
    "recommended": {
        "owa": _LB,
        "ecp": _LB,
        "ews": _LB,
        "eas": Persistence("header", "Authorization"),
        "rpchttp": Persistence("cookie-hash", "OutlookSession", fallback=_SRC),
        "oab": _NONE,
        "autodiscover": _NONE,
        "mapi": _SRC,
        "addressbook": _SRC,
    },
    "source-ip-all": dict.fromkeys(SERVICES, _SRC),
    # A balancer cookie cannot exist on plain TCP: MAPI and Address Book keep source IP there.
    "lb-cookie-all": {**dict.fromkeys(SERVICES, _LB), "mapi": _SRC, "addressbook": _SRC},
    "none-all": dict.fromkeys(SERVICES, _NONE),
}


def resolve(preset: str, overrides: dict[str, Persistence] | None = None) -> dict[str, Persistence]:
    """The per-service methods of `preset` with `overrides` applied. Raises KeyError for an unknown
    preset or service, with the allowed names in the message."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    methods = dict(PRESETS[preset])
    for service, persistence in (overrides or {}).items():
        if service not in methods:
            raise KeyError(f"unknown service {service!r}; allowed: {', '.join(SERVICES)}")
        methods[service] = persistence
    return methods
