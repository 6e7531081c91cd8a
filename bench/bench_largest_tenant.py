"""The largest tenant that runs valid on this machine, over HTTP and over HTTPS offload (prints figures,
asserts nothing).

The tenant is bundled `tenant-10k`'s (lab/scenarios/tenant-10k.toml) scaled to N users: 80 % behind the
tenant's 8 NAT addresses (browsers, Outlook 2010 over RPC/HTTP, phones), 20 % phones on a carrier,
nginx (or --driver) with the recommended preset, the same ramp, duration and time scale. N grows by
--factor from --start while runs stay valid and pass; then the gap between the last good N and the first
bad one is halved --bisect times. Each step is one real `caslab run` (about 2 minutes at the defaults), so the
whole bench takes 15-30 minutes of both cores; a run that is invalid says why (a saturated load
generator, requests held in the lab long enough for logons to idle out, ...).

The figure depends on how busy the machine is: run it on a quiet one, and read HTTP against HTTPS as a
ratio within one run of the bench.

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_largest_tenant.py \
        [--tls none,offload] [--start 10000] [--factor 1.5] [--bisect 1] [--time-scale 10] [--workers N]
        [--driver NAME] [--keep DIR]'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "lab" / "scenarios" / "tenant-10k.toml"


def scenario_text(users: int, tls: str, time_scale: float) -> str:
    """tenant-10k with `users` users (80 % tenant, 20 % carrier phones), `tls` and `time_scale`."""
    tenant, carrier = round(users * 0.8), users - round(users * 0.8)
    text = TEMPLATE.read_text()
    for old, new in (
        ('name = "tenant-10k"', f'name = "tenant-{users}-{tls}"'),
        ("users = 8000", f"users = {tenant}"),
        ("users = 2000", f"users = {carrier}"),
        ('tls = "offload"', f'tls = "{tls}"'),
        ("time_scale = 10", f"time_scale = {time_scale:g}"),
    ):
        if old not in text:
            sys.exit(f"{TEMPLATE} no longer has {old!r}; update this bench")
        text = text.replace(old, new, 1)
    return text


def one_run(folder: Path, users: int, tls: str, args: argparse.Namespace) -> dict:
    """Verdict, reason, answered requests and wall time of one run of the tenant with `users` users."""
    scenario = folder / f"tenant-{users}-{tls}.toml"
    scenario.write_text(scenario_text(users, tls, args.time_scale))
    out = folder / f"{tls}-{users}"
    command = [sys.executable, "-m", "lab.cli", "run", str(scenario), "--out", str(out)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    if args.driver:
        command += ["--driver", args.driver]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - started
    summaries = list(out.glob("*/summary.json"))
    if not summaries:  # refused before it started (the capacity check), or could not run: say why
        said = [line for line in (done.stdout + done.stderr).splitlines() if "could not run" in line]
        reason = said[-1] if said else f"exit {done.returncode}: {(done.stdout + done.stderr)[-500:]}"
        return {"verdict": "refused", "reason": reason, "answered": 0, "wall_s": wall}
    summary = json.loads(summaries[0].read_text())
    return {
        "verdict": summary["verdict"],
        "reason": summary["verdict_reason"],
        "answered": summary["totals"]["answered"],
        "wall_s": wall,
    }


def largest(folder: Path, tls: str, args: argparse.Namespace) -> int | None:
    """The largest N that passed; prints each step."""
    good, bad = None, None
    users = args.start
    while bad is None and users <= args.most:
        if _step(folder, users, tls, args):
            good, users = users, round(users * args.factor)
        else:
            bad = users
    for _ in range(args.bisect if good and bad else 0):
        middle = (good + bad) // 2
        if middle in (good, bad):
            break
        if _step(folder, middle, tls, args):
            good = middle
        else:
            bad = middle
    return good


def _step(folder: Path, users: int, tls: str, args: argparse.Namespace) -> bool:
    r = one_run(folder, users, tls, args)
    print(
        f"tls={tls:8} users={users:6}  {r['verdict']:7}  {r['answered']:7} answered  {r['wall_s']:5.0f} s  "
        f"{r['reason'][:400]}",
        flush=True,
    )
    return r["verdict"] == "pass"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", default="none,offload", help="comma-separated farm tls modes")
    parser.add_argument("--start", type=int, default=10_000, help="users of the first run")
    parser.add_argument("--factor", type=float, default=1.5, help="growth while runs pass")
    parser.add_argument("--most", type=int, default=200_000, help="stop growing here")
    parser.add_argument("--bisect", type=int, default=1, help="halvings between the last pass and first miss")
    parser.add_argument("--time-scale", type=float, default=10)
    parser.add_argument("--workers", type=int, default=0, help="caslab run --workers (default: its own)")
    parser.add_argument("--driver", help="caslab run --driver (default: the scenario's, nginx)")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: removed at the end)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="caslab-bench-largest-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for tls in args.tls.split(","):
            results[tls] = largest(folder, tls, args)
    for tls, users in results.items():
        print(f"largest tenant that passed, tls={tls}: {users if users else 'none'} users")
    if all(results.values()) and len(results) == 2:
        first, second = results.values()
        print(f"{'/'.join(results)} = {first / second:.2f}")


if __name__ == "__main__":
    main()
