"""A run of the user's own balancer config (DESIGN.md section 14): everything that happens to the file
before the lab starts anything, in this order, each step able to stop the run (exit 2, nothing started):

1. the reader of the scenario's driver adopts the file (lab.balancers.userconfig: the lab put into it by
   its rules, every address of the file as run checked to be the lab's own);
2. the file is explained per service; a service the scenario's clients use that the file routes nowhere
   stops the run, unless asked to go on (`--allow-unrouted`: the report then shows its errors);
3. every address the balancer will listen on must be free here (`a port the lab cannot bind`);
4. the balancer's own checker (`haproxy -c`, ...) reads the file as run; its message is shown.
Only then does the run go on, with a BalancerSpec that carries the adopted file (the driver runs it as
written) and the scenario's TLS mode set to the file's (the file decides what the clients speak).

The run's balancer/ folder gets, beside the file as run: `written/<name>` (the file as the user wrote
it), `<name>.diff` (from one to the other) and `adoption.json` (the rewrites, the server mapping, the TLS
mode and the explanation), which the report reads.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import resource
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from caslab.vocab import SERVICES
from lab.balancers import BalancerError, driver_class
from lab.balancers.process import ProcessBalancer
from lab.balancers.userconfig import (
    Adopted,
    ConfigRefused,
    Explanation,
    Place,
    Problem,
    reader_for,
)
from lab.balancers.userconfig.predict import KIND_SERVICES
from lab.capacity import balancer_note, estimate
from lab.certs import make_tls_files
from lab.model import BalancerSpec, CasEndpoint, Persistence, Vip
from lab.scenario import Scenario

ADOPTION = "adoption.json"  # in the run's balancer/ folder
WRITTEN = "written"  # the folder of the files as the user wrote them


@dataclass(frozen=True)
class Candidate:
    """The user's config, ready to run."""

    scenario: Scenario  # with the file's TLS mode
    spec: BalancerSpec
    adopted: Adopted
    explanation: Explanation
    notes: tuple[str, ...] = field(default=())  # what the user should know (shown and kept in the report)

    @property
    def methods(self) -> dict[str, str]:
        """Per service, the persistence as the run records it: the lab's words, else the file's."""
        return {r.service: r.method for r in self.explanation.readings}


def prepare_candidate(
    scenario: Scenario,
    servers: list[CasEndpoint],
    vip: Vip,
    run_dir: Path,
    say: Callable[[str], None] = print,
    allow_unrouted: bool = False,
    local: bool = True,
) -> Candidate:
    """Adopt, explain, check and validate the scenario's user config for a run in `run_dir`. Raises
    ConfigRefused or BalancerError (the balancer's checker refused it); nothing is started either way.
    `local`: the balancer listens in this network namespace (else in a container: its ports are its own)."""
    path = scenario.config_path
    assert path is not None, "prepare_candidate needs a scenario with a config"
    driver = scenario.balancer.driver
    reader = reader_for(driver)
    tls_files = make_tls_files(run_dir / "tls", vip, servers)
    place = Place(
        tuple(servers), vip, tls_files, run_dir / "balancer", scenario.balancer.topology, scenario.time_scale
    )
    adopted = reader.adopt(path, place)
    explanation = reader.explain(path, place)
    notes = []

    def note(text: str, kind: str = "note") -> None:
        say(f"caslab: {kind}: {text}")
        notes.append(text)

    for text in explanation.notes:
        note(text)
    limit = reader.connection_limit(reader.open(path, place), place)
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # lab.run raised it to the hard limit
    if text := balancer_note(estimate(scenario, 1), fd_limit, driver_class(driver).processes(), limit):
        note(text)
    for what in scenario.not_applied_with_config():
        note(f"{what} does not apply: the balancer runs {path.name} as written", "warning")
    unrouted = [s for s in explanation.unrouted() if s in used_services(scenario)]
    if unrouted:
        problems = [Problem(path.name, 0, f"{s}: {explanation.reading(s).route}") for s in unrouted]
        if not allow_unrouted:
            raise ConfigRefused(
                problems,
                f"{path.name} routes nowhere services the scenario's clients use ({', '.join(unrouted)}); "
                "with --allow-unrouted the run goes on and the report shows their errors",
            )
        note(f"no route in {path.name} for {', '.join(unrouted)}: their requests fail (--allow-unrouted)")
    if adopted.tls != scenario.farm.tls:
        note(f"farm.tls is {adopted.tls!r}, as {path.name} has it ({adopted.tls_reason})")
        scenario = scenario.with_overrides(tls=adopted.tls)
    if local:
        check_bindable(adopted)
    persistence = {r.service: r.persistence or Persistence("none") for r in explanation.readings}
    spec = BalancerSpec(
        driver=driver,
        persistence=persistence,
        servers=servers,
        vip=vip,
        topology=scenario.balancer.topology,
        tls=adopted.tls,
        health=scenario.balancer.health,
        tls_files=tls_files,
        config=adopted,
    )
    candidate = Candidate(scenario, spec, adopted, explanation, tuple(notes))
    write_account(candidate, place.folder)
    validate(spec, run_dir)
    if adopted.tls != "none":
        (run_dir / "ca.pem").write_bytes(tls_files.ca_pem.read_bytes())
    return candidate


