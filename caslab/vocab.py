"""The product's vocabulary (DESIGN.md sections 2-6): every name a scenario, a service, a driver or a
client kind uses for the things of an Exchange 2010 CAS farm, and the lab's fixed addresses and headers.
Plain constants; nothing here has behaviour.
"""

from __future__ import annotations

# The nine services of DESIGN.md section 2, in the order reports list them.
SERVICES: tuple[str, ...] = (
    "owa",
    "ecp",
    "ews",
    "eas",
    "rpchttp",
    "oab",
    "autodiscover",
    "mapi",
    "addressbook",
)
HTTP_SERVICES: tuple[str, ...] = SERVICES[:7]
TCP_SERVICES: tuple[str, ...] = ("mapi", "addressbook")

# Path prefixes (lower case; Exchange clients send /OWA as well as /owa) that route to each HTTP service.
SERVICE_PATHS: dict[str, tuple[str, ...]] = {
    "owa": ("/owa",),
    "ecp": ("/ecp",),
    "ews": ("/ews",),
    "eas": ("/microsoft-server-activesync",),
    "rpchttp": ("/rpc",),
    "oab": ("/oab",),
    "autodiscover": ("/autodiscover",),
}

# Persistence methods of DESIGN.md section 5. Methods marked True take a NAME (cookie or header).
METHODS: dict[str, bool] = {
    "none": False,
    "leastconn": False,
    "source-ip": False,
    "lb-cookie": False,
    "app-cookie": True,
    "cookie-hash": True,
    "header": True,
    "ssl-session-id": False,
}
TLS_MODES: tuple[str, ...] = ("none", "offload", "bridge", "passthrough")
TOPOLOGIES: tuple[str, ...] = ("single-vip", "vip-per-service")
# The balancer drivers of DESIGN.md section 5; the first is the default.
DRIVERS: tuple[str, ...] = ("envoy", "haproxy", "nginx", "traefik", "external")
# Client programs with their own wire habits (DESIGN.md section 4), and what a scenario's faults can do.
CLIENT_KINDS: tuple[str, ...] = (
    "browser",
    "outlook2010-rpchttp",
    "outlook2007-rpchttp",
    "outlook-mapi",
    "eas-device",
    "ews-app",
)
FAULT_ACTIONS: tuple[str, ...] = ("stop", "start", "drain", "health-down", "health-up")

# The VIP groups of the `vip-per-service` topology, in address order (VIP host + 1, + 2, ...). ECP lives
# on the OWA host name in Exchange (OWA links to /ecp and both share the logon cookie), and Outlook reaches
# MAPI and the Address Book on one RPC Client Access name, so those pairs share one address.
VIP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("owa", "ecp"),
    ("ews",),
    ("eas",),
    ("rpchttp",),
    ("oab",),
    ("autodiscover",),
    ("mapi", "addressbook"),
)

# Default ports, the same on every CAS (each on its own address) and on the VIP (DESIGN.md section 3).
HTTP_PORT, HTTPS_PORT, MAPI_PORT, AB_PORT, ADMIN_PORT, STATS_PORT = 8080, 8443, 59531, 59532, 8099, 8404

# The URL balancers probe: Exchange 2010 has no healthcheck.htm, so guides probe a real vdir page.
HEALTH_PATH = "/owa/auth/logon.aspx"
HEALTH_BODY = "Outlook Web App"

# The lab's own HTTP headers. Every CAS answer names its server and the ledger state of the request (a real
# client could not see a cold cache; the lab reads it here); every client request carries an id that
# reconciles its event with the CAS's ledger row, and the id of the run it belongs to, so that a ledger
# row of another run (another lab on the same addresses) is told from this run's.
SERVER_HEADER = "X-CasLab-Server"
STATE_HEADER = "X-CasLab-State"
REQUEST_ID_HEADER = "X-CasLab-Request"
RUN_HEADER = "X-CasLab-Run"
