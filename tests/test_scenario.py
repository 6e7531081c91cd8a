"""Scenario files: every bundled one loads, and every kind of mistake names the file, the key and what
is allowed (DESIGN.md section 8)."""

from __future__ import annotations

import contextlib
import json
import re
import tomllib
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from caslab.vocab import METHODS
from lab import balancers
from lab.cli import main
from lab.model import CasEndpoint, Persistence, TlsFiles, Vip, local_farm
from lab.scenario import (
    SCENARIO_DIR,
    SCHEMA_FILE,
    Scenario,
    ScenarioError,
    bundled_scenarios,
    format_duration,
    load_scenario,
    parse_duration,
    parse_scenario,
    scenario_schema,
)
from lab.scenario.durations import DURATION_PATTERN
from lab.scenario.schema import SCHEMA_DIRECTIVE

# A valid scenario; tests add sections after it or replace one of its top-level lines.
BASE = """
name = "t"
duration = "20s"
ramp = "2s"
time_scale = 60
[[population]]
kind = "direct"
users = 10
"""


DESIGN_EXAMPLE = """
name = "hosted-tenant"
duration = "60s"
ramp = "10s"
time_scale = 60
seed = 7
[farm]
servers = 4
tls = "bridge"
[balancer]
driver = "nginx"
topology = "single-vip"
preset = "source-ip-all"
persistence.eas = { method = "header", name = "Authorization", timeout = "45m" }
health = { interval = "1s", fall = 2, rise = 2 }
[[population]]
kind = "tenant-nat"
users = 1000
source_ips = 1
clients = { browser = 0.5, outlook2010-rpchttp = 0.4, eas-device = 0.3 }
[[population]]
kind = "mobile-carrier"
users = 400
source_ips = 8
ip_change_every = "2m"
[[fault]]
at = "30s"
server = "CAS02"
action = "stop"
[thresholds]
hard_breaks = 0
split_sessions_pct = { eas = 5 }
balance_max_over_mean = 1.25
error_rate_pct = 0.5
"""  # DESIGN.md section 8


def edited(edit: str) -> str:
    """BASE with `edit` added: a top-level key replaces BASE's line of that key, a section goes last."""
    if edit.startswith("["):
        return BASE + edit
    key = edit.split("=")[0].strip()
    return edit + "".join(line + "\n" for line in BASE.splitlines() if not line.startswith(key + " "))


class AnyMethodDriver(balancers.Balancer):
    """Stands in for a real driver that can do everything, so these tests do not depend on the drivers."""

    methods: ClassVar[frozenset[str]] = frozenset(METHODS)

    def refusals(self) -> list[balancers.Refusal]:
        return []


@pytest.fixture
def any_driver():
    haproxy, nginx = (type(name, (AnyMethodDriver,), {"name": name}) for name in ("haproxy", "nginx"))
    with balancers.DRIVERS.replaced(haproxy), balancers.DRIVERS.replaced(nginx):
        yield


def load_text(tmp_path: Path, text: str, name: str = "s.toml") -> Scenario:
    path = tmp_path / name
    path.write_text(text)
    return load_scenario(path)


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as err:
        load_text(tmp_path, text)
    assert str(tmp_path / "s.toml") in str(err.value), "the message names the file"
    return err.value


SCHEMA = jsonschema.Draft7Validator(scenario_schema())


def schema_accepts(text: str) -> bool:
    """Whether the JSON Schema of scenario files (what an editor checks as people type) accepts `text`."""
    return SCHEMA.is_valid(tomllib.loads(text))


# ---- bundled scenarios ------------------------------------------------------------------------------


# Scenarios of realistic size (issue 13), run by hand or by a bench, not by the tests: minutes and
# both cores of the lab machine.
SCALE_SCENARIOS = {"tenant-10k"}


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_every_bundled_scenario_loads_and_says_what_it_shows(name):
    scenario = load_scenario(name)
    text = (SCENARIO_DIR / f"{name}.toml").read_text()
    directive, _, text = text.partition("\n")
    assert directive == SCHEMA_DIRECTIVE, "a bundled scenario names its schema first, for editors"
    assert text.startswith("# "), "then a comment saying what it shows"
    header = text[: text.index("\nname")]
    assert "Expected verdict: " + scenario.expect in header
    assert scenario.name == name and scenario.description
    if name in SCALE_SCENARIOS:
        return
    assert scenario.ramp_s + scenario.duration_s < 60, "each bundled scenario runs in well under a minute"
    assert sum(p.users for p in scenario.populations) <= 100, "small enough for 2 shared cores"