def used_services(scenario: Scenario) -> set[str]:
    """The services some client kind of the scenario's populations uses."""
    return {s for p in scenario.populations for kind in p.clients for s in KIND_SERVICES[kind]}


def check_bindable(adopted: Adopted) -> None:
    """ConfigRefused naming each listener whose address and port another process holds here."""
    problems = []
    for host, port in adopted.listeners:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as err:
                why = (
                    "is taken by another process"
                    if err.errno == errno.EADDRINUSE
                    else f"cannot be bound: {err}"
                )
                problems.append(Problem(adopted.main.written_name, 0, f"VIP {host}:{port} {why}"))
    if problems:
        raise ConfigRefused(problems, "the balancer could not listen where the lab needs it")


def validate(spec: BalancerSpec, run_dir: Path) -> None:
    """Write the file as run and have the balancer's own checker read it (BalancerError with its words)."""
    driver = driver_class(spec.driver)(spec, run_dir)
    if isinstance(driver, ProcessBalancer):
        try:
            driver.validate()
        except BalancerError as err:
            raise BalancerError(f"{spec.driver}'s own check refuses the file as run:\n{err}") from None
    else:
        driver.write_config()


def check_as_run(path: Path, place: Place, driver: str) -> str:
    """The last step of `caslab balancer explain`: the balancer's own checker reads the file as it would
    run (`haproxy -c`, `nginx -t`, `envoy --mode validate`), written in a scratch folder with the
    certificate of a scratch CA, so that a file the lab's balancer would refuse (a directive of another
    edition or version) is refused here, not when a run starts. Returns what was checked, in words (or
    why it was not: the balancer is not installed here); BalancerError with the checker's own words when
    it refuses."""
    reader = reader_for(driver)
    with tempfile.TemporaryDirectory(prefix="caslab-explain-") as scratch:
        run_dir = Path(scratch)
        tls_files = make_tls_files(run_dir / "tls", place.vip, place.servers)
        scratch_place = dataclasses.replace(place, tls_files=tls_files, folder=run_dir / "balancer")
        adopted = reader.adopt(path, scratch_place)
        spec = BalancerSpec(
            driver=driver,
            persistence={service: Persistence("none") for service in SERVICES},  # the file decides
            servers=list(place.servers),
            vip=place.vip,
            topology=place.topology,
            tls=adopted.tls,
            tls_files=tls_files,
            config=adopted,
        )
        balancer = driver_class(driver)(spec, run_dir)
        command = balancer.validate_command() if isinstance(balancer, ProcessBalancer) else None
        try:
            validate(spec, run_dir)
        except (OSError, subprocess.TimeoutExpired) as err:  # no such binary here, or it hung
            return f"{driver}'s own check did not run here ({err}); a run checks the file before it starts"
        except BalancerError as err:
            words = _as_written(str(err), adopted, scratch_place.folder)
            if "unknown" in words:
                words += (
                    f"\n(the lab runs {driver} {balancer.version()}: a directive it does not know, such as "
                    "one of a commercial edition (NGINX Plus, HAProxy Enterprise) or of a later version, "
                    "it cannot run)"
                )
            raise BalancerError(words) from None
    if command is None:
        return f"{driver} has no config check of its own: it reads the file when a run starts it"
    checker = " ".join(_checker_words(command))
    return f"{Path(command[0]).name}'s own check ({checker}) reads the file as run: ok"


def _as_written(message: str, adopted: Adopted, folder: Path) -> str:
    """A checker's message with each `FOLDER/FILE:LINE` of a file as run in a scratch folder named as the
    file and line the user wrote (or as a line the lab added); the files as run go by their names, and
    any other path in the scratch folder (its TLS files) is named as that."""

    def written(m: re.Match[str]) -> str:
        name, line = m.group(1), int(m.group(2))
        file, origin = adopted.origin(name, line)
        return f"{file} line {origin}" if origin else f"line {line} of {name} as run (a line the lab added)"

    message = re.sub(re.escape(str(folder)) + r"/([^\s:\]]+):(\d+)", written, message)
    return message.replace(f"{folder}/", "").replace(str(folder.parent), "(the lab's scratch folder)")


def _checker_words(command: list[str]) -> list[str]:
    """The checker's name and its checking flag (`nginx -t`), without the scratch paths."""
    flags = {"-t", "-c", "--mode", "validate"}
    return [Path(command[0]).name, *(w for w in command[1:3] if w in flags)]


def write_account(candidate: Candidate, folder: Path) -> None:
    """The files as written, the diff and adoption.json, beside the file as run."""
    adopted = candidate.adopted
    for f in adopted.files:
        written = folder / WRITTEN / f.written_name
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_text(f.written)
    (folder / f"{adopted.main.name}.diff").write_text(adopted.diff())
    account = {
        "file": adopted.main.written_name,
        "driver": adopted.driver,
        "tls": adopted.tls,
        "tls_reason": adopted.tls_reason,
        "rewrites": [asdict(r) for r in adopted.rewrites],
        "servers": [asdict(m) for m in adopted.servers],
        "listeners": [list(a) for a in adopted.listeners],
        "notes": list(candidate.notes),
        "diff": f"{adopted.main.name}.diff",
        "explanation": candidate.explanation.to_dict(),
    }
    (folder / ADOPTION).write_text(json.dumps(account, indent=2))


def read_account(folder: Path) -> dict | None:
    """adoption.json of a run's balancer/ folder, its explanation as an Explanation, the file as written
    (`written`) and the diff (`diff`) read in; None when the run had no user config."""
    path = folder / ADOPTION
    if not path.is_file():
        return None
    account = json.loads(path.read_text())
    account["explanation"] = Explanation.from_dict(account["explanation"])
    written, diff = folder / WRITTEN / account["file"], folder / account.get("diff", "-")
    account["written"] = written.read_text(errors="replace") if written.is_file() else ""
    account["diff"] = diff.read_text(errors="replace") if diff.is_file() else ""
    return account


def explain_table(explanation: Explanation) -> str:
    """The explanation as the terminal shows it (`caslab balancer explain`)."""
    lines = [f"{explanation.file} ({explanation.driver}): per service, as the lab reads it"]
    for note in explanation.notes:
        lines.append(f"  note: {note}")
    for service in SERVICES:
        r = explanation.reading(service)
        lines.append("")
        lines.append(f"{service}: {r.pool or '(no route)'}  via {r.route}")
        lines.append(f"  persistence: {r.method}" + (f"  [{r.words}]" if r.persistence and r.words else ""))
        if r.timeouts:
            lines.append(f"  timeouts: {', '.join(map(str, r.timeouts))}")
        for cut in r.timers:
            lines.append(f"  timers: {cut}")
        for unread in r.unread:
            lines.append(f"  the lab cannot read: {unread}")
        for p in r.predictions:
            lines.append(f"  {p.client_kind:<20} {p.effect:<8} {p.why}")
    return "\n".join(lines) + "\n"
