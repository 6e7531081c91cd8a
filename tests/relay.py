"""A TCP relay for the timer tests: it forwards connections to one target, writes down what crossed it
and when, and closes a connection both of whose directions were silent for `idle_timeout_s`, as a
balancer's idle timeout does (a FIN to both sides). Threads, one per direction of each connection: the
tests that use it run clients in other processes, never gevent in this one."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Relayed:
    """One client connection through the relay: what each side sent (time.monotonic(), bytes)."""

    up: list[tuple[float, bytes]] = field(default_factory=list)  # client -> target
    down: list[tuple[float, bytes]] = field(default_factory=list)  # target -> client
    last: float = field(default_factory=time.monotonic)
    cut: bool = False  # closed by the relay's idle timeout
    ended: bool = False  # closed by either side

    @property
    def first_bytes(self) -> bytes:
        return self.up[0][1] if self.up else b""


class Relay:
    """`with Relay(listen, target, idle_timeout_s=2) as relay:` ... `relay.connections`."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], idle_timeout_s: float | None = None):
        self.target, self.idle_timeout_s = target, idle_timeout_s
        self.connections: list[Relayed] = []
        self._server = socket.create_server(listen, reuse_port=False)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        if idle_timeout_s:
            self._threads.append(threading.Thread(target=self._watch, daemon=True))
        self._pairs: list[tuple[Relayed, socket.socket, socket.socket]] = []

    def __enter__(self) -> Relay:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        _shut(self._server)  # wakes the accepting thread; close() alone leaves the port bound under it
        self._server.close()
        with self._lock:
            for _relayed, client, server in self._pairs:
                for sock in (client, server):
                    sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=5)
            relayed = Relayed()
            with self._lock:
                self.connections.append(relayed)
                self._pairs.append((relayed, client, server))
            for source, sink, log in ((client, server, relayed.up), (server, client, relayed.down)):
                threading.Thread(target=self._pump, args=(relayed, source, sink, log), daemon=True).start()

    def _pump(self, relayed: Relayed, source: socket.socket, sink: socket.socket, log: list) -> None:
        source.settimeout(None)
        try:
            while chunk := source.recv(65536):
                now = time.monotonic()
                log.append((now, chunk))
                relayed.last = now
                sink.sendall(chunk)
        except OSError:
            pass
        relayed.ended = True
        for sock in (source, sink):  # one side ended: end both, as a proxy does
            _shut(sock)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            now = time.monotonic()
            with self._lock:
                for relayed, client, server in self._pairs:
                    if not (relayed.cut or relayed.ended) and now - relayed.last > self.idle_timeout_s:
                        relayed.cut = True
                        for sock in (client, server):
                            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """End both directions of a connection (a FIN to its peer), if it is still open."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
