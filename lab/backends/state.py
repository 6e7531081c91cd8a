"""What a checkout knows of its labs: one JSON file per lab in `.caslab/labs/`, written when the lab is made
and removed when it is torn down. A file left behind is a lab whose owner died before it could clean up;
the janitor (lab.backends.janitor) reads it to find what to remove.

    .caslab/labs/<run id>.json
      {"run_id": "quickstart-20260101T101500Z-3f9a", "command": "run", "backend": "local",
       "run_dir": "/…/reports/quickstart-20260101T101500Z", "owner": {"pid": …, "started": …, …},
       "processes": {"CAS01": {"pid": …, "started": …}, "balancer": {…}}}

`processes` are the local backend's (a docker lab's containers carry labels instead): each is written
as soon as it is started, so a SIGKILL at any moment leaves no process unrecorded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from lab.backends.owner import Owner, checkout, start_time

log = logging.getLogger("caslab.lab")

STATE_DIR = Path(".caslab") / "labs"  # in the checkout


def new_run_id(run_dir: Path) -> str:
    """A readable id that no other run has: the run folder's name and a short random token (only letters,
    digits, '.', '_' and '-', so it is also a valid container name)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", run_dir.name).strip("-.") or "run"
    return f"{name}-{secrets.token_hex(2)}"


@dataclass
class LabRecord:
    """One lab of this checkout, as its state file holds it."""

    run_id: str
    command: str  # "run" or "up"
    backend: str  # "local" or "docker"
    run_dir: str
    owner: Owner
    processes: dict[str, dict] = field(default_factory=dict)  # role -> {"pid", "started"} (local only)

    @classmethod
    def create(cls, run_dir: Path, command: str, backend: str) -> LabRecord:
        """A new lab owned by this process, its state file written."""
        record = cls(new_run_id(run_dir), command, backend, str(run_dir), Owner.this_process())
        record.save()
        return record

    @property
    def path(self) -> Path:
        return Path(self.owner.checkout) / STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        """Write the state file whole or not at all (a reader never sees half of it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "run_id": self.run_id,
            "command": self.command,
            "backend": self.backend,
            "run_dir": self.run_dir,
            "owner": self.owner.to_dict(),
            "processes": self.processes,
        }
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1))
        partial.replace(self.path)

    def started(self, role: str, pid: int) -> None:
        """Record a process of the lab (a CAS, the balancer) the moment it has started."""
        self.processes[role] = {"pid": pid, "started": start_time(pid)}
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> LabRecord:
        data = json.loads(path.read_text())
        return cls(
            data["run_id"],
            data["command"],
            data["backend"],
            data["run_dir"],
            Owner.from_dict(data["owner"]),
            data.get("processes", {}),
        )


def labs_here() -> list[LabRecord]:
    """Every lab this checkout has a state file of (a file that cannot be read is named in the log)."""
    records = []
    for path in sorted((checkout() / STATE_DIR).glob("*.json")):
        try:
            records.append(LabRecord.load(path))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("cannot read the lab state %s: %s", path, err)
    return records
