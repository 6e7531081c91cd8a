"""The run's certificates: a fresh trustme CA and one server certificate, written as PEM files.

One certificate serves the VIP (TLS offload and bridge) and, in bridge mode, every CAS too: its names
are the VIP's host name plus every VIP and CAS address, so clients can connect by name or by address and
a balancer can verify the CAS against the run's CA with the VIP name as SNI (as a real farm shares
its `mail.` certificate between the balancer and the CAS). The CA is new for every run and its key
never leaves memory, so nothing outside the run trusts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import trustme

from lab.model import CasEndpoint, TlsFiles, Vip

SERVER_NAME = "mail.caslab.test"


def make_tls_files(
    directory: Path, vip: Vip, servers: Iterable[CasEndpoint], server_name: str = SERVER_NAME
) -> TlsFiles:
    """Write ca.pem, server.crt (chain), server.key and server.pem (key + chain) into `directory`, for
    a certificate naming `server_name`, every VIP address (both topologies) and every CAS address."""
    directory.mkdir(parents=True, exist_ok=True)
    addresses = [*vip.hosts("single-vip"), *vip.hosts("vip-per-service"), *(s.host for s in servers)]
    ca = trustme.CA(organization_name="caslab run CA")
    cert = ca.issue_cert(server_name, *dict.fromkeys(addresses))  # IP literals become iPAddress SANs
    files = TlsFiles(
        ca_pem=directory / "ca.pem",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        server_pem=directory / "server.pem",
        server_name=server_name,
    )
    ca.cert_pem.write_to_path(str(files.ca_pem))
    files.server_cert.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(files.server_key))
    cert.private_key_and_cert_chain_pem.write_to_path(str(files.server_pem))
    for path in (files.server_key, files.server_pem):
        path.chmod(0o600)
    return files
