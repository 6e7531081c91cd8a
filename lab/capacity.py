"""Will a scenario fit this machine? The memory and file descriptors a run needs, estimated before
anything starts from the users of each client kind and what one user of that kind measurably costs.

A user is one client program with its connections held for its whole session: an Outlook over RPC/HTTP
holds two channels (RPC_IN_DATA, RPC_OUT_DATA) per RPC endpoint (the mailbox and the directory) and an
HTTP connection for Autodiscover and EWS; an intranet Outlook its MAPI and Address Book connections; a
phone a Ping. Each connection is a descriptor in the load generator and one in the CAS that serves it
(and two in the balancer between them). `COSTS` are measured by bench/bench_capacity.py (HTTP, RSS and
descriptors per added user of the load generator and of one mock CAS) and bench/bench_tls.py (the same
over HTTPS).

`raise_fd_limit` lifts this process's open-file soft limit to its hard limit before anything starts,
so the CAS, the balancer and the Locust workers it starts inherit it. `check` says what does not fit: a
run whose load generator process, or one CAS, needs more descriptors than that limit, or that needs
more memory than the machine has available, is refused (exit 2) with the estimate, before it starts
(a scenario of 100,000,000 users was once accepted and grew to 8.5 GB).
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

import psutil

from lab.balancers.userconfig import ConnectionLimit
from lab.scenario import Scenario
from lab.scenario.model import Population


@dataclass(frozen=True)
class Cost:
    """What one user of a client kind costs: KB of RSS over HTTP and over HTTPS, descriptors held."""

    loadgen_kb: float
    cas_kb: float
    fds: int  # connections held: one descriptor each in the load generator and in the CAS
    tls_loadgen_kb: float
    tls_cas_kb: float


# HTTP: bench/bench_capacity.py --users 300 (150 for the Outlook kinds). HTTPS: bench/bench_tls.py memory
# --users 400 (the load generator per user; the CAS per held connection times the kind's connections).
# Both on the 2-core lab machine. A TLS connection costs about 23-32 KB in CPython's ssl alone, so the
# kinds that hold several cost most.
COSTS: dict[str, Cost] = {
    "browser": Cost(24, 13, 1, tls_loadgen_kb=70, tls_cas_kb=59),
    "outlook2010-rpchttp": Cost(30, 86, 5, tls_loadgen_kb=210, tls_cas_kb=247),  # 2 endpoints x 2 + HTTP
    "outlook2007-rpchttp": Cost(25, 84, 5, tls_loadgen_kb=207, tls_cas_kb=241),
    "outlook-mapi": Cost(49, 35, 5, tls_loadgen_kb=96, tls_cas_kb=67),  # MAPI stays TCP; HTTP calls TLS
    "eas-device": Cost(35, 20, 1, tls_loadgen_kb=67, tls_cas_kb=62),  # its Ping
    "ews-app": Cost(20, 14, 1, tls_loadgen_kb=63, tls_cas_kb=55),
}
LOADGEN_PROCESS_MB = 70  # a Locust process with caslab's kinds imported, before its users
CAS_PROCESS_MB = 115  # one `caslab cas` (aiohttp, its services), before its clients
BALANCER_MB = 100  # the balancer's own process(es)
SPARE_FDS = 256  # what a process opens besides its clients' connections (logs, pipes, listeners)


@dataclass(frozen=True)
class Estimate:
    users: int
    clients: int  # client programs: a user may run several (a browser and an Outlook)
    connections: int  # held by all users at once
    memory_mb: float  # the whole lab: load generator processes, farm, balancer
    loadgen_fds: int  # in the busiest load generator process
    cas_fds: int  # in each CAS, the load spread evenly
    balancer_fds: int  # client and server side of every connection
    remote_workers: int = 0  # load generators on other machines, whose users' memory is theirs

    def __str__(self) -> str:
        here = f" on this machine (the {self.remote_workers:,} remote workers' users not counted)"
        return (
            f"{self.users:,} users ({self.clients:,} clients) holding {self.connections:,} connections: "
            f"about {self.memory_mb:,.0f} MB{here if self.remote_workers else ''}, "
            f"{self.loadgen_fds:,} open files in the busiest load generator process, {self.cas_fds:,} in "
            f"each CAS, {self.balancer_fds:,} in the balancer"
        )


def _largest_group_fds(population: Population) -> int:
    """Descriptors of the largest address group of a population (loadgen.split: a group stays in one
    worker): one NAT or Citrix address's users, a moving carrier whole, one person of the intranet."""
    counts = population.client_counts()
    if population.kind in ("intranet", "direct"):
        return sum(COSTS[k].fds for k in counts)
    if population.kind == "mobile-carrier" and population.ip_change_every_s:
        return sum(COSTS[k].fds * n for k, n in counts.items())
    pool = max(1, population.source_ips)
    return sum(COSTS[k].fds * math.ceil(n / pool) for k, n in counts.items())


