"""The SOAP layer of EWS: reading a request envelope, the faults Exchange answers instead of a response,
and the builders of response envelopes and messages, in Exchange 2010 SP1's shapes.

A request that is not what the schema allows raises `Fault`, answered with HTTP 500 and a `soap:Fault`;
an operation that runs but fails for one item answers HTTP 200 with a response message of
ResponseClass="Error" (`error`), as Exchange does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import UTC, datetime
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from caslab.untrusted_xml import XmlRejected, parse_untrusted_xml

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS_E = "http://schemas.microsoft.com/exchange/services/2006/errors"

# Exchange 2010 SP1 RTM is build 14.01.0218.015.
SERVER_VERSION_INFO = (
    f'<t:ServerVersionInfo xmlns:t="{NS_T}" MajorVersion="14" MinorVersion="1" '
    'MajorBuildNumber="218" MinorBuildNumber="15" Version="Exchange2010_SP1"/>'
)
# RequestServerVersion values an Exchange 2010 SP1 server accepts.
REQUEST_VERSIONS = frozenset({"Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1"})
MAX_AVAILABILITY_DAYS = 42  # Exchange's limit on a free/busy time window (its error text names it)

ERROR_TEXTS = {
    "ErrorSubscriptionNotFound": "The specified subscription was not found.",
    "ErrorSubscriptionAccessDenied": "A subscription can only be used by the account that created it.",
    "ErrorInvalidWatermark": "The watermark is invalid.",
    "ErrorInvalidSubscriptionRequest": "Only pull subscriptions are available on this server.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorMailRecipientNotFound": "The e-mail address cannot be found.",
    "ErrorTimeIntervalTooBig": f"The time window is longer than {MAX_AVAILABILITY_DAYS} days.",
    "ErrorInvalidTimeInterval": "The end of the time window is not after its start.",
}


# ---------------------------------------------------------------------------------------------------
# Reading the request.


class Fault(Exception):
    """A request Exchange answers with a SOAP fault (HTTP 500) instead of a response message."""

    def __init__(self, code: str, text: str, position: tuple[int, int] = (0, 0)) -> None:
        super().__init__(text)
        self.code, self.text, self.position = code, text, position

    def xml(self) -> bytes:
        line, col = self.position
        where = (
            f"<t:MessageXml xmlns:t={quoteattr(NS_T)}><t:LineNumber>{line}</t:LineNumber>"
            f"<t:LinePosition>{col}</t:LinePosition></t:MessageXml>"
            if line
            else ""
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<s:Envelope xmlns:s={quoteattr(NS_SOAP)}><s:Body><s:Fault>"
            f"<faultcode xmlns:a={quoteattr(NS_T)}>a:{self.code}</faultcode>"
            f'<faultstring xml:lang="en-US">{escape(self.text)}</faultstring>'
            f"<detail><e:ResponseCode xmlns:e={quoteattr(NS_E)}>{self.code}</e:ResponseCode>"
            f"<e:Message xmlns:e={quoteattr(NS_E)}>{escape(self.text)}</e:Message>{where}</detail>"
            "</s:Fault></s:Body></s:Envelope>"
        ).encode()


def schema_fault(problem: str, position: tuple[int, int] = (0, 0)) -> Fault:
    return Fault("ErrorSchemaValidation", f"The request failed schema validation: {problem}", position)


def q(ns: str, name: str) -> str:
    """An element's qualified name as ElementTree spells it."""
    return f"{{{ns}}}{name}"


def local(tag: str) -> str:
    """An ElementTree tag without its namespace."""
    return tag.rpartition("}")[2]


def child(parent: ET.Element, ns: str, name: str) -> ET.Element:
    """The required child element `name`, or a schema fault."""
    element = parent.find(q(ns, name))
    if element is None:
        raise schema_fault(f"The element '{local(parent.tag)}' has incomplete content: '{name}' expected.")
    return element


def text(parent: ET.Element, ns: str, name: str) -> str:
    """The text of the required, non-empty child element `name`, or a schema fault."""
    value = (child(parent, ns, name).text or "").strip()
    if not value:
        raise schema_fault(f"The element '{name}' is empty.")
    return value


def int_in(value: str | None, name: str, low: int, high: int) -> int:
    """An integer from low to high, or a schema fault naming the element or attribute `name`."""
    try:
        number = int((value or "").strip())
    except ValueError:
        raise schema_fault(f"The value of '{name}' is not a valid integer.") from None
    if not low <= number <= high:
        raise schema_fault(f"The value of '{name}' must be between {low} and {high}.")
    return number


def parse_datetime(value: str, name: str) -> datetime:
    """An xs:dateTime; one without an offset is taken as UTC (the mock ignores the request's TimeZone)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: in UTC it falls outside years 1..9999
        raise schema_fault(f"The value of '{name}' is not a valid xs:dateTime.") from None


def xs_time(moment: datetime) -> str:
    """A UTC moment as an xs:dateTime, to the second."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(raw: bytes) -> str:
    """EWS ids and watermarks travel as xs:base64Binary."""
    return base64.b64encode(raw).decode()


def unb64(value: str) -> bytes | None:
    """The bytes of an xs:base64Binary value, or None when it is not one."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def operation(body: bytes) -> ET.Element:
    """The one element inside soap:Body, after checking the envelope and the requested version."""
    try:
        root = parse_untrusted_xml(body)
    except XmlRejected as err:
        raise schema_fault(str(err), err.position) from None
    if root.tag != q(NS_SOAP, "Envelope"):
        raise schema_fault(f"The root element '{local(root.tag)}' is not a SOAP 1.1 Envelope.")
    header = root.find(q(NS_SOAP, "Header"))
    version = header.find(q(NS_T, "RequestServerVersion")) if header is not None else None
    if version is not None and version.get("Version") not in REQUEST_VERSIONS:
        raise Fault("ErrorInvalidServerVersion", "The specified server version is invalid.")
    soap_body = root.find(q(NS_SOAP, "Body"))
    if soap_body is None or len(soap_body) != 1:
        raise schema_fault("The SOAP Body must hold exactly one operation element.")
    return soap_body[0]


# ---------------------------------------------------------------------------------------------------
# Building the response.


def envelope(body_xml: str) -> bytes:
    """A response envelope around an operation's response element."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}"><s:Header>{SERVER_VERSION_INFO}</s:Header>'
        f'<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body_xml}</s:Body></s:Envelope>'
    ).encode()


def response(operation: str, messages: Iterable[str]) -> str:
    """An operation's response element holding its response messages (one per item asked about)."""
    return (
        f'<m:{operation}Response xmlns:m="{NS_M}" xmlns:t="{NS_T}"><m:ResponseMessages>'
        f"{''.join(messages)}</m:ResponseMessages></m:{operation}Response>"
    )


def success(operation: str, inner: str = "") -> str:
    """A response message of ResponseClass Success, holding `inner`."""
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        f"{inner}</m:{operation}ResponseMessage>"
    )


def error(operation: str, code: str) -> str:
    """A response message of ResponseClass Error with the code's text (a code of ERROR_TEXTS)."""
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(ERROR_TEXTS[code])}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{operation}ResponseMessage>"
    )
