"""Autodiscover as a client speaks it: pure helpers (no I/O) for the Outlook and ActiveSync client kinds.

Outlook starts by `POST PATH` with `outlook_request(address)` (Basic auth) and takes its EWS and OAB URLs
and the Outlook Anywhere server from the answer; a phone sends `mobilesync_request(address)` and takes the
ActiveSync URL. `parse()` reads either answer (settings or Exchange's POX error); `classify()` says ok or
error: Autodiscover keeps no server state, so it cannot break affinity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

PATH = "/Autodiscover/Autodiscover.xml"
HEADERS = {"Content-Type": "text/xml; charset=utf-8"}

NS_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILESYNC_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"


def _request(request_schema: str, response_schema: str, address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<Autodiscover xmlns="{request_schema}"><Request>'
        f"<EMailAddress>{escape(address)}</EMailAddress>"
        f"<AcceptableResponseSchema>{response_schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def outlook_request(address: str) -> bytes:
    return _request(OUTLOOK_REQUEST, OUTLOOK_RESPONSE, address)


def mobilesync_request(address: str) -> bytes:
    return _request(MOBILESYNC_REQUEST, MOBILESYNC_RESPONSE, address)


@dataclass(frozen=True)
class AutodiscoverAnswer:
    display_name: str = ""
    # Outlook settings per protocol type (EXCH, EXPR, WEB): child element name -> text.
    protocols: dict[str, dict[str, str]] = field(default_factory=dict)
    mobile_sync_url: str = ""
    error_code: str = ""  # ErrorCode (600, 601, 500...) or an ActiveSync Status; "" when it succeeded
    error_message: str = ""

    @property
    def ews_url(self) -> str:
        """EWS through Outlook Anywhere (EXPR), else the internal (EXCH) one."""
        return self.protocols.get("EXPR", {}).get("EwsUrl") or self.protocols.get("EXCH", {}).get(
            "EwsUrl", ""
        )

    @property
    def oab_url(self) -> str:
        return self.protocols.get("EXPR", {}).get("OABUrl") or self.protocols.get("EXCH", {}).get(
            "OABUrl", ""
        )

    @property
    def outlook_anywhere_server(self) -> str:
        return self.protocols.get("EXPR", {}).get("Server", "")

    def hosts(self) -> set[str]:
        """Every host name the answer hands out (servers and URLs)."""
        names = {self.outlook_anywhere_server, self.protocols.get("EXCH", {}).get("Server", "")}
        for settings in self.protocols.values():
            names.update(urlsplit(v).hostname or "" for k, v in settings.items() if k.endswith("Url"))
        if self.mobile_sync_url:
            names.add(urlsplit(self.mobile_sync_url).hostname or "")
        return names - {""}


def parse(body: bytes) -> AutodiscoverAnswer | None:
    """Read an Autodiscover answer in either schema; None when the body is not one."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, LookupError, ValueError):
        return None
    if root.tag != f"{{{NS_RESPONSE}}}Autodiscover":
        return None
    response = next((child for child in root if child.tag.endswith("}Response")), None)
    if response is None:
        return None
    ns = response.tag[1:].partition("}")[0]
    error = response.find(f"{{{ns}}}Error")
    if error is None:
        error = response.find(f"{{{ns}}}Action/{{{ns}}}Error")
    if error is not None:
        code = error.findtext(f"{{{ns}}}ErrorCode") or error.findtext(f"{{{ns}}}Status") or "?"
        return AutodiscoverAnswer(
            error_code=code.strip(), error_message=(error.findtext(f"{{{ns}}}Message") or "")
        )
    display_name = (response.findtext(f"{{{ns}}}User/{{{ns}}}DisplayName") or "").strip()
    if ns == MOBILESYNC_RESPONSE:
        url = response.findtext(f"{{{ns}}}Action/{{{ns}}}Settings/{{{ns}}}Server/{{{ns}}}Url") or ""
        return AutodiscoverAnswer(display_name=display_name, mobile_sync_url=url.strip())
    protocols = {}
    for protocol in response.iterfind(f"{{{ns}}}Account/{{{ns}}}Protocol"):
        settings = {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in protocol}
        protocols[settings.get("Type", "")] = settings
    return AutodiscoverAnswer(display_name=display_name, protocols=protocols)


def classify(status: int, body: bytes) -> tuple[str, str]:
    """(outcome, detail): ok for settings, error for an HTTP error, a POX error or anything else."""
    answer = parse(body) if status == 200 else None
    if answer is None:
        return "error", f"http {status}" if status != 200 else "not an Autodiscover answer"
    if answer.error_code:
        return "error", f"autodiscover {answer.error_code}"
    return "ok", ""
