"""Scenario files (DESIGN.md section 8): TOML in, typed frozen dataclasses out, every mistake explained.

A scenario names a farm, a balancer (driver, preset, per-service persistence overrides), populations of
clients, faults and thresholds. `load_scenario` reads a file or a bundled name (`lab/scenarios/*.toml`)
and checks it completely before anything starts: a mistake is one `ScenarioError` naming the file, the
key as a dotted path (`population[1].ip_change_every`) and what is allowed there.

    durations.py  "500ms", "2m", "1m30s": the one pattern, parsing and display
    model.py      the typed scenario (frozen dataclasses), population kinds, ScenarioError
    keys.py       every key of a file, declared once: type, allowed values, default, description
    reader.py     TOML -> Scenario by those keys, with errors that name the file and the key
    rules.py      rules across sections, and what the chosen driver refuses
    schema.py     the JSON Schema of scenario files, made from keys.py (`caslab scenario schema`)
    lookup.py     bundled scenarios by name, and load_scenario

Keys beyond DESIGN.md section 8, each because a part of the lab needs it:
- top level `description` (one line, shown by `caslab scenarios` and in the report) and `expect`
  ("pass" | "fail": the verdict the scenario is meant to produce, a known answer of section 12, so a
  test can run a bundled scenario and compare), and `[expect_by_driver]` where a balancer is known
  to give another verdict, each with its reason (a timer scenario on HAProxy, DESIGN.md section 13):
  the report and summary.json then judge the run by its driver's;
- `[farm] oab_skew` (DESIGN.md section 3: the CAS differ in OAB version);
- `[farm] tls_max_version` ("1.2" | "1.3", default "1.3": the highest TLS version the clients offer;
  "1.2" is what makes `ssl-session-id` persistence able to hold, section 12; loadgen/tls.py);
- `[[population]] name` (the label in events and reports; default the kind, `kind#i` when a kind
  repeats) and `keeps_cookies` (whether `ews-app` clients keep cookies, section 4; default true);
- `[thresholds] fault_collateral_breaks`: sessions NOT on a failed CAS that broke while it was out
  (a CAS failing is allowed to break its own sessions, never the others').

Times: durations are strings such as "500ms", "20s", "2m", "1h" or "1m30s". `duration`, `ramp` and a
fault's `at` are wall-clock time; `at` counts from the start of the load phase (after the ramp).
Exchange's own times run `time_scale` faster: protocol timers in the mock CAS and the settings of
`[farm.exchange]` (each CAS divides them), persistence and idle timeouts (`[balancer.timeouts]`, divided
when `balancer_spec` builds the spec for a driver) and a mobile device's `ip_change_every` (divided by
the load generator).
"""

from lab.scenario.durations import DURATION_HELP, format_duration, parse_duration
from lab.scenario.lookup import SCENARIO_DIR, bundled_scenarios, load_scenario
from lab.scenario.model import (
    DEFAULT_THRESHOLDS,
    EXPECTATIONS,
    POPULATION_KINDS,
    BalancerSection,
    DriverExpectation,
    Farm,
    Fault,
    Population,
    PopulationKind,
    Scenario,
    ScenarioError,
    Thresholds,
)
from lab.scenario.reader import parse_scenario
from lab.scenario.schema import SCHEMA_FILE, scenario_schema, schema_text

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DURATION_HELP",
    "EXPECTATIONS",
    "POPULATION_KINDS",
    "SCENARIO_DIR",
    "SCHEMA_FILE",
    "BalancerSection",
    "DriverExpectation",
    "Farm",
    "Fault",
    "Population",
    "PopulationKind",
    "Scenario",
    "ScenarioError",
    "Thresholds",
    "bundled_scenarios",
    "format_duration",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "scenario_schema",
    "schema_text",
]
