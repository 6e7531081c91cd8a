"""`caslab run`: one scenario from start to verdict (DESIGN.md sections 8-10).

    scenario -> lab (farm + balancer) -> load (Locust populations, faults on schedule)
             -> ledgers + client events -> verifier -> report files -> exit code

Everything the run makes goes into reports/<name>-<UTC time>/. The lab is torn down on every path out
(success, failure, Ctrl-C, SIGTERM), so no process or container is left behind, and within a bound
(lab.backends.teardown): `caslab run` exits at once after its verdict and at most EXIT_BOUND_S (60 s)
after Ctrl-C or SIGTERM. What a run killed outright leaves, the next run removes (lab.backends.janitor).

Backends: `local` (lab.backends.local: processes on loopback, the farm on 127.0.1.1x and the VIP on
127.0.1.1; CASLAB_LOCAL_NET=127.0.22 moves them to 127.0.22.x, e.g. for a second lab at once) and
`docker` (lab.backends.docker: containers on a lab network of their own).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pandas as pd

from lab.backends import Lab
from lab.backends.janitor import clean
from lab.backends.local import LocalLab
from lab.backends.state import LabRecord
from lab.backends.teardown import Deadline
from lab.balancers import driver_class, times
from lab.capacity import balancer_note, check, estimate, raise_fd_limit
from lab.loadplan import address_plans, endpoints_for_vip, plan_from_scenario
from lab.model import BalancerSpec, CasEndpoint, ExchangeSettings, Vip, local_farm
from lab.report import write_run
from lab.runfolder import new_run_dir
from lab.scenario import Scenario
from lab.verdict import EXIT_CANNOT_RUN, EXIT_CODES, verdict_line
from lab.verifier import FaultFact, RunFacts, read_events
from lab.verifier.limits import cas_lags
from lab.verifier.planned import silent_clients_reason

if TYPE_CHECKING:
    from lab.backends.docker import LabNetwork
    from loadgen.runner import Progress

log = logging.getLogger("caslab.lab")


class LabError(RuntimeError):
    """The lab could not run (exit code 2); the message says why."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run, whose lab is torn down by the time this is raised. A caller that
    runs several (`caslab matrix`) stops there too instead of starting the next one."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def _log_to(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "lab.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _stop_on_signals(deadline: Deadline) -> dict[int, object]:
    """Ctrl-C and SIGTERM stop the run (KeyboardInterrupt, so every `finally` tears down what it made) and
    start the deadline of its teardown. A SIGINT ignored when caslab started (a background job) stays
    ignored. Returns the handlers they replace."""

    def handler(_signum: int, _frame: object) -> None:
        deadline.arm()
        raise KeyboardInterrupt

    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            saved[sig] = signal.signal(sig, handler)
    return saved


class ProgressLine:
    """One status line, rewritten in place on a terminal and printed every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def __call__(self, text: str, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self._last >= 5:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = now


def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    backend: str = "local",
    say: Callable[[str], None] = print,
    run_name: str | None = None,
    allow_unrouted: bool = False,
    workers: int | None = None,
    remote_workers: int = 0,
    master_bind: str | None = None,
) -> tuple[int, Path]:
    """Run one scenario; returns (exit code, run folder). The folder is out/<run_name or name>-<UTC>.
    `allow_unrouted`: run a user's config that routes nowhere some service the clients use. `workers`:
    load generator processes (default_workers(); 1 runs Locust in this process, or docker's one loadgen
    container). `remote_workers`: workers that join from other machines (`caslab worker`), at the Locust
    master on `master_bind` (HOST:PORT; default 127.0.0.1 and a free port). Ctrl-C or SIGTERM raises
    RunInterrupted once the lab is torn down."""
    run_dir = new_run_dir(out, run_name or scenario.name)
    handler = _log_to(run_dir)
    record = LabRecord.create(run_dir, "run", backend)
    deadline = Deadline(record, EXIT_CANNOT_RUN)
    saved_handlers = _stop_on_signals(deadline)
    try:
        joining = (remote_workers, master_bind)
        return _run_and_judge(
            scenario, run_dir, record, deadline, backend, say, allow_unrouted, workers, joining
        )
    finally:
        for sig, saved in saved_handlers.items():
            signal.signal(sig, saved)
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_and_judge(
    scenario: Scenario,
    run_dir: Path,
    record: LabRecord,
    deadline: Deadline,
    backend: str,
    say: Callable[[str], None],
    allow_unrouted: bool,
    workers: int | None,
    joining: tuple[int, str | None],
) -> tuple[int, Path]:
    progress = ProgressLine()
    lab: Lab | None = None
    try:
        say(f"caslab: {scenario.name} on {scenario.balancer.driver} ({backend}), report in {run_dir}")
        workers = load_generators(backend, workers)
        remote_workers, master_bind = remote_load_generators(backend, workers, *joining)
        _gevent_before_docker(backend, workers)
        capacity_notes = check_capacity(scenario, workers, remote_workers)
        for note in capacity_notes:
            say(f"caslab: note: {note}")
        (run_dir / "scenario.toml").write_text(scenario.source_text or "")
        for line in clean(docker=backend == "docker"):
            say(f"caslab: removed what a lab whose owner is gone left: {line}")
        servers, vip, network = lab_addresses(backend, scenario.farm.servers, _client_addresses(scenario))
        candidate = None
        if scenario.balancer.config is not None:  # the user's own file (lab.candidate)
            from lab.candidate import prepare_candidate

            candidate = prepare_candidate(
                scenario, servers, vip, run_dir, say, allow_unrouted=allow_unrouted, local=network is None
            )
            scenario = candidate.scenario
        tls_files = None
        if scenario.farm.tls != "none" and candidate is None:
            from lab.certs import make_tls_files

            tls_files = make_tls_files(run_dir / "tls", vip, servers)
            (run_dir / "ca.pem").write_bytes(tls_files.ca_pem.read_bytes())
        spec = candidate.spec if candidate else scenario.balancer_spec(servers, vip, tls_files)
        lab = make_lab(
            spec, run_dir, network, record, time_scale=scenario.time_scale, key_seed=str(scenario.seed),
            oab_skew=scenario.farm.oab_skew, exchange=scenario.farm.exchange, workers=workers,
            remote_workers=remote_workers, master_bind=master_bind, say=say,
        )  # fmt: skip
        driver_notes = lab.balancer.unenforced()
        for note in driver_notes:
            say(f"caslab: note: {note}")
        progress("phase: starting farm and balancer")
        lab.start()
        endpoints = endpoints_for_vip(vip, scenario.farm.tls != "none", scenario.balancer.topology)
        plan = plan_from_scenario(scenario, endpoints, str(network.subnet) if network else None)
        plan = dataclasses.replace(plan, run_id=lab.run_id)  # the clients send it; the verifier checks it
        if spec.tls_files is not None and spec.tls != "none":
            plan.ca_pem = spec.tls_files.ca_pem.read_text()  # HTTPS clients verify the VIP against it
        schedule = list(scenario.fault_schedule())
        fired: list[dict] = []

        def fire_faults(elapsed: float) -> None:
            while schedule and schedule[0][0] <= elapsed:
                _at, fault = schedule.pop(0)
                lab.fault(fault.action, fault.server)
                fired.append({"ts": time.time(), "server": fault.server, "action": fault.action})

        def between(elapsed: float) -> None:
            fire_faults(elapsed)
            sample_balancer(lab)

        total = scenario.ramp_s + scenario.duration_s

        def show(p: Progress) -> None:
            phase = "ramp" if p.elapsed_s < scenario.ramp_s else "load"
            progress(
                f"phase: {phase} {p.elapsed_s:4.0f}s/{total:.0f}s · users {p.users} · "
                f"requests {p.requests} · hard breaks {p.hard_breaks} · soft {p.soft_breaks} · "
                f"failures {p.failures}"
            )

        load_started = time.time()
        result = lab.run_load(
            plan, run_dir / "events.csv", scenario.duration_s, scenario.ramp_s, on_progress=show,
            between=between,
        )  # fmt: skip
        load_ended = time.time()
        progress(f"phase: collecting ledgers ({result.requests} requests)", final=True)
        ledger = lab.collect_ledgers()
        lost = [f"{what}: the run cannot account for what it answered" for what in lab.lost_servers()]
        facts = RunFacts(
            driver=spec.driver,
            driver_version=lab.balancer.version(),
            methods=candidate.methods if candidate else {s: str(p) for s, p in spec.persistence.items()},
            preset=spec.preset,
            # The load starts when every worker is there (the plan says when; a container's plan is its own).
            started_ts=max(load_started, plan.start_time),
            ended_ts=time.time(),
            faults=[FaultFact(f["server"], f["action"], f["ts"]) for f in fired],
            server_stats=lab.server_stats(),
            balancer_counters=lab.counters(),
            run_id=lab.run_id,
            persistence_timeouts_s={service: p.timeout_s for service, p in spec.persistence.items()},
            persistence_table_size=spec.persistence_table_size,
            notes=[*capacity_notes, *(candidate.notes if candidate else ()), *driver_notes],
        )
        if stopped := balancer_stopped(lab):
            facts.invalid_reasons.append(
                f"the balancer did not run throughout the load: {stopped}; requests after that failed for "
                "the lab's reason, not the persistence's"
            )
        facts.balancer_limits = balancer_limits(lab)
        facts.notes.extend(facts.balancer_limits)
        facts.cas_lags = cas_lags(facts.server_stats, facts.started_ts, load_ended)
        facts.notes.extend(facts.cas_lags)
        if result.saturated:
            facts.invalid_reasons.append(result.saturation_reason)
        facts.invalid_reasons.extend(result.lost_workers)
        facts.invalid_reasons.extend(lost)
        if result.client_errors:
            facts.invalid_reasons.append(
                f"a client of the load generator raised an error of its own {times(result.client_errors)} "
                f"(first: {result.client_error}; the load generator logged each with its traceback): the "
                "sessions it drove did not run as the scenario planned"
            )
    except KeyboardInterrupt:
        say("caslab: interrupted; tearing the lab down")
        raise RunInterrupted(run_dir) from None  # after the `finally` below has torn the lab down
    except Exception as err:  # any failure to run is exit 2, with the reason
        log.exception("the lab could not run")
        say(f"caslab: the lab could not run: {err}")
        return EXIT_CANNOT_RUN, run_dir
    finally:
        with deadline.bounding():  # the lab is gone in TEARDOWN_S, or the deadline removes it
            if lab is not None:
                lab.stop()
            record.remove()
    try:
        progress("phase: verifying", final=True)
        event_files = sorted(run_dir.glob("events*.csv"))  # events.csv, or events-*.csv per worker
        events = read_events(event_files)
        facts.invalid_reasons.extend(silent_clients_reason(scenario, events))
        analysis = write_run(run_dir, events, pd.DataFrame(ledger), scenario, facts)
    except KeyboardInterrupt:
        say("caslab: interrupted while verifying; no report")
        raise RunInterrupted(run_dir) from None
    for path in event_files:
        path.unlink()
    say(f"caslab: {verdict_line(analysis)}")
    say(f"caslab: report {run_dir / 'report.html'}")
    return EXIT_CODES[analysis.verdict], run_dir


def sample_balancer(lab: Lab) -> None:
    """Let the balancer read, during the load, what it keeps no peak of (Balancer.sample); a balancer that
    does not answer once is no reason to stop the load."""
    try:
        lab.balancer.sample()
    except OSError as err:
        log.debug("could not sample %s: %s", lab.balancer.name, err)


def balancer_stopped(lab: Lab) -> str | None:
    """How the balancer stopped since it started (Balancer.stopped), or None; if it cannot say, None."""
    try:
        return lab.balancer.stopped()
    except Exception as err:
        log.warning("could not read whether %s still runs: %s", lab.balancer.name, err)
        return None


def balancer_limits(lab: Lab) -> list[str]:
    """The balancer's own limits the load reached (Balancer.limits_reached), or none if it cannot say."""
    try:
        return lab.balancer.limits_reached()
    except Exception as err:
        log.warning("could not read what limits %s reached: %s", lab.balancer.name, err)
        return []


def default_workers() -> int:
    """Load generator processes for a run by default: the cores this process may use minus one (for the
    farm, the balancer and the master), at least 1 (DESIGN.md section 14)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def load_generators(backend: str, workers: int | None) -> int:
    """How many load generator processes a run on `backend` has: `workers`, or the default. The docker
    backend runs each in a loadgen container of its own (one container runs Locust on its own)."""
    chosen = default_workers() if workers is None else workers
    if chosen < 1:
        raise LabError(f"--workers {chosen}: at least 1")
    where = "loadgen containers" if backend == "docker" else "Locust worker processes"
    alone = "Locust in one loadgen container" if backend == "docker" else "Locust in this process"
    log.info("load generator: %s", alone if chosen == 1 else f"{chosen} {where}, master in this process")
    return chosen


def remote_load_generators(
    backend: str, workers: int, remote_workers: int, master_bind: str | None
) -> tuple[int, tuple[str, int] | None]:
    """The workers that join from other machines and where the Locust master listens for them:
    (remote_workers, (host, port) or None for 127.0.0.1 and a free port, which the console names), checked
    (LabError: exit 2). The master's address is tried here, before the lab starts, so a wrong one costs
    nothing."""
    if remote_workers < 0:
        raise LabError(f"--remote-workers {remote_workers}: 0 or more")
    if backend != "local" and (remote_workers or master_bind):
        raise LabError(f"--remote-workers, --master-bind: the local backend only, not {backend}")
    bind = None
    if master_bind:
        if workers < 2 and not remote_workers:
            raise LabError("--master-bind: --workers 1 runs Locust in caslab itself, with no master to bind")
        bind = _master_address(master_bind)
    if remote_workers:
        log.info(
            "load generator: Locust master in this process on %s, %d worker process(es) started here and %d "
            "from other machines",
            f"{bind[0]}:{bind[1]}" if bind else "127.0.0.1 and a free port", workers, remote_workers,
        )  # fmt: skip
    return remote_workers, bind


def _master_address(text: str) -> tuple[str, int]:
    """--master-bind HOST:PORT as (host, port), once a socket could listen there (LabError if not)."""
    from loadgen.worker import parse_host_port

    try:
        host, port = parse_host_port(text, "--master-bind")
    except ValueError as err:
        raise LabError(str(err)) from err
    try:
        ipaddress.IPv4Address(host)  # Locust's transport (ZeroMQ) binds addresses, not names
    except ValueError:
        raise LabError(
            f"--master-bind {text}: HOST must be an IPv4 address of this machine (0.0.0.0 for all)"
        ) from None
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise LabError(f"--master-bind {text}: cannot listen there: {err.strerror}") from err
    return host, port


def _gevent_before_docker(backend: str, workers: int) -> None:
    """The Locust master of docker's loadgen containers runs in this process, and importing Locust patches
    the process with gevent. That must happen before the Docker SDK imports urllib3, which keeps the
    unpatched ssl.SSLContext: patched after it, making a TLS context recurses without end."""
    if backend == "docker" and workers > 1:
        import loadgen.distributed  # noqa: F401


def check_capacity(scenario: Scenario, workers: int, remote_workers: int = 0) -> list[str]:
    """Raise the open-file limit to the hard limit (lab.log says so), estimate what the run needs
    (lab.capacity) and refuse one that cannot fit, before anything starts (LabError: exit 2). Returns
    notes for the report on what fits only in part (the balancer's descriptors; for the user's own file
    lab.candidate says that, as the file may set limits of its own)."""
    before, limit = raise_fd_limit()
    if limit > before:
        log.info("open-file limit raised from %d to %d (the hard limit)", before, limit)
    else:
        log.info("open-file limit %d (the hard limit already)", limit)
    need = estimate(scenario, workers, remote_workers)
    log.info("capacity estimate: %s", need)
    if problems := check(need, limit):
        raise LabError(f"{scenario.name} cannot fit this machine: {'; '.join(problems)}. Estimate: {need}")
    if scenario.balancer.config is not None:
        return []  # the user's file may set the balancer's own limits: lab.candidate notes it
    note = balancer_note(need, limit, driver_class(scenario.balancer.driver).processes())
    if note:
        log.warning("capacity: %s", note)
    return [note] if note else []


def lab_addresses(
    backend: str, servers: int, client_addresses: int = 0
) -> tuple[list[CasEndpoint], Vip, LabNetwork | None]:
    """Where a backend's lab listens: the CAS, the VIP, and (docker) the lab network they are on."""
    if backend == "local":
        base = os.environ.get("CASLAB_LOCAL_NET", "127.0.1")
        return local_farm(servers, base), Vip(host=f"{base}.1"), None
    if backend == "docker":
        from lab.backends.docker import LabNetwork

        network = LabNetwork.pick(client_addresses)
        return network.servers(servers), network.vip, network
    raise LabError(f"unknown backend {backend!r}; allowed: local, docker")


def _client_addresses(scenario: Scenario) -> int:
    return sum(a.pool_size for a in address_plans(scenario))


def make_lab(
    spec: BalancerSpec,
    run_dir: Path,
    network: LabNetwork | None,
    record: LabRecord,
    *,
    time_scale: float = 1.0,
    key_seed: str | None = None,
    oab_skew: bool = False,
    exchange: ExchangeSettings | None = None,
    workers: int = 1,
    remote_workers: int = 0,
    master_bind: tuple[str, int] | None = None,
    say: Callable[[str], None] = print,
) -> Lab:
    """The docker backend's lab when the addresses are on a lab network, else the local one; either with
    `workers` load generator processes (the local one with `remote_workers` joining from other machines
    at the master on `master_bind`, `say` telling the console which command joins)."""
    options = {"time_scale": time_scale, "key_seed": key_seed, "oab_skew": oab_skew, "exchange": exchange}
    if network is not None:
        from lab.backends.docker import DockerLab

        return DockerLab(spec, run_dir, network, record, workers=workers, **options)
    joining = {"remote_workers": remote_workers, "master_bind": master_bind, "say": say}
    return LocalLab(spec, run_dir, record, workers=workers, **joining, **options)
