"""loadgen.binding: a connection pool of an IP address finds its socket address without gevent's resolver,
with the answer the resolver gives; a pool of a host name keeps the resolver; idle sockets are checked
whatever their descriptor numbers."""

from __future__ import annotations

import os
import resource
import socket

import gevent.socket
import pytest
from geventhttpclient.connectionpool import ConnectionPool

from loadgen.binding import check_idle_sockets_by_poll, resolve_addresses_at_once


def _no_resolver(*_args: object, **_kwargs: object) -> list:
    raise AssertionError("gevent's resolver was asked")


def test_a_pool_of_an_ip_address_gets_the_resolvers_answer_without_asking_it(monkeypatch):
    pool = ConnectionPool("127.0.5.1", 8443, "mail.caslab.test", 443)
    expected = pool._resolve()
    resolve_addresses_at_once(pool)
    monkeypatch.setattr(gevent.socket, "getaddrinfo", _no_resolver)
    assert (
        pool._resolve()
        == expected
        == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.5.1", 8443))]
    )


def test_a_pool_of_a_host_name_keeps_the_resolver(monkeypatch):
    pool = ConnectionPool("localhost", 80, "localhost", 80)
    resolve_addresses_at_once(pool)
    monkeypatch.setattr(gevent.socket, "getaddrinfo", _no_resolver)
    with pytest.raises(AssertionError, match="resolver was asked"):
        pool._resolve()


def test_an_idle_keep_alive_socket_of_a_high_descriptor_stays_in_use_until_the_server_closes_it():
    """A load generator holds thousands of sockets; select() refuses descriptors of 1024 and above, so the
    pool checks idle sockets with poll(): an open one is reused, one the server closed is not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    client, server = socket.socketpair()
    high = os.dup2(client.fileno(), 1500)  # as if 1,500 descriptors were open
    try:
        pool = ConnectionPool("127.0.5.1", 8080, "mail.caslab.test", 80)
        check_idle_sockets_by_poll(pool)
        with socket.socket(fileno=high) as idle:
            assert pool._is_socket_alive(idle)
            server.close()
            assert not pool._is_socket_alive(idle)
            assert not pool._is_socket_alive(None)
    finally:
        client.close()
        server.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
