"""loadgen.binding: a connection pool of an IP address finds its socket address without gevent's resolver,
with the answer the resolver gives; a pool of a host name keeps the resolver."""

from __future__ import annotations

import socket

import gevent.socket
import pytest
from geventhttpclient.connectionpool import ConnectionPool

from loadgen.binding import resolve_addresses_at_once


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
