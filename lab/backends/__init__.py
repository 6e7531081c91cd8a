"""Backends: the contract every lab keeps, whatever it runs on.

A backend brings up one lab (a farm of mock CAS behind a real balancer), drives load and faults through
it, hands back what the farm recorded, and tears it all down. One narrow interface, like an httpx
transport; one module (or package) per backend:

    record = LabRecord.create(run_dir, "run", backend)   # lab.backends.state: the lab's id and owner
    lab = LocalLab(spec, run_dir, record, ...)            # lab.backends.local: processes on loopback
    lab = DockerLab(spec, run_dir, network, record, ...)  # lab.backends.docker: containers, own network
    lab.start()                              # farm up and healthy, then the balancer up and ready
    result = lab.run_load(plan, events, duration_s, ramp_s, on_progress=..., between=...)
    lab.fault(action, server)                # one fault of the scenario, while the load runs
    rows = lab.collect_ledgers()             # every ledger row so far, open channels closed first
    lab.server_stats(); lab.counters()       # the CAS's own figures; the balancer's per-server counts
    lab.lost_servers()                       # [] or a sentence per CAS lost without a fault, or ledger unread
    lab.stop()                               # always safe, also after a failed or half-done start

lab.run and lab.up drive any `Lab` through these calls and nothing else.

What a backend must do:
- `start()` starts every CAS of `spec.servers` with the lab's `run_id` (`caslab cas --run-id`), waits
  until each answers its admin health URL with that run id, then starts the balancer and waits until
  it is ready (`Balancer.wait_ready`), its own process listening, not some other. It raises (any
  exception, its message says why) if something does not come up, leaving `stop()` to clean up; a
  lab whose addresses another lab holds starts nothing and says which lab that is
  (lab.backends.addresses).
- Whatever it starts can be found again if its owner is killed: a local process is written into the
  lab's state file (`record.started`) as soon as it runs, a container or network carries the owner's
  labels (lab.backends.docker.engine), so that the janitor (lab.backends.janitor) removes them.
- `run_load` runs `plan` for `ramp_s + duration_s` seconds, writes the clients' event log to
  `events_path` (several load generator processes: one events-*.csv each beside it), and calls
  `between(elapsed)` and `on_progress(progress)` about once a second (the caller fires the scenario's
  faults from `between`); it returns the load generator's LoadResult.
- `fault(action, server)` does one of `caslab.vocab.FAULT_ACTIONS` to one CAS: `stop` kills it as a
  crash would (its ledger rows so far are kept), `start` brings it back healthy, `drain`, `health-down`
  and `health-up` flip its health answer. An unknown action or server raises ValueError or the
  backend's error.
- `collect_ledgers()` returns every ledger row of every CAS so far (rows of a stopped CAS included),
  after each running CAS has closed its open channels; `stop()` may append more to the same list.
- `lost_servers()`, after `collect_ledgers()`: a sentence for each CAS that ended without a fault or
  `stop()` ending it, and each ledger it could not read in full (the run is invalid: it cannot account
  for what those CAS answered).
- `server_stats()` gives each running CAS's /caslab/stats; `counters()` the balancer's per-server
  counts ({} when it cannot read them, with a warning in the log).
- `stop()` leaves nothing behind (no process, container, network or volume of the lab), keeps the
  logs in `run_dir`, and can be called at any point, more than once.
- `balancer` is the driver of `spec.driver` (lab.balancers), `servers` the CAS endpoints of the farm,
  `run_dir` the run's folder, `spec` the BalancerSpec it was made with, `run_id` the record's run id
  (its CAS write it into their ledger rows; the load plan and the verifier get it from here).

What a backend may assume: `spec` passed its driver's `check()`; `run_dir` exists and is this run's
alone; calls come from one thread, in the order above (`fault` only while `run_load` runs, through
`between`); the plan's endpoints are the spec's VIP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lab.balancers import Balancer
    from lab.model import BalancerSpec, CasEndpoint
    from loadgen.plan import LoadPlan
    from loadgen.progress import LoadResult, Progress


@runtime_checkable
class Lab(Protocol):
    """The backend contract (see the module docstring)."""

    spec: BalancerSpec
    run_dir: Path
    run_id: str
    balancer: Balancer

    @property
    def servers(self) -> list[CasEndpoint]: ...

    def start(self) -> None: ...

    def fault(self, action: str, server: str) -> None: ...

    def run_load(
        self,
        plan: LoadPlan,
        events_path: Path,
        duration_s: float,
        ramp_s: float,
        on_progress: Callable[[Progress], None] | None = None,
        between: Callable[[float], None] | None = None,
    ) -> LoadResult: ...

    def collect_ledgers(self) -> list[dict]: ...

    def lost_servers(self) -> list[str]: ...

    def server_stats(self) -> dict[str, dict]: ...

    def counters(self) -> dict[str, int]: ...

    def stop(self) -> None: ...
