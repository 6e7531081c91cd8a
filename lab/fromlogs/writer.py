"""The scenario TOML `caslab scenario from-logs` writes: the inferred populations, each inference as a
comment with its evidence, and settings a person will want to change marked as such.

What a scenario cannot say is written as comments too: the request rates per client kind (the lab's
client kinds keep their own habits, at LoadGen's medium profile) and the peak hour's concurrency.
Nothing personal: the counts come from user names and device ids, which are never written.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from lab.fromlogs.model import Inference, InferredPopulation
from lab.scenario import POPULATION_KINDS, format_duration

# One Exchange hour (the peak hour's length) in a minute of wall clock.
DURATION, RAMP, TIME_SCALE = "60s", "10s", 60
SHARE_DIGITS = 4


def scenario_toml(inference: Inference, name: str) -> str:
    lines = [*_header(inference), ""]
    lines += [
        f"name = {_string(name)}",
        f"description = {_string(_description(inference))}",
        f'duration = "{DURATION}"   # one Exchange hour at time_scale {TIME_SCALE}: the logs\' peak hour',
        f'ramp = "{RAMP}"',
        f"time_scale = {TIME_SCALE}",
        "seed = 1",
        "",
        "[farm]",
        "servers = 3              # set your farm's size",
        "",
        "[balancer]",
        'preset = "recommended"   # the persistence you want to test (caslab balancer config --help)',
        "",
        *_rates(inference),
    ]
    for population in inference.populations:
        lines += ["", *_population(population)]
    lines += ["", "[thresholds]", "hard_breaks = 0", "error_rate_pct = 1", ""]
    return "\n".join(lines)


def _header(inference: Inference) -> list[str]:
    files = inference.observed.files
    formats = sorted({f.format for f in files})
    first = min((f.first_ts for f in files if f.first_ts is not None), default=None)
    last = max((f.last_ts for f in files if f.last_ts is not None), default=None)
    span = f", {_utc(first)} to {_utc(last)} UTC" if first is not None and last is not None else ""
    misfits = sum(f.misfits for f in files)
    lines = [
        f"# Written by `caslab scenario from-logs` from {len(files)} files ({', '.join(formats)}){span}:",
        f"# {inference.requests:,} requests of {inference.clients:,} clients of {inference.users:,} users. "
        "User names and device ids were counted, never written.",
    ]
    if inference.observed.time_scale != 1:
        lines.append(
            f"# The logs ran {inference.observed.time_scale:g} times faster than Exchange (--time-scale): "
            "times below are Exchange time."
        )
    if misfits:
        lines.append(f"# {misfits:,} lines of other formats or broken were counted and not read.")
    lines += [f"# {note}" for note in inference.notes]
    return lines


def _description(inference: Inference) -> str:
    kinds = ", ".join(f"{p.name} {p.users}" for p in inference.populations)
    return f"populations inferred from logs: {kinds}"


def _rates(inference: Inference) -> list[str]:
    lines = [
        "# Requests per client per hour while active (Exchange time), from the logs; the lab's kinds keep",
        "# their own habits, so compare with the fit report (--report):",
    ]
    for rate in sorted(inference.rates.values(), key=lambda r: -r.clients):
        services = ", ".join(f"{s} {share:.0%}" for s, share in list(rate.services.items())[:4])
        if rate.per_hour is None:
            lines.append(
                f"#   {rate.kind}: {rate.clients:,} clients, too few requests each to say ({services})"
            )
            continue
        gap = format_duration(round(rate.gap_s or 0))
        lines.append(
            f"#   {rate.kind}: {rate.per_hour:,.1f}/h, one every {gap} ({rate.clients:,} clients; {services})"
        )
    if inference.peak:
        peak = inference.peak
        lines.append(
            f"# Peak hour from {_utc(peak.start_ts)} UTC (in the logs' clock): {peak.users:,} users and "
            f"{peak.clients:,} clients active, {peak.requests:,} requests."
        )
    return lines


def _population(p: InferredPopulation) -> list[str]:
    spec = POPULATION_KINDS[p.kind]
    lines = [f"# {sentence}" for sentence in p.evidence]
    if p.peak_users:
        lines.append(f"# {p.peak_users:,} of its users were active in the peak hour.")
    lines += ["[[population]]", f'kind = "{p.kind}"', f'name = "{p.name}"', f"users = {p.users}"]
    if not spec.own_address:
        if p.addresses > p.users:
            lines.append(f"# {p.addresses} addresses, but a population has at most one per user:")
        lines.append(f"source_ips = {p.source_ips}")
    shares = {kind: round(count / p.users, SHARE_DIGITS) for kind, count in p.clients.items()}
    lines.append("clients = { " + ", ".join(f"{k} = {v:g}" for k, v in sorted(shares.items())) + " }")
    if p.ip_change_every_s:
        every = format_duration(max(1, round(p.ip_change_every_s)))
        if p.source_ips >= 2:
            lines.append(f'ip_change_every = "{every}"')
        else:  # one device: a population has at most one address per user, and moving needs two
            lines.append(
                f"# its one device changed address every {every}; a population of one user has one "
                "address, so it stays on it here"
            )
    return lines


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def scenario_name(output: Path | None) -> str:
    """The scenario's name: the output file's stem, else from-logs."""
    return output.stem if output is not None else "from-logs"
