"""TLS as the modelled clients do it: one context per client kind per process, verifying the run's CA,
and TLS sessions resumed by session ID from a cache of each client's own.

Contexts. Making a context the stdlib way (`ssl.create_default_context()`, which loads the system's
trust store) costs about 20 ms of CPU here, and Locust's fast client makes one per user and host; a
real client program makes one for its whole process. `client_context` makes one per client kind,
trust and TLS version, the first time it is asked, and hands out that one ever after. It trusts only
the run's CA (the lab writes it as ca.pem and the plan carries it): a real client verifies the
server's certificate and its name, so does this one, and a certificate of another CA fails the
handshake.

Resumption. The clients caslab models resume their TLS sessions, each from a cache of its own process:
- Windows clients (Internet Explorer, Outlook, EWS Managed API applications) use SChannel, which keeps
  each session in its client cache for ClientCacheTime (10 hours by default) and offers its session ID
  on the next connection to that server (Microsoft KB 247658, "Configure SSL server and client cache
  elements", which names load balancers that key on the SSL session ID as the reason to know it). The
  cache is per process: Internet Explorer 8's tab processes share no SSL sessions (Microsoft's Brad
  Hughes, "Internet Explorer 8 impacts OWA load balancing scenarios", 2009). Outlook is one process, so
  its RPC/HTTP channels (WinHTTP inside outlook.exe), EWS, Autodiscover and OAB calls all resume the
  one session it has with the VIP: an IN channel opened right after its OUT channel offers OUT's session.
- Phones: the iPhone's Secure Transport keeps sessions per peer for the app and resumes them by ID.
- Windows 7's SChannel and the iOS of those devices send no session tickets (RFC 5077) as clients, so
  every kind resumes by session ID only (`OP_NO_TICKET`): with TLS 1.2 the ID a client offers is the one
  the server gave it, which is what a balancer's `ssl-session-id` persistence keys on. TLS 1.3 offers a
  fresh random legacy session ID in every hello and resumes by PSK instead, so that persistence cannot
  hold (DESIGN.md section 12).
A `TlsSessions` is one client's cache: the session last established with each (host, port), taken from
a connection once its first answer has been read (a TLS 1.3 server sends its tickets after the
handshake) and offered to the next connection there.
"""

from __future__ import annotations

import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geventhttpclient.connectionpool import SSLConnectionPool

log = logging.getLogger("loadgen.tls")

TLS_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}  # the scenario's names -> ssl.TLSVersion members


@functools.cache
def client_context(kind: str, ca_pem: str, max_version: str = "1.3") -> ssl.SSLContext:
    """The one TLS context of client kind `kind` in this process: TLS 1.2 up to `max_version`, sessions
    resumed by ID (no tickets), the server's certificate and name checked against `ca_pem` (PEM text).
    With no CA (a plan made by hand for a lab whose CA it does not know) nothing is verified, and a
    warning says so once."""
    # ssl.SSLContext is looked up now, not at import: under Locust it is gevent's cooperative one.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    else:
        log.warning("no CA for the lab's certificate: %s clients do not verify the server", kind)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion[TLS_VERSIONS[max_version]]
    context.options |= ssl.OP_NO_TICKET
    return context


class TlsSessions:
    """One client's TLS session cache: the last session with each (host, port), offered on the next
    connection there (see the module docstring). `resumes=False` keeps nothing: every handshake is full."""

    def __init__(self, resumes: bool = True) -> None:
        self.resumes = resumes
        self._sessions: dict[tuple[str, int], ssl.SSLSession] = {}
        self._seen: dict[tuple[str, int], int] = {}  # id() of the connection each session came from

    def offer(self, address: tuple[str, int]) -> ssl.SSLSession | None:
        """The session to offer on a new connection to `address` (None: a full handshake)."""
        return self._sessions.get(address) if self.resumes else None

    def keep(self, address: tuple[str, int], sock: Any) -> None:
        """Take the session of `sock` (a TLS connection to `address` whose answer was read) for next
        time. Once per connection: later calls with the same socket cost one comparison."""
        if not self.resumes or self._seen.get(address) == id(sock):
            return
        self._seen[address] = id(sock)
        session = getattr(sock, "session", None)
        if session is not None:
            self._sessions[address] = session

    def wrap(self, context: ssl.SSLContext, sock: Any, address: tuple[str, int], server_hostname: str) -> Any:
        """`sock` wrapped in TLS (the handshake done), resuming the session kept for `address` if any."""
        return context.wrap_socket(sock, server_hostname=server_hostname, session=self.offer(address))


def close_tls(sock: Any) -> None:
    """Close a connection as a TLS client that ends it on purpose does: a close_notify alert first (RFC
    5246 section 7.2.1), without waiting for the server's. Why it matters: the mock CAS's OpenSSL, like
    any OpenSSL server, drops a session from its cache when its connection ends without one, so the
    client's next connection could not resume it; IIS's SChannel keeps it either way (ServerCacheTime).
    A plain TCP socket is just closed, and so is one closed already."""
    if hasattr(type(sock), "unwrap"):  # the type's: gevent's closed socket raises EBADF on a lookup
        try:
            sock.settimeout(0.0)  # send our alert; the server's answer is not awaited
            sock.unwrap()
        except (OSError, ValueError):  # ssl.SSLWantReadError: the alert went, the answer did not come yet
            pass
    sock.close()


def resume_in(pool: SSLConnectionPool, sessions: TlsSessions) -> None:
    """Make a geventhttpclient TLS connection pool (one host of Locust's FastHttpSession) offer the
    client's kept session on each connection it opens, keep the session of each connection it gets
    back after an answer, and close connections with close_notify (`close_tls`). The pool's own
    `_connect_socket` would connect and wrap in one step with no session; this one connects the same
    way (the plain pool's step) and wraps with the session."""
    from geventhttpclient.connectionpool import ConnectionPool

    address = (pool._connection_host, pool._connection_port)
    hostname = pool.ssl_options.get("server_hostname", pool._request_host)
    return_socket, release_socket, close_pool = pool.return_socket, pool.release_socket, pool.close

    def connect(sock: Any, to: Any) -> Any:
        return sessions.wrap(
            pool.ssl_context, ConnectionPool._connect_socket(pool, sock, to), address, hostname
        )

    def returned(sock: Any) -> None:
        sessions.keep(address, sock)
        return_socket(sock)

    def released(sock: Any) -> None:  # an answer said close, or the connection failed
        close_tls(sock)
        release_socket(sock)

    def close() -> None:  # the client drops its connections (a phone that changed address)
        while not pool._socket_queue.empty():
            close_tls(pool._socket_queue.get(block=False))
        close_pool()

    pool._connect_socket = connect
    pool.return_socket = returned
    pool.release_socket = released
    pool.close = close