def test_the_known_answers_of_the_design_are_all_bundled():
    known = {
        "quickstart", "hosted-tenant-source-ip", "hosted-tenant-recommended", "lb-cookie-everything",
        "mobile-carrier-churn", "citrix-mapi", "round-robin", "cas-failure", "ssl-session-id-tls13",
        # section 13, research-timers.md
        "outlook-anywhere-idle-5m", "outlook-anywhere-idle-5m-keepalive-120s", "direct-push-idle-5m",
        "direct-push-idle-30m", "mapi-idle-60m", "mapi-idle-60m-keepalive-30m", "persistence-table-too-small",
        "persistence-timeout-short",
    }  # fmt: skip
    assert known <= set(bundled_scenarios())


def test_quickstart_has_every_population_kind_and_client_kind_on_the_default_driver():
    scenario = load_scenario("quickstart")
    assert scenario.balancer.driver == "envoy" and scenario.expect == "pass"
    assert {p.kind for p in scenario.populations} == {
        "tenant-nat",
        "mobile-carrier",
        "intranet",
        "citrix",
        "direct",
    }
    clients = {kind for p in scenario.populations for kind in p.client_counts()}
    assert clients == {
        "browser",
        "outlook2010-rpchttp",
        "outlook2007-rpchttp",
        "outlook-mapi",
        "eas-device",
        "ews-app",
    }


def test_a_bare_name_finds_the_bundled_file_and_an_unknown_one_lists_them():
    scenario = load_scenario("round-robin")
    assert scenario.source_text == (SCENARIO_DIR / "round-robin.toml").read_text()
    with pytest.raises(ScenarioError, match=r"bundled: .*quickstart"):
        load_scenario("no-such-scenario")


def test_the_origin_is_what_the_user_typed_never_a_path_of_this_machine(tmp_path, monkeypatch):
    """summary.json and every message carry the origin: a bundled scenario's name, a file's path as
    given on the command line (relative stays relative)."""
    assert load_scenario("round-robin").origin == "round-robin"
    assert load_scenario("round-robin").to_dict()["origin"] == "round-robin"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "farm.toml").write_text(BASE)
    monkeypatch.chdir(tmp_path)
    assert load_scenario("./mine/farm.toml").origin == "./mine/farm.toml"
    assert load_scenario(Path("mine/farm.toml")).origin == "mine/farm.toml"
    with pytest.raises(ScenarioError, match=r"^mine/typo\.toml: cannot read"):
        load_scenario("mine/typo.toml")
    with pytest.raises(ScenarioError, match=r"^cas-failure \(with --duration 5s\): fault\[0\]\.at: "):
        load_scenario("cas-failure").with_overrides(duration="5s")


# A path of a machine: a home, a work tree or a temporary folder (the committed example was made in one).
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|Users)/")


def test_no_committed_example_report_holds_a_path_of_this_machine():
    examples = Path(__file__).parent.parent / "reports" / "examples"
    files = [p for p in examples.rglob("*") if p.is_file()]
    assert files, "the example report is committed"
    here = [str(Path(__file__).parent.parent.resolve()), str(Path.home())]  # this checkout, this home
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        found = [m.group() for m in MACHINE_PATH.finditer(text)] + [p for p in here if p != "/" and p in text]
        assert not found, f"{path.relative_to(examples)} holds a path of this machine: {found}"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")


# ---- what a good file turns into --------------------------------------------------------------------


