"""Binding a simulated client's connections to its source address.

Neither Locust client has an option for it (locust#376, #1412), so we use the hooks that exist:
- FastHttpUser: geventhttpclient's connection pool creates sockets in `_create_tcp_socket`, which the
  library documents as the "tcp socket factory"; each per-host pool's factory is wrapped to bind
  the socket before it connects.
- plain sockets (RPC/HTTP channels, MAPI): `bound_connection`.
IP_BIND_ADDRESS_NO_PORT delays the choice of the local port to connect(), so thousands of clients
sharing one address (a NAT-ed tenant) don't exhaust ports at bind() time.

Each pool is also told to skip gevent's resolver when its host is an IP address (`resolve_addresses_at_once`),
and to check its idle keep-alive sockets with poll() instead of select() (`check_idle_sockets_by_poll`).

A `SourceAddress` is mutable: a mobile device that changes address sets a new one and its pools are
closed, so its next request opens a connection from the new address, as a phone moving cells would.
"""

from __future__ import annotations

import _socket
import ipaddress
import socket
from typing import TYPE_CHECKING

from loadgen.readable import readable

if TYPE_CHECKING:
    from geventhttpclient.client import HTTPClient
    from geventhttpclient.connectionpool import ConnectionPool
    from locust.contrib.fasthttp import FastHttpSession

    from loadgen.tls import TlsSessions

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class SourceAddress:
    def __init__(self, ip: str) -> None:
        self.ip = ip

    def bind(self, sock: socket.socket) -> socket.socket:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((self.ip, 0))
        return sock


def bind_fast_session(
    session: FastHttpSession, source: SourceAddress, tls_sessions: TlsSessions | None = None
) -> None:
    """Make every connection a Locust FastHttpSession opens come from `source`, and its TLS connections
    resume the client's sessions in `tls_sessions` (loadgen.tls.resume_in)."""
    from loadgen.tls import resume_in

    pool = session.client.clientpool
    get_client = pool.get_client

    def bound_get_client(url: object) -> HTTPClient:
        client = get_client(url)
        connections = client._connection_pool
        if not getattr(connections, "caslab_bound", False):
            create = connections._create_tcp_socket
            connections._create_tcp_socket = lambda *args: source.bind(create(*args))
            connections.caslab_bound = True
            resolve_addresses_at_once(connections)
            check_idle_sockets_by_poll(connections)
            if tls_sessions is not None and client.ssl:
                resume_in(connections, tls_sessions)
        return client

    pool.get_client = bound_get_client


def resolve_addresses_at_once(pool: ConnectionPool) -> None:
    """Make a geventhttpclient pool whose host is an IP address find its socket address without gevent's
    resolver. The pool resolves its host for every connection it opens, and gevent's default resolver
    hands each lookup to a thread: about 35 us of CPU per new connection here (2-3% of a full TLS
    handshake on the client) for what getaddrinfo answers at once for an address (AI_NUMERICHOST: no DNS
    query, the same answer). A pool of a host name keeps the resolver."""
    try:
        ipaddress.ip_address(pool._connection_host)
    except ValueError:
        return
    family = socket.AF_INET if pool.disable_ipv6 else 0
    address = (pool._connection_host, pool._connection_port, family, socket.SOCK_STREAM, socket.SOL_TCP)
    pool._resolve = lambda: _socket.getaddrinfo(*address, socket.AI_NUMERICHOST)  # the C call, not gevent's


def check_idle_sockets_by_poll(pool: ConnectionPool) -> None:
    """Make a geventhttpclient pool check that an idle keep-alive socket is still open with poll(). Its
    own check uses select(), which refuses descriptors of 1024 and above, and it then takes the socket
    for dead: a load generator holding more than about a thousand sockets opened a new connection (and
    over HTTPS a new handshake) for every request instead of keeping its connections alive (measured:
    five requests took five connections with 1,100 descriptors open, one with ten)."""

    def is_alive(sock: socket.socket | None) -> bool:
        # As the library's own check: a socket with something to read while idle is closed by the server
        # (or has a stray answer in it), and is not reused.
        try:
            return sock is not None and sock.fileno() >= 0 and not readable([sock], 0.0)
        except (OSError, ValueError):
            return False

    pool._is_socket_alive = is_alive


def close_fast_session(session: FastHttpSession) -> None:
    """Drop the session's open connections (the next request connects anew)."""
    session.client.clientpool.close()


def bound_connection(address: tuple[str, int], source: SourceAddress, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to `address` from `source` (works under gevent's monkey-patching)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        source.bind(sock)
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock
