"""What one idle TLS connection costs at the least, with nothing of caslab's around it (prints figures,
asserts nothing): the floor under bench_tls.py's memory per user of each client kind.

N connections from a plain Python `ssl` client (blocking sockets, the client kinds' own TLS context from
loadgen.tls) to a bare asyncio TLS server (the mock CAS's stack: its server context and asyncio read
buffer from mockcas.server), one request answered on each, then held idle. Each side reads its heap
(glibc's mallinfo2: bytes in use) and RSS before and after; the difference over N is one connection.
Plain TCP is the reference.

OpenSSL's read and write buffers (~34 KB a connection at most) are not part of the floor: CPython sets
SSL_MODE_RELEASE_BUFFERS on every SSLContext it makes (Modules/_ssl.c, as nginx does), so an idle
connection holds neither; every SSL object copies the context's mode, and CPython's own
SSL_set_mode(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY) adds to it. The "cleared" rows
prove it: they clear the mode on both contexts (ctypes, on the SSL_CTX pointer checked against the
context's options first) and show what the buffers would cost. What is left is the SSL object itself
(SSL_new: ~9 KB with OpenSSL 3.0), its session with the server's certificate, and the cipher states.
With TLS 1.3 the client's read buffer (~16 KB of heap, pages touched as far as used) also stays after
the first answer, whose read took the server's session tickets too; OpenSSL frees it at the next read.

Both processes run on core 1 in turn with the server on core 0. Runs about 20 s.

    .venv/bin/python bench/bench_tls_floor.py [--connections 400]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
WARM = 20  # connections before the first reading: one-time costs (context, session cache) fall before it
SSL_CTRL_MODE, SSL_CTRL_CLEAR_MODE, SSL_MODE_RELEASE_BUFFERS = 33, 78, 0x10  # OpenSSL's ssl.h


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


def memory() -> dict[str, int]:
    """This process's heap in use (glibc: small blocks plus mmapped ones) and RSS, in bytes."""
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024
    return {"heap": info.uordblks + info.hblkhd, "rss": rss}


def ssl_mode(context: ssl.SSLContext, clear: int = 0) -> int:
    """The OpenSSL mode of `context` (SSL_CTX_get_mode), after clearing the bits `clear`. The SSL_CTX
    pointer follows the object's header in CPython's PySSLContext; it is used only if OpenSSL's options
    of that SSL_CTX are the context's."""
    maps = Path("/proc/self/maps").read_text()
    libssl = ctypes.CDLL(re.search(r"/\S*/libssl\.so\S*", maps).group(0))  # the one _ssl is linked to
    libssl.SSL_CTX_get_options.restype = ctypes.c_uint64
    libssl.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    libssl.SSL_CTX_ctrl.restype = ctypes.c_long
    libssl.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if libssl.SSL_CTX_get_options(pointer) != context.options:
        raise SystemExit("the SSL_CTX pointer of an SSLContext is not where this script looks for it")
    if clear:
        libssl.SSL_CTX_ctrl(pointer, SSL_CTRL_CLEAR_MODE, clear, None)
    return libssl.SSL_CTX_ctrl(pointer, SSL_CTRL_MODE, 0, None)


def serve(port: int, tls_dir: str, clear: int) -> None:
    """A bare asyncio server answering each line with one, and 'stats' with its memory."""
    from mockcas.config import CasConfig
    from mockcas.server import server_ssl_context

    context = None
    if tls_dir:
        tls = Path(tls_dir)
        context = server_ssl_context(CasConfig(cert_file=tls / "server.crt", key_file=tls / "server.key"))
        ssl_mode(context, clear)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(json.dumps(memory()).encode() + b"\n" if line == b"stats\n" else b"ok\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, port, ssl=context, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())


def hold(port: int, ca_file: str, version: str, clear: int, count: int) -> dict:
    """`count` idle connections to the server on `port` (TLS when `ca_file`); memory per connection."""
    from loadgen.tls import client_context

    context = client_context("bench", Path(ca_file).read_text(), version) if ca_file else None
    mode = ssl_mode(context, clear) if context else 0

    def connect() -> socket.socket:
        sock = socket.create_connection((HOST, port))
        return context.wrap_socket(sock, server_hostname=HOST) if context else sock

    def ask(sock: socket.socket, line: bytes = b"x\n") -> bytes:
        sock.sendall(line)
        answer = b""
        while not answer.endswith(b"\n"):
            answer += sock.recv(4096)
        return answer

    held = [connect() for _ in range(WARM)]
    for sock in held:
        ask(sock)
    client0, server0 = memory(), json.loads(ask(held[0], b"stats\n"))
    held += [connect() for _ in range(count)]
    for sock in held[WARM:]:
        ask(sock)
    client1, server1 = memory(), json.loads(ask(held[0], b"stats\n"))
    per = {f"{side}_{what}": (after[what] - before[what]) / count / 1024
           for side, before, after in (("client", client0, client1), ("server", server0, server1))
           for what in ("heap", "rss")}  # fmt: skip
    return {**per, "mode": mode}


def one_row(label: str, tls_dir: Path | None, version: str, clear: int, count: int) -> dict:
    """One measurement in two fresh processes: the server on core 0, the client on core 1."""
    port = 18443 if tls_dir else 18080
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(tls_dir or ""), str(clear)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    try:
        server.stdout.readline()
        done = subprocess.run(
            [sys.executable, __file__, "--hold", str(port), str(tls_dir / "ca.pem" if tls_dir else ""),
             version, str(clear), str(count)],
            capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {1}),
        )  # fmt: skip
    finally:
        server.kill()
        server.wait()
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    return {"label": label, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--hold", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        port, tls_dir, clear = args.serve
        serve(int(port), tls_dir, int(clear))
        return
    if args.hold:
        port, ca_file, version, clear, count = args.hold
        print(json.dumps(hold(int(port), ca_file, version, int(clear), int(count))))
        return

    from lab.certs import make_tls_files
    from lab.model import Vip

    with tempfile.TemporaryDirectory(prefix="bench-tls-floor-") as scratch:
        tls_dir = make_tls_files(Path(scratch), Vip(host=HOST), []).ca_pem.parent
        rows = [one_row("plain TCP", None, "1.3", 0, args.connections)]
        for version in ("1.2", "1.3"):
            rows.append(one_row(f"TLS {version}", tls_dir, version, 0, args.connections))
            rows.append(
                one_row(
                    f"TLS {version}, cleared", tls_dir, version, SSL_MODE_RELEASE_BUFFERS, args.connections
                )
            )
    print(f"\nKB per idle connection ({args.connections} held, one request answered on each); "
          f"client: plain ssl, server: asyncio")  # fmt: skip
    print(f"{'':<22}{'client heap':>12}{'RSS':>8}{'server heap':>13}{'RSS':>8}{'client SSL mode':>17}")
    for row in rows:
        print(f"{row['label']:<22}{row['client_heap']:>12.1f}{row['client_rss']:>8.1f}"
              f"{row['server_heap']:>13.1f}{row['server_rss']:>8.1f}{row['mode']:>#17x}")  # fmt: skip
    print("(cleared: SSL_MODE_RELEASE_BUFFERS cleared on both contexts; CPython sets it on every context)")


if __name__ == "__main__":
    main()