def test_the_design_example_loads_with_its_values(tmp_path, any_driver):
    scenario = load_text(tmp_path, DESIGN_EXAMPLE)
    assert (scenario.duration_s, scenario.ramp_s, scenario.time_scale, scenario.seed) == (60, 10, 60, 7)
    assert scenario.farm.server_names == ("CAS01", "CAS02", "CAS03", "CAS04")
    assert scenario.balancer.persistence["eas"] == Persistence("header", "Authorization", 2700)
    tenant, mobile = scenario.populations
    assert tenant.client_counts() == {"browser": 500, "outlook2010-rpchttp": 400, "eas-device": 300}
    assert (mobile.source_ips, mobile.ip_change_every_s, mobile.clients) == (8, 120, {"eas-device": 1.0})
    assert scenario.fault_schedule()[0][0] == 40, "a fault's `at` counts from the end of the ramp"
    assert scenario.thresholds.split_sessions_pct == {"eas": 5.0}


def test_population_defaults_follow_the_kind(tmp_path):
    scenario = load_text(
        tmp_path,
        BASE
        + """
[[population]]
kind = "intranet"
users = 7
[[population]]
kind = "citrix"
users = 5
[[population]]
kind = "tenant-nat"
users = 9
[[population]]
kind = "mobile-carrier"
users = 9
[[population]]
kind = "direct"
users = 3
""",
    )
    by_name = {p.name: p for p in scenario.populations}
    assert by_name["intranet"].source_ips == 7, "intranet users each have their own address"
    assert by_name["citrix"].source_ips == 1 and by_name["tenant-nat"].source_ips == 1
    assert by_name["citrix"].clients == {"outlook-mapi": 1.0}
    assert by_name["mobile-carrier"].clients == {"eas-device": 1.0}
    assert set(by_name) >= {"direct#0", "direct#5"}, "a repeated kind gets #index names"
    assert scenario.thresholds.hard_breaks == 0, "no [thresholds]: a default that can fail"


def test_balancer_spec_applies_preset_overrides_and_time_scale(tmp_path, any_driver):
    scenario = load_text(
        tmp_path,
        BASE
        + """
[farm]
tls = "offload"
[balancer]
driver = "nginx"
preset = "recommended"
persistence.oab = "source-ip"
persistence.rpchttp = { method = "cookie-hash", name = "OutlookSession", timeout = "1h", \
  fallback = "source-ip" }
""",
    )
    files = TlsFiles(Path("ca"), Path("c"), Path("k"), Path("p"))
    servers: list[CasEndpoint] = local_farm(3, base="127.0.18")
    spec = scenario.balancer_spec(servers, Vip(host="127.0.18.1"), files)
    assert spec.driver == "nginx" and spec.preset == "recommended" and spec.tls == "offload"
    assert spec.persistence["oab"].method == "source-ip"
    assert spec.persistence["eas"] == Persistence("header", "Authorization", 1800 / 60)
    rpc = spec.persistence["rpchttp"]
    assert (rpc.name, rpc.timeout_s, rpc.fallback.method) == ("OutlookSession", 60.0, "source-ip")
    assert spec.servers == servers and spec.vip.host == "127.0.18.1" and spec.tls_files == files


def test_command_line_overrides_are_applied_and_checked_again(tmp_path, any_driver):
    scenario = load_text(tmp_path, BASE + '[[fault]]\nat = "10s"\nserver = "CAS01"\naction = "stop"\n')
    changed = scenario.with_overrides(driver="nginx", preset="none-all", duration="15s")
    assert (changed.balancer.driver, changed.balancer.preset, changed.duration_s) == ("nginx", "none-all", 15)
    assert changed.overrides == {"driver": "nginx", "preset": "none-all", "duration": "15s"}
    assert scenario.with_overrides() is scenario
    with pytest.raises(ScenarioError, match=r"\(with --duration 5s\): fault\[0\].at"):
        scenario.with_overrides(duration="5s")
    with pytest.raises(ScenarioError, match=r"--duration: .*not a duration"):
        scenario.with_overrides(duration="soon")
    with pytest.raises(ScenarioError, match=r"--preset: unknown preset 'sticky'; allowed: article"):
        scenario.with_overrides(preset="sticky")
    with pytest.raises(ScenarioError, match=r"--driver: unknown driver 'f5'; allowed: .*envoy"):
        scenario.with_overrides(driver="f5")


# ---- every mistake names the key and what is allowed ---------------------------------------------


