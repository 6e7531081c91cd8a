"""What a persistence read from a user's file predicts for each client kind, before anything runs.

From what each client kind carries (DESIGN.md section 4: the cookies it keeps, the cookie Outlook 2010
makes itself, Basic `Authorization`, its source address) and what each service needs (section 3: hard,
soft or no affinity), the known answers of section 12 follow: a balancer cookie is never returned by an
ActiveSync device or Outlook 2007, a source address is shared by a whole NAT-ed tenant, a cookie that is
hashed is not learned. The lab's own method names are read (lab.model.Persistence); a persistence the lab
cannot name is "unknown" here, and the run measures it all the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from caslab.vocab import CLIENT_KINDS, TCP_SERVICES
from lab.balancers.userconfig import Prediction, Reading
from lab.model import Persistence

# The services each client kind uses (DESIGN.md section 4).
KIND_SERVICES: dict[str, tuple[str, ...]] = {
    "browser": ("owa", "ecp"),
    "outlook2010-rpchttp": ("autodiscover", "rpchttp", "ews", "oab"),
    "outlook2007-rpchttp": ("autodiscover", "rpchttp", "ews", "oab"),
    "outlook-mapi": ("autodiscover", "mapi", "addressbook", "ews", "oab"),
    "eas-device": ("autodiscover", "eas"),
    "ews-app": ("ews",),
}

# How much a service needs one CAS per session (DESIGN.md section 3), and what its break looks like.
NEED: dict[str, str] = {
    "owa": "hard", "ecp": "hard", "ews": "hard", "eas": "soft", "rpchttp": "hard",
    "oab": "none", "autodiscover": "none", "mapi": "hard", "addressbook": "soft",
}  # fmt: skip
BREAK: dict[str, str] = {
    "owa": "sent back to the logon page (logged off)",
    "ecp": "logged off, or its canary refused",
    "ews": "pull subscriptions lost (ErrorSubscriptionNotFound)",
    "eas": "split sessions: a cold cache on every other CAS",
    "rpchttp": "IN and OUT channels of a pair split",
    "oab": "nothing (no affinity needed)",
    "autodiscover": "nothing (no affinity needed)",
    "mapi": "context handles refused (context-handle-unknown)",
    "addressbook": "binds referred to the MAPI session's CAS",
}
# Cookies the CAS itself sets on a service (DESIGN.md section 3): a client that keeps server cookies
# returns them from its second request on.
SERVER_COOKIES: dict[str, frozenset[str]] = {
    "owa": frozenset({"cadata", "sessionid", "OutlookSession"}),
    "ecp": frozenset({"cadata", "sessionid", "OutlookSession", "msExchEcpCanary"}),
    "ews": frozenset({"exchangecookie"}),
}


@dataclass(frozen=True)
class Carries:
    """What one client kind presents to a balancer on one service."""

    balancer_cookies: bool  # returns cookies a balancer sets
    server_cookies: bool  # returns cookies the CAS sets
    own_cookies: frozenset[str] = frozenset()  # cookies it makes itself and sends from its first request
    headers: frozenset[str] = frozenset()  # headers a balancer could key on that differ per user
    note: str = ""  # a caveat said with every prediction for it


def carries(kind: str, service: str) -> Carries:
    basic = frozenset({"authorization"})
    if service in TCP_SERVICES:
        return Carries(False, False)
    if kind == "browser":
        return Carries(True, True)  # forms logon: no Authorization header
    if kind == "outlook2010-rpchttp":
        return Carries(True, True, frozenset({"OutlookSession"}), basic)
    if kind == "outlook2007-rpchttp":
        return Carries(False, False, headers=basic)
    if kind == "outlook-mapi":
        on_ews = service == "ews"
        return Carries(on_ews, on_ews, headers=basic)
    if kind == "eas-device":
        return Carries(False, False, headers=basic)
    if kind == "ews-app":
        return Carries(True, True, headers=basic, note="if the app keeps cookies (keeps_cookies)")
    raise ValueError(f"unknown client kind {kind!r}")


def predicted(readings: list[Reading]) -> list[Reading]:
    """The readings with their predictions for every client kind that uses each service."""
    by_service = {r.service: r for r in readings}
    out = []
    for reading in readings:
        kinds = [k for k in CLIENT_KINDS if reading.service in KIND_SERVICES[k]]
        predictions = [_predict(reading, kind, by_service) for kind in kinds]
        out.append(dataclasses.replace(reading, predictions=tuple(predictions)))
    return out


def _predict(reading: Reading, kind: str, by_service: dict[str, Reading]) -> Prediction:
    service, need = reading.service, NEED[reading.service]
    if reading.pool is None:  # every request fails, whatever affinity the service needs
        why = "no route: the balancer answers itself"
        if need == "none":
            why += f" and every {service} request fails"
        return Prediction(kind, "hard", why)
    p = reading.persistence
    if p is None:
        return Prediction(kind, "unknown", f"{reading.words or 'this persistence'}: the lab cannot read it")
    prediction = by_method(p, service, kind)
    if reading.tcp:  # passed through unread: the balancer places connections, not requests
        why = prediction.why.replace("every request placed anew", "every connection placed anew")
        prediction = dataclasses.replace(prediction, why=why)
    paired = _apart(reading, kind, by_service)
    if paired is not None and prediction.effect in ("holds", "balance"):
        return paired
    return prediction


def by_method(p: Persistence, service: str, kind: str) -> Prediction:
    """What `p` on `service` predicts for one client kind (also `caslab advise`'s first sieve)."""
    need = NEED[service]
    c = carries(kind, service)
    note = f" {c.note}" if c.note else ""
    broken = "hard" if need == "hard" else "soft" if need == "soft" else "holds"

    def anew(why: str) -> Prediction:
        if need == "none":
            return Prediction(kind, "holds", f"{why}; {service} needs no affinity")
        return Prediction(kind, broken, f"{why}: {BREAK[service]}")

    if p.method in ("none", "leastconn"):
        return anew(f"{p.method}: every request placed anew")
    if p.method == "source-ip":
        if kind == "eas-device":
            return Prediction(
                kind, "soft", "source-ip: a phone that changes address (carrier NAT) moves to another CAS; "
                "all phones behind one NAT address on one CAS"
            )  # fmt: skip
        return Prediction(
            kind, "balance", "source-ip: holds per address, but all users behind one NAT address (a hosted "
            "tenant, a Citrix farm) on one CAS"
        )  # fmt: skip
    if p.method == "lb-cookie":
        if c.balancer_cookies:
            return Prediction(kind, "holds", f"balancer cookie: returned{note}")
        return anew(f"balancer cookie: {_who(kind)} never returns it")
    if p.method in ("app-cookie", "cookie-hash"):
        name = p.name or ""
        if name in c.own_cookies:
            return Prediction(kind, "holds", f"{p.method} {name}: sent from its first request")
        learned = p.method == "app-cookie"
        if name in SERVER_COOKIES.get(service, ()) and c.server_cookies:
            if learned:
                return Prediction(kind, "holds", f"app-cookie {name}: learned from the CAS, returned{note}")
            return anew(
                f"cookie-hash {name}: the CAS sets it after the first requests, so they hash without it "
                "(hashing a cookie is not learning it)"
            )
        if p.fallback is not None:
            return _fallback(p, service, kind, f"{p.method} {name}: {_who(kind)} sends no {name}")
        return anew(f"{p.method} {name}: {_who(kind)} sends no {name}, placed by the balance algorithm")
    if p.method == "header":
        name = (p.name or "").lower()
        if name == "authorization" and name in c.headers:
            return Prediction(kind, "holds", "header Authorization: one per user, on every request")
        if name == "user-agent":
            why = "header User-Agent: one per client program, all its users on one CAS"
            return Prediction(kind, "balance", why)
        if name in c.headers:
            return Prediction(kind, "holds", f"header {p.name}: sent on every request")
        if p.fallback is not None:
            return _fallback(p, service, kind, f"header {p.name}: {_who(kind)} sends none")
        return anew(f"header {p.name}: {_who(kind)} sends none, placed by the balance algorithm")
    if p.method == "ssl-session-id":
        return anew("ssl-session-id: TLS 1.3 clients send a fresh session ID on every connection")
    return Prediction(kind, "unknown", f"{p}: the lab has no prediction for it")


def _fallback(p: Persistence, service: str, kind: str, why: str) -> Prediction:
    assert p.fallback is not None
    then = by_method(p.fallback, service, kind)
    return Prediction(kind, then.effect, f"{why}, falls back to {then.why}")


def _apart(reading: Reading, kind: str, by_service: dict[str, Reading]) -> Prediction | None:
    """ECP must reach OWA's CAS (they share the logon cookie), and the Address Book the MAPI session's:
    a prediction when this service's rule is not its partner's."""
    partner = {"ecp": "owa", "addressbook": "mapi"}.get(reading.service)
    if partner is None or partner not in by_service:
        return None
    other = by_service[partner]
    if other.pool is None or (reading.rule and reading.rule == other.rule) or reading.pool == other.pool:
        return None
    effect = NEED[reading.service]
    return Prediction(
        kind,
        effect,
        f"{reading.service} is placed by another rule than {partner} ({reading.pool} vs {other.pool}): "
        f"{BREAK[reading.service]}",
    )


def _who(kind: str) -> str:
    return {
        "browser": "a browser",
        "outlook2010-rpchttp": "Outlook 2010",
        "outlook2007-rpchttp": "Outlook 2007",
        "outlook-mapi": "Outlook on MAPI",
        "eas-device": "an ActiveSync device",
        "ews-app": "an EWS app",
    }[kind]
