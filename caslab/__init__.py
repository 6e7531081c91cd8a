"""The bottom of caslab: the words and formats that the mock CAS (`mockcas`), the load generator
(`loadgen`) and the lab (`lab`) share. It imports nothing of theirs, and all three import from it.

- `vocab`: services and their paths, ports, client kinds, persistence methods, TLS modes, topologies,
  balancer drivers, fault actions, the health URL and the lab's own HTTP headers;
- `records`: the ledger row a CAS writes and the event row a client writes (DESIGN.md section 7);
- `registry`: how plug-ins (services, drivers, client kinds) register by name;
- codecs both sides of a protocol speak: `wbxml` (ActiveSync bodies), `rts` (Outlook Anywhere's RPC
  over HTTP PDUs), `untrusted_xml` (parsing a peer's XML safely).
"""