@pytest.mark.parametrize(
    ("edit", "key", "says"),
    [
        # unknown keys, with the closest known key suggested
        ('duraton = "20s"\n', "duraton", "did you mean 'duration'?"),
        ("[farm]\nserver = 3\n", "farm.server", "did you mean 'servers'?"),
        ('[balancer]\npersistence.eas = { method = "header", nmae = "Authorization" }\n',
         "balancer.persistence.eas.nmae", "did you mean 'name'?"),
        ("[thresholds]\nhard_break = 0\n", "thresholds.hard_break", "did you mean 'hard_breaks'?"),
        # wrong types
        ('time_scale = "fast"\n', "time_scale", "expected a number, got a string"),
        ('[farm]\nservers = "three"\n', "farm.servers", "expected an integer, got a string"),
        ("[farm]\nservers = 0\n", "farm.servers", "at least 1"),
        ('[farm]\noab_skew = "yes"\n', "farm.oab_skew", "expected true or false"),
        ("[[fault]]\nat = 10\nserver = 'CAS01'\naction = 'stop'\n", "fault[0].at",
         "expected a string such as"),
        # bad durations
        ('ramp = "10 seconds"\n', "ramp", "'10 seconds' is not a duration"),
        ('ramp = "5x"\n', "ramp", "is not a duration"),
        # unknown names
        ('[balancer]\npreset = "sticky"\n', "balancer.preset", "allowed: article, recommended"),
        ('[balancer]\ntopology = "anycast"\n', "balancer.topology", "allowed: single-vip, vip-per-service"),
        ('[farm]\ntls = "tls13"\n', "farm.tls", "allowed: none, offload, bridge, passthrough"),
        ('[balancer]\ndriver = "f5"\n', "balancer.driver", "'f5' is not allowed; allowed: envoy, external"),
        ('[balancer]\npersistence.eas = "sticky"\n', "balancer.persistence.eas.method",
         "allowed: none, leastconn"),
        ('[balancer]\npersistence.imap = "none"\n', "balancer.persistence.imap", "allowed here: owa, ecp"),
        ('[balancer]\npersistence.eas = "header"\n', "balancer.persistence.eas.name", "needs the name"),
        ('[balancer]\npersistence.eas = "source-ip X"\n', "balancer.persistence.eas.name", "takes no name"),
        ("[thresholds]\nhard_breaks = { imap = 0 }\n", "thresholds.hard_breaks.imap", "allowed here: owa"),
        ("[[fault]]\nat = '5s'\nserver = 'CAS01'\naction = 'reboot'\n", "fault[0].action",
         "allowed: stop, start, drain, health-down, health-up"),
    ],
)  # fmt: skip
def test_a_mistake_names_the_file_the_key_and_what_is_allowed(tmp_path, edit, key, says):
    error = error_of(tmp_path, edited(edit))
    assert (error.key, says in error.problem) == (key, True), error.problem
    assert not schema_accepts(edited(edit)), "the schema sees it too, so an editor marks it as people type"


# ---- a known answer that differs on one driver ------------------------------------------------------

KNOWN = 'expect = "pass"\n'  # the known answer, a top-level key: before BASE's [[population]]


def test_expect_by_driver_gives_the_verdict_and_reason_of_the_runs_driver(tmp_path, any_driver):
    differs = '[expect_by_driver.haproxy]\nexpect = "fail"\nreason = "HAProxy ends it"\n'
    scenario = load_text(tmp_path, KNOWN + BASE + differs)
    assert (scenario.expect, scenario.balancer.driver) == ("pass", "envoy")
    assert (scenario.expected, scenario.expected_reason) == ("pass", "")  # Envoy: the known answer
    on_haproxy = scenario.with_overrides(driver="haproxy")
    assert (on_haproxy.expected, on_haproxy.expected_reason) == ("fail", "HAProxy ends it")
    assert on_haproxy.to_dict()["expect_by_driver"] == {
        "haproxy": {"expect": "fail", "reason": "HAProxy ends it"}
    }


