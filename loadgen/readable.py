"""Waiting until any of many sockets has something to read, whatever their descriptor numbers.

`select.select()` refuses descriptors of FD_SETSIZE (1024) and above, even under gevent, whose select
first asks the real one; a load generator holds more sockets than that with a few hundred Outlooks
(four RPC/HTTP channels each, and their HTTP connections), and an idle Outlook failed with "filedescriptor
out of range in select()". `poll()` has no such limit, and gevent's waits cooperatively.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence


def readable(sockets: Sequence[socket.socket | int], timeout: float) -> list[socket.socket | int]:
    """Those of `sockets` (socket objects or descriptors) with something to read, or closed or reset by
    the other side, waiting at most `timeout` seconds for one; [] when none has anything by then."""
    poller = select.poll()
    by_fd = {}
    for sock in sockets:
        fd = sock if isinstance(sock, int) else sock.fileno()
        poller.register(fd, select.POLLIN)
        by_fd[fd] = sock
    return [by_fd[fd] for fd, _events in poller.poll(max(0.0, timeout) * 1000)]
