"""Waiting until any of many sockets has something to read, whatever their descriptor numbers.

`select.select()` refuses descriptors of FD_SETSIZE (1024) and above, even under gevent, whose select
first asks the real one; a load generator holds more sockets than that with a few hundred Outlooks
(four RPC/HTTP channels each, and their HTTP connections), and an idle Outlook failed with "filedescriptor
out of range in select()". `poll()` has no such limit, and gevent's waits cooperatively.

The Outlook kinds ask "anything to read?" without waiting several times per request (to find a cut
connection). gevent's poll answers that by starting a watcher per socket and going through its hub:
about 14 us for one socket on this project's machines, against 1.5 us for the kernel's own poll with no
wait, which cannot block and so needs no cooperation. So the kernel is asked first, and gevent's poll
is used only to wait.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence

from gevent.monkey import get_original

# The standard library's poll even when gevent has patched the select module (the same one otherwise).
_kernel_poll = get_original("select", "poll")
_Socket = socket.socket | int


def readable(sockets: Sequence[_Socket], timeout: float) -> list[_Socket]:
    """Those of `sockets` (socket objects or descriptors) with something to read, or closed or reset by
    the other side, waiting at most `timeout` seconds for one; [] when none has anything by then."""
    by_fd = {}
    for sock in sockets:
        by_fd[sock if isinstance(sock, int) else sock.fileno()] = sock
    ready = _poll(_kernel_poll(), by_fd, 0.0)
    if ready or timeout <= 0:
        return ready
    return _poll(select.poll(), by_fd, timeout)  # gevent's, when patched: other users run meanwhile


def _poll(poller: select.poll, by_fd: dict[int, _Socket], timeout: float) -> list[_Socket]:
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _events in poller.poll(timeout * 1000)]