@pytest.mark.parametrize(
    ("known", "edit", "key", "says", "in_schema"),
    [
        (KNOWN, '[expect_by_driver.f5]\nexpect = "fail"\nreason = "r"\n', "expect_by_driver.f5",
         "allowed here: envoy", True),
        (KNOWN, '[expect_by_driver.haproxy]\nexpect = "fail"\n', "expect_by_driver.haproxy.reason",
         "is required", True),
        (KNOWN, '[expect_by_driver.haproxy]\nexpect = "maybe"\nreason = "r"\n',
         "expect_by_driver.haproxy.expect", "allowed: pass, fail", True),
        (KNOWN, '[expect_by_driver.haproxy]\nexpect = "pass"\nreason = "r"\n',
         "expect_by_driver.haproxy.expect", "is the known answer (expect) already: leave haproxy out", False),
        ("", '[expect_by_driver.haproxy]\nexpect = "fail"\nreason = "r"\n', "expect_by_driver",
         "set expect, the known answer too", False),
        (KNOWN + 'expect_by_driver = "haproxy"\n', "", "expect_by_driver", "expected a table, got a string",
         True),
        (KNOWN, '[expect_by_driver]\nhaproxy = "fail"\n', "expect_by_driver.haproxy",
         "expected a table, got a string", True),
    ],
)  # fmt: skip
def test_an_expect_by_driver_mistake_names_the_file_and_the_key(
    tmp_path, any_driver, known, edit, key, says, in_schema
):
    """`in_schema`: the JSON Schema sees it too; what needs two keys compared is the reader's alone."""
    text = known + BASE + edit
    error = error_of(tmp_path, text)
    assert (error.key, says in error.problem) == (key, True), error.problem
    assert schema_accepts(text) is not in_schema


def test_populations_must_be_an_array_of_tables(tmp_path):
    error = error_of(tmp_path, 'duration = "20s"\npopulation = 3\n')
    assert (error.key, error.problem) == (
        "population",
        "expected an array of tables ([[population]]), got an integer",
    )
    error = error_of(tmp_path, 'duration = "20s"\n')
    assert error.key == "population" and "at least one [[population]]" in error.problem


@pytest.mark.parametrize(
    ("population", "key", "says", "in_schema"),
    [
        ('kind = "hotel"\nusers = 3\n', "population[1].kind",
         "allowed: tenant-nat, mobile-carrier, intranet", True),
        ('kind = "direct"\nusers = 0\n', "population[1].users", "at least 1", True),
        ('kind = "direct"\n', "population[1].users", "is required", True),
        ('kind = "direct"\nusers = 3\nclients = { outlook2003 = 1 }\n', "population[1].clients.outlook2003",
         "allowed here: browser, outlook2010-rpchttp", True),
        ('kind = "direct"\nusers = 3\nclients = { browser = 1.5 }\n', "population[1].clients.browser",
         "between 0 and 1", True),
        ('kind = "direct"\nusers = 3\nclients = { browser = -0.5 }\n', "population[1].clients.browser",
         "non-negative", True),
        ('kind = "direct"\nusers = 3\nclients = { browser = 0 }\n', "population[1].clients",
         "would send nothing", False),
        ('kind = "mobile-carrier"\nusers = 3\nclients = { browser = 1 }\n', "population[1].clients.browser",
         "mobile-carrier has only eas-device", True),
        ('kind = "tenant-nat"\nusers = 3\nsource_ips = 5\n', "population[1].source_ips",
         "at most one address per", False),
        ('kind = "intranet"\nusers = 3\nsource_ips = 2\n', "population[1].source_ips", "their own address",
         True),
        ('kind = "tenant-nat"\nusers = 3\nip_change_every = "1m"\n', "population[1].ip_change_every",
         "only mobile-carrier", True),
        ('kind = "mobile-carrier"\nusers = 3\nsource_ips = 1\nip_change_every = "1m"\n',
         "population[1].ip_change_every", "source_ips of 2 or more", False),
        ('kind = "mobile-carrier"\nusers = 3\nip_change_evry = "1m"\n', "population[1].ip_change_evry",
         "did you mean 'ip_change_every'?", True),
        ('kind = "direct"\nusers = 3\nname = "direct#0"\n', "population[1].name",
         "is the name of population[0]", False),
    ],
)  # fmt: skip
def test_population_mistakes(tmp_path, population, key, says, in_schema):
    """`in_schema`: a mistake of one population alone, which the JSON Schema sees too; the others need
    two keys' values compared (or all populations), which only the reader does."""
    text = BASE + "[[population]]\n" + population
    error = error_of(tmp_path, text)
    assert (error.key, says in error.problem) == (key, True), error.problem
    if in_schema:
        assert not schema_accepts(text)


