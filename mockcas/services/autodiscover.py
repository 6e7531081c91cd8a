"""Autodiscover of the mock CAS: `POST /Autodiscover/Autodiscover.xml`, plain old XML (POX), Basic auth.

Outlook sends the outlook request schema and gets its settings in the `responseschema/2006a` answer:
protocol EXCH (the RPC Client Access endpoint: the CAS array name) and EXPR (Outlook Anywhere: SSL on,
Basic auth) with the EWS, OOF and OAB URLs. ActiveSync devices send the mobilesync request schema and
get the ActiveSync URL. Every name and URL handed out is the VIP's (`config.vip_host`), never this CAS's,
so clients keep going through the balancer. Autodiscover keeps no state: it needs no affinity.

A request in no known schema, broken XML, a DTD or a GET gets Exchange's error answer (HTTP 200,
ErrorCode 600 "Invalid Request"); an AcceptableResponseSchema that does not go with the request schema
gets 601; an address that is not one of the farm's users gets the schema's "not found" error. Those
requests are ledger state `invalid`; answered ones `none`, with the user as session key.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from aiohttp import hdrs, web

from caslab.untrusted_xml import XmlRejected, parse_untrusted_xml
from mockcas import iis
from mockcas.services import HttpService, RequestContext, register
from mockcas.services.oab import oab_guid

AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
NS_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILESYNC_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
# The response schema each request schema asks for.
SCHEMAS = {OUTLOOK_REQUEST: OUTLOOK_RESPONSE, MOBILESYNC_REQUEST: MOBILESYNC_RESPONSE}
SERVER_VERSION = "738180DA"  # Exchange 2010 SP1 (14.1.218) in Autodiscover's bit-packed form
ORG_DN = "/o=CasLab/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
NOT_FOUND = "The e-mail address cannot be found."


def _display_name(user: str) -> str:
    return "User " + user.split("@")[0].removeprefix("user")


@register
class AutodiscoverService(HttpService):
    id = "autodiscover"

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        # Exchange 2010's Autodiscover vdir takes no anonymous requests: Outlook and devices authenticate.
        if ctx.path != AUTODISCOVER_PATH:
            ctx.note("", "invalid", "no such file")
            return iis.not_found()
        user = self.cas.users.check_basic(request.headers.get(hdrs.AUTHORIZATION))
        if user is None:
            ctx.note("", "none", "no valid credentials")
            return iis.unauthorized(self.cas.config.vip_host)
        ctx.user = user
        return None

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        refused = self.refusal(request, ctx)
        if refused is not None:
            return refused
        user = ctx.user
        if request.method != "POST":  # a browser's GET gets the same error as a bad request
            ctx.note(user, "invalid", f"method {request.method[:20]}")
            return self._xml(self._error(600, "Invalid Request"))
        try:
            root = parse_untrusted_xml(await request.read())
        except web.HTTPRequestEntityTooLarge:
            ctx.note(user, "invalid", "body too large")
            return iis.entity_too_large()
        except XmlRejected as err:
            ctx.note(user, "invalid", f"xml: {str(err)[:60]}")
            return self._xml(self._error(600, "Invalid Request"))
        schema, _, local = root.tag[1:].partition("}")
        request_el = root.find(f"{{{schema}}}Request")
        if local != "Autodiscover" or schema not in SCHEMAS or request_el is None:
            ctx.note(user, "invalid", "unknown request schema")
            return self._xml(self._error(600, "Invalid Request"))
        wanted = (request_el.findtext(f"{{{schema}}}AcceptableResponseSchema") or "").strip()
        if wanted != SCHEMAS[schema]:
            ctx.note(user, "invalid", "unsupported response schema")
            return self._xml(self._error(601, "Provider is not available"))
        target = self._target(request_el, schema)
        mobile = schema == MOBILESYNC_REQUEST
        if target is None:
            ctx.note(user, "invalid", "unknown address")
            return self._xml(
                self._mobilesync_not_found() if mobile else self._error(500, NOT_FOUND, OUTLOOK_RESPONSE)
            )
        ctx.note(user, "none", "mobilesync" if mobile else "outlook")
        return self._xml(self._mobilesync(target) if mobile else self._outlook(target))

    def _target(self, request_el: ET.Element, schema: str) -> str | None:
        """The farm user the request asks about: EMailAddress, or the last cn= of a LegacyDN (which wins)."""
        legacy_dn = (request_el.findtext(f"{{{schema}}}LegacyDN") or "").strip()
        if legacy_dn and schema == OUTLOOK_REQUEST:
            return self.cas.users.canonical(legacy_dn.rpartition("cn=")[2])
        return self.cas.users.canonical((request_el.findtext(f"{{{schema}}}EMailAddress") or "").strip())

    def _xml(self, text: str) -> web.Response:
        return web.Response(
            body=('<?xml version="1.0" encoding="utf-8"?>\r\n' + text).encode(),
            content_type="text/xml",
            charset="utf-8",
        )

    def _error(self, code: int, message: str, response_ns: str = "") -> str:
        """Exchange's POX error: the Id attribute is a hash of the server's name, Time its clock."""
        ns = f' xmlns="{response_ns}"' if response_ns else ""
        now = datetime.now(UTC).strftime("%H:%M:%S.%f") + "0"
        server_hash = zlib.crc32(self.cas.name.encode())
        return (
            f'<Autodiscover xmlns="{NS_RESPONSE}"><Response{ns}>'
            f'<Error Time="{now}" Id="{server_hash}"><ErrorCode>{code}</ErrorCode>'
            f"<Message>{escape(message)}</Message><DebugData /></Error></Response></Autodiscover>"
        )

    def _outlook(self, user: str) -> str:
        vip = escape(self.cas.config.vip_host)
        ews = f"https://{vip}/EWS/Exchange.asmx"
        oab = f"https://{vip}/OAB/{oab_guid(self.cas.config.farm_key)}/"
        urls = f"<ASUrl>{ews}</ASUrl><EwsUrl>{ews}</EwsUrl><OOFUrl>{ews}</OOFUrl><OABUrl>{oab}</OABUrl>"
        alias = escape(user.split("@")[0])
        deployment = oab_guid(b"deployment\x00" + self.cas.config.farm_key)
        return (
            f'<Autodiscover xmlns="{NS_RESPONSE}"><Response xmlns="{OUTLOOK_RESPONSE}">'
            f"<User><DisplayName>{escape(_display_name(user))}</DisplayName>"
            f"<LegacyDN>{ORG_DN}/cn=Recipients/cn={alias}</LegacyDN>"
            f"<AutoDiscoverSMTPAddress>{escape(user)}</AutoDiscoverSMTPAddress>"
            f"<DeploymentId>{deployment}</DeploymentId></User>"
            "<Account><AccountType>email</AccountType><Action>settings</Action>"
            f"<Protocol><Type>EXCH</Type><Server>{vip}</Server>"
            f"<ServerDN>{ORG_DN}/cn=Configuration/cn=Servers/cn={vip}</ServerDN>"
            f"<ServerVersion>{SERVER_VERSION}</ServerVersion>"
            f"<MdbDN>{ORG_DN}/cn=Configuration/cn=Servers/cn={vip}/cn=Microsoft Private MDB</MdbDN>"
            f"{urls}<EcpUrl>https://{vip}/ecp/</EcpUrl></Protocol>"
            f"<Protocol><Type>EXPR</Type><Server>{vip}</Server><SSL>On</SSL><AuthPackage>Basic</AuthPackage>"
            f"{urls}</Protocol>"
            f'<Protocol><Type>WEB</Type><Internal><OWAUrl AuthenticationMethod="Fba">https://{vip}/owa/'
            "</OWAUrl></Internal></Protocol>"
            "</Account></Response></Autodiscover>"
        )

    def _mobilesync(self, user: str) -> str:
        url = f"https://{escape(self.cas.config.vip_host)}/Microsoft-Server-ActiveSync"
        return (
            f'<Autodiscover xmlns="{NS_RESPONSE}"><Response xmlns="{MOBILESYNC_RESPONSE}">'
            f"<Culture>en:us</Culture><User><DisplayName>{escape(_display_name(user))}</DisplayName>"
            f"<EMailAddress>{escape(user)}</EMailAddress></User>"
            f"<Action><Settings><Server><Type>MobileSync</Type><Url>{url}</Url><Name>{url}</Name></Server>"
            "</Settings></Action></Response></Autodiscover>"
        )

    def _mobilesync_not_found(self) -> str:
        return (
            f'<Autodiscover xmlns="{NS_RESPONSE}"><Response xmlns="{MOBILESYNC_RESPONSE}">'
            f"<Culture>en:us</Culture><Action><Error><Status>2</Status><Message>{NOT_FOUND}</Message>"
            f"<DebugData>MailUser</DebugData></Error></Action></Response></Autodiscover>"
        )
