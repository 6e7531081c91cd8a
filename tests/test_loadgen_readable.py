"""loadgen.readable: waiting on sockets whose descriptors select() refuses (1024 and above), as a load
generator with hundreds of Outlooks holds."""

from __future__ import annotations

import os
import resource
import select
import socket
from collections.abc import Iterator

import pytest

from loadgen.readable import readable

HIGH_FD = 1500  # above FD_SETSIZE (1024)


@pytest.fixture
def high_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected socket pair whose first end has descriptor HIGH_FD."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= HIGH_FD:
        resource.setrlimit(resource.RLIMIT_NOFILE, (HIGH_FD + 1, hard))  # loud if the hard limit is lower
    a, b = socket.socketpair()
    os.dup2(a.fileno(), HIGH_FD)
    a.close()
    high = socket.socket(fileno=HIGH_FD)
    try:
        yield high, b
    finally:
        high.close()
        b.close()


def test_select_refuses_the_descriptor(high_pair):
    high, _ = high_pair
    with pytest.raises(ValueError, match="out of range"):
        select.select([high], [], [], 0)


def test_a_high_descriptor_is_readable_once_data_came(high_pair):
    high, other = high_pair
    assert readable([high], 0) == []
    other.sendall(b"ping")
    assert readable([high, other], 1.0) == [high]
    assert readable([high.fileno()], 0) == [high.fileno()]


def test_a_closed_peer_makes_it_readable(high_pair):
    high, other = high_pair
    other.close()
    assert readable([high], 1.0) == [high]