@pytest.mark.parametrize(
    ("edit", "key", "says"),
    [
        ("[[fault]]\nat = '5s'\nserver = 'CAS09'\naction = 'stop'\n", "fault[0].server",
         "'CAS09' is not in the farm; it has CAS01, CAS02, CAS03"),
        ("[[fault]]\nat = '25s'\nserver = 'CAS01'\naction = 'stop'\n", "fault[0].at",
         "25s is at or after the end of the load phase (duration 20s)"),
        ("[[fault]]\nat = '5s'\nserver = 'CAS01'\naction = 'start'\n", "fault[0].action",
         "no earlier fault took out"),
        ("[[fault]]\nat = '9s'\nserver = 'CAS01'\naction = 'stop'\n[[fault]]\nat = '5s'\nserver = 'CAS01'\n"
         "action = 'drain'\n", "fault[0].action", "CAS01 is out already at 9s"),
        ("[thresholds]\nfault_collateral_breaks = 0\n", "thresholds.fault_collateral_breaks",
         "needs at least one"),
        ('[balancer]\npersistence.owa = "ssl-session-id"\n', "balancer.persistence.owa",
         'needs farm.tls = "passthrough", not "none"'),
        ('[balancer]\npersistence.mapi = "ssl-session-id"\n', "balancer.persistence.mapi",
         "mapi is plain TCP"),
        ('[balancer]\npersistence.addressbook = "lb-cookie"\n', "balancer.persistence.addressbook",
         "allowed there: none, leastconn, source-ip"),
    ],
)  # fmt: skip
def test_impossible_combinations(tmp_path, edit, key, says):
    error = error_of(tmp_path, BASE + edit)
    assert (error.key, says in error.problem) == (key, True), error.problem


def test_passthrough_refuses_methods_that_read_http(tmp_path):
    error = error_of(tmp_path, BASE + '[farm]\ntls = "passthrough"\n')
    assert error.key == "balancer.preset"  # recommended uses lb-cookie for OWA
    assert "lb-cookie for owa reads HTTP" in error.problem and "ssl-session-id" in error.problem


def test_not_valid_toml_names_the_file_and_line(tmp_path):
    error = error_of(tmp_path, BASE + "[farm\n")
    assert "not valid TOML" in error.problem and "line" in error.problem


class RefusingDriver(balancers.Balancer):
    """A stand-in driver that can do only source-ip and none (the real drivers are tested elsewhere)."""

    name = "traefik"
    methods: ClassVar[frozenset[str]] = frozenset({"none", "source-ip"})

    def refusals(self) -> list[balancers.Refusal]:
        return [
            balancers.Refusal(self.name, service, p.method, alternatives=("none", "source-ip"))
            for service, p in self.spec.persistence.items()
            if p.method not in self.methods
        ]


@pytest.fixture
def refusing_driver():
    with balancers.DRIVERS.replaced(RefusingDriver):
        yield


def test_a_method_the_driver_cannot_do_is_refused_naming_the_key(tmp_path, refusing_driver):
    ok = BASE + '[balancer]\ndriver = "traefik"\npreset = "source-ip-all"\n'
    assert load_text(tmp_path, ok).balancer.driver == "traefik"

    error = error_of(tmp_path, ok + 'persistence.eas = { method = "header", name = "Authorization" }\n')
    assert error.key == "balancer.persistence.eas"
    refusal = "traefik cannot do 'header' persistence for eas; for eas it can do: none, source-ip"
    assert refusal in error.problem

    error = error_of(tmp_path, BASE + '[balancer]\ndriver = "traefik"\npreset = "lb-cookie-all"\n')
    assert error.key == "balancer.preset" and "'lb-cookie' persistence for owa" in error.problem

    with pytest.raises(
        ScenarioError, match=r"\(with --preset recommended\): balancer.preset: driver traefik"
    ):
        load_text(tmp_path, ok).with_overrides(preset="recommended")


# ---- the JSON Schema (what editors check as people type) ------------------------------------------