def estimate(scenario: Scenario, workers: int, remote_workers: int = 0) -> Estimate:
    """What a run of `scenario` needs of this machine, with `workers` load generator processes here (1:
    Locust in caslab) and `remote_workers` on other machines (`caslab worker`): the users are dealt to
    all of them alike, so the remote ones' share of the load generators' memory is not this machine's."""
    tls = scenario.farm.tls != "none"
    users = sum(p.users for p in scenario.populations)
    clients = connections = 0
    loadgen_kb = cas_kb = 0.0
    for population in scenario.populations:
        for kind, count in population.client_counts().items():
            cost = COSTS[kind]
            clients += count
            connections += cost.fds * count
            loadgen_kb += (cost.tls_loadgen_kb if tls else cost.loadgen_kb) * count
            cas_kb += (cost.tls_cas_kb if tls else cost.cas_kb) * count
    largest_group = max((_largest_group_fds(p) for p in scenario.populations), default=0)
    servers = max(1, scenario.farm.servers)
    load_generators = workers + remote_workers
    loadgen_kb_here = loadgen_kb * workers / load_generators
    memory_mb = (
        (loadgen_kb_here + cas_kb) / 1024
        + LOADGEN_PROCESS_MB * workers
        + CAS_PROCESS_MB * servers
        + BALANCER_MB
    )
    return Estimate(
        users=users,
        clients=clients,
        connections=connections,
        memory_mb=memory_mb,
        loadgen_fds=max(math.ceil(connections / load_generators), largest_group) + SPARE_FDS,
        cas_fds=math.ceil(connections / servers) + SPARE_FDS,
        balancer_fds=2 * connections + SPARE_FDS,
        remote_workers=remote_workers,
    )


def raise_fd_limit() -> tuple[int, int]:
    """Lift this process's open-file soft limit to its hard limit (children inherit it); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def check(need: Estimate, fd_limit: int, available_mb: float | None = None) -> list[str]:
    """Why a run needing `need` cannot fit a machine with this open-file limit per process and this much
    memory available (default: what psutil says now); empty when it fits. The balancer's descriptors
    are a note, not a refusal (`balancer_note`): not every connection is held at every moment."""
    if available_mb is None:
        available_mb = psutil.virtual_memory().available / 2**20
    problems = []
    if need.memory_mb > available_mb:
        problems.append(f"it needs about {need.memory_mb:,.0f} MB and {available_mb:,.0f} MB are available")
    if need.loadgen_fds > fd_limit:
        problems.append(
            f"a load generator process needs about {need.loadgen_fds:,} open files and the limit is "
            f"{fd_limit:,} (more --workers spread them, down to one address group's)"
        )
    if need.cas_fds > fd_limit:
        problems.append(
            f"each CAS needs about {need.cas_fds:,} open files and the limit is {fd_limit:,} (more servers "
            "spread them)"
        )
    return problems


def balancer_note(
    need: Estimate, fd_limit: int, processes: int = 1, file_limit: ConnectionLimit | None = None
) -> str | None:
    """A note when the balancer would need more descriptors than its `processes` (nginx: its workers;
    HAProxy, Envoy, Traefik: one; 0: not the lab's balancer, no note) may open here: it then holds fewer
    connections than the users would (HAProxy sizes its maxconn from the limit; a process cannot raise
    its hard limit without CAP_SYS_RESOURCE), and the rest wait in its accept queue or are refused.
    Requests that wait long enough for a logon to idle out make the run invalid (lab/verifier/held.py).
    `file_limit`: the processes and connections per process the user's own file sets (nginx's
    worker_processes and worker_connections, HAProxy's global maxconn), said first when the users'
    connections exceed it: that limit holds wherever the file runs, not only here."""
    if processes == 0:
        return None
    if file_limit is not None:
        held = file_limit.per_process * file_limit.processes
        if 2 * need.connections > held:
            return (
                f"the balancer needs about {2 * need.connections:,} connections for the {need.connections:,} "
                f"the users hold (two each) and holds {held:,} at most as the file sets it "
                f"({file_limit.words}): connections beyond about {held // 2:,} wait in its accept queue or "
                "are refused, here and wherever the file runs"
            )
        processes = file_limit.processes
    if need.balancer_fds <= fd_limit * processes:
        return None
    held = fd_limit * processes
    may_open = f"a process here may open {fd_limit:,}"
    if processes > 1:
        may_open = f"each of its {processes} processes here may open {fd_limit:,}"
    return (
        f"the balancer needs about {need.balancer_fds:,} open files for the {need.connections:,} connections "
        f"the users hold (two each) and {may_open}: connections beyond about "
        f"{held // 2:,} wait in its accept queue or are refused"
    )