def test_the_committed_schema_is_what_caslab_scenario_schema_prints(capsys):
    assert main(["scenario", "schema"]) == 0
    printed = capsys.readouterr().out
    jsonschema.Draft7Validator.check_schema(json.loads(printed))
    assert SCHEMA_FILE.read_text() == printed, (
        "the committed schema is stale: caslab scenario schema > lab/scenarios/scenario.schema.json"
    )


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_every_bundled_scenario_is_valid_by_the_committed_schema(name):
    text = (SCENARIO_DIR / f"{name}.toml").read_text()
    directive = text.splitlines()[0].removeprefix("#:schema ")
    committed = json.loads((SCENARIO_DIR / directive).read_text())  # what an editor finds
    jsonschema.validate(tomllib.loads(text), committed, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(
    ("mistake", "path"),
    [
        ({"duraton": "20s"}, []),  # an unknown key
        ({"farm": {"servers": "three"}}, ["farm", "servers"]),  # a wrong type
        ({"farm": {"tls": "tls13"}}, ["farm", "tls"]),  # a value outside the enum
        ({"balancer": {"preset": "sticky"}}, ["balancer", "preset"]),
        ({"ramp": "10 seconds"}, ["ramp"]),  # not a duration
        ({"balancer": {"persistence": {"eas": {"method": "header"}}}}, ["balancer", "persistence", "eas"]),
    ],
)
def test_the_schema_rejects_a_wrong_file_at_its_key(mistake, path):
    data = {**tomllib.loads(BASE), **mistake}
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text())).iter_errors(data))
    assert [list(e.absolute_path) for e in errors] == [path], [e.message for e in errors]


def test_the_schema_accepts_what_the_reader_accepts(tmp_path, any_driver):
    """The schema is not stricter than the reader: the design's example passes, and a short form with
    two spaces (the test below tries short forms at random)."""
    assert load_text(tmp_path, DESIGN_EXAMPLE).name == "hosted-tenant" and schema_accepts(DESIGN_EXAMPLE)
    short = BASE + '[balancer]\npersistence.owa = "none"\npersistence.eas = "header  Authorization"\n'
    assert load_text(tmp_path, short).balancer.persistence["eas"].name == "Authorization"
    assert schema_accepts(short)


@given(st.text(alphabet="0123456789.mshx \t", max_size=12))
def test_the_schema_reads_a_duration_as_the_reader_does(text):
    try:
        parse_duration(text)
    except ValueError:
        assert not re.search(DURATION_PATTERN, text)
    else:
        assert re.search(DURATION_PATTERN, text)


@given(st.sampled_from(sorted(METHODS)), st.text(alphabet=" \tXy", max_size=4))
def test_the_schema_reads_a_persistence_string_as_the_reader_does(method, rest):
    text = BASE + f'[balancer]\npersistence.owa = "{method}{rest}"\n'.replace("\t", "\\t")
    try:
        parse_scenario(text, "f.toml")
    except ScenarioError as err:  # a mistake of the string itself, or a rule of the whole (ssl-session-id)
        read = err.key == "balancer.persistence.owa"
    else:
        read = True
    assert schema_accepts(text) == read


# ---- durations (a parser: property-based) ----------------------------------------------------------


def test_durations_in_every_unit():
    assert [parse_duration(t) for t in ("500ms", "20s", "2m", "45m", "1h", "1m30s", "1.5s")] == [
        0.5, 20, 120, 2700, 3600, 90, 1.5,
    ]  # fmt: skip
    for bad in ("", "10", "s", "1d", "-5s", "1m 30", "5s5", "ms"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@given(st.integers(min_value=1, max_value=10 * 24 * 3600 * 1000))
def test_format_and_parse_duration_round_trip(milliseconds):
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.text(max_size=20))
def test_parse_duration_accepts_only_durations_and_raises_nothing_but_value_error(text):
    with contextlib.suppress(ValueError):
        assert parse_duration(text) >= 0


@given(st.text(alphabet="0123456789.mshx :", max_size=12))
def test_a_duration_in_a_file_is_read_or_is_a_scenario_error_naming_the_key(text):
    try:
        scenario = parse_scenario(BASE.replace('ramp = "2s"', f'ramp = "{text}"'), "f.toml")
    except ScenarioError as err:
        assert (err.key, err.origin) == ("ramp", "f.toml")
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert scenario.ramp_s == parse_duration(text)
