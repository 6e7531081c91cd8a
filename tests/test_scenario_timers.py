"""The time keys of a scenario (DESIGN.md section 13): idle timeouts and a table size for the balancer,
Exchange's settings for every CAS, the cut and heartbeat thresholds. They reach the driver scaled and
the CAS as flags; every mistake names the file and the key; a driver's refusal blames the key that
asked."""

from __future__ import annotations

import tomllib

import jsonschema
import pytest

from lab.backends.local import LocalLab
from lab.backends.owner import Owner
from lab.backends.state import LabRecord
from lab.farm import LocalFarm
from lab.model import ExchangeSettings, Timeouts, local_farm
from lab.run import make_lab
from lab.scenario import scenario_schema
from tests.test_scenario import error_of, load_text

BASE = """
name = "t"
duration = "20s"
time_scale = 60
[[population]]
kind = "intranet"
users = 4
"""

TIMERS = """
[farm.exchange]
rpc_min_connection_timeout = "120s"
eas_heartbeat = { min = "2m", max = "30m" }
owa_timeout = "8h"
tcp_keepalive = "30m"
[balancer]
driver = "haproxy"
topology = "vip-per-service"
preset = "recommended"
persistence_table_size = 5000
[balancer.timeouts]
client_idle = "5m"
server_idle = "10m"
rpchttp = { client_idle = "20m", server_idle = "30m" }
mapi = { server_idle = "1h" }
[thresholds]
cut = { rpchttp = 0, mapi = 2 }
eas_heartbeat_alert = false
"""


def test_the_keys_are_read_in_exchange_time_and_reach_the_driver_scaled(tmp_path):
    scenario = load_text(tmp_path, BASE + TIMERS)
    own = {"rpchttp": Timeouts(1200, 1800), "mapi": Timeouts(None, 3600)}
    assert scenario.balancer.timeouts == Timeouts(300, 600, own)
    assert scenario.balancer.persistence_table_size == 5000
    spec = scenario.balancer_spec(local_farm(3))
    assert spec.timeouts == Timeouts(5, 10, {"rpchttp": Timeouts(20, 30), "mapi": Timeouts(None, 60)})
    assert spec.timeouts.of("rpchttp") == Timeouts(20, 30) and spec.timeouts.of("mapi") == Timeouts(5, 60)
    assert spec.persistence_table_size == 5000
    assert (scenario.thresholds.cut, scenario.thresholds.eas_heartbeat_alert) == (
        {"rpchttp": 0, "mapi": 2},
        False,
    )


def test_left_out_they_change_nothing(tmp_path):
    scenario = load_text(tmp_path, BASE)
    spec = scenario.balancer_spec(local_farm(3))
    assert (spec.timeouts, spec.persistence_table_size) == (Timeouts(), None)
    assert scenario.farm.exchange == ExchangeSettings() and scenario.farm.exchange.cas_args() == []
    assert (scenario.thresholds.cut, scenario.thresholds.eas_heartbeat_alert) == (None, None)


def test_the_exchange_settings_reach_every_cas_as_flags_in_exchange_time(tmp_path):
    scenario = load_text(tmp_path, BASE + TIMERS)
    settings = scenario.farm.exchange
    assert settings == ExchangeSettings(120, 120, 1800, 8 * 3600, 1800)
    flags = ["--rpc-min-connection-timeout", "120.0", "--eas-heartbeat-min", "120.0", "--eas-heartbeat-max",
             "1800.0", "--owa-timeout", "28800.0", "--tcp-keepalive", "1800.0"]  # fmt: skip
    # What `caslab run` builds for the local backend: every CAS's command carries them, with the scale.
    record = LabRecord("t", "run", "local", str(tmp_path), Owner.this_process())  # not saved: no state file
    spec = scenario.balancer_spec(local_farm(2, "127.0.19"))
    lab = make_lab(
        spec, tmp_path, None, record, time_scale=scenario.time_scale, exchange=scenario.farm.exchange
    )
    assert isinstance(lab, LocalLab)
    for cas in lab.servers:
        command = lab.farm._command(cas)
        assert float(command[command.index("--time-scale") + 1]) == 60
        assert command[-len(flags) :] == flags
    # Only what the file sets is passed: the CAS's own defaults are Exchange's.
    one = ExchangeSettings(tcp_keepalive_s=1800)
    farm = LocalFarm(local_farm(1), farm_key=b"k", run_dir=tmp_path, exchange=one)
    assert farm._command(farm.endpoints[0])[-2:] == ["--tcp-keepalive", "1800.0"]


def test_a_heartbeat_limit_left_out_keeps_exchange_default_in_the_checks(tmp_path):
    scenario = load_text(tmp_path, BASE + '[farm.exchange]\neas_heartbeat = { max = "45m" }\n')
    assert (scenario.farm.exchange.eas_heartbeat_min_s, scenario.farm.exchange.eas_heartbeat_max_s) == (
        None,
        2700,
    )
    error = error_of(tmp_path, BASE + '[farm.exchange]\neas_heartbeat = { max = "30s" }\n')
    assert error.key == "farm.exchange.eas_heartbeat.max" and "min 1m is above max 30s" in error.problem


SCHEMA = jsonschema.Draft7Validator(scenario_schema())


@pytest.mark.parametrize(
    ("edit", "key", "says", "in_schema"),
    [
        ('[balancer.timeouts]\nclient_idle = "-5m"\n', "balancer.timeouts.client_idle",
         "must be longer than 0s, got '-5m'", True),
        ('[balancer.timeouts]\nserver_idle = "0s"\n', "balancer.timeouts.server_idle",
         "must be longer than 0s", False),
        ("[balancer.timeouts]\nclient_idle = 300\n", "balancer.timeouts.client_idle",
         "expected a string such as", True),
        ('[balancer.timeouts]\nrpchtp = { client_idle = "5m" }\n', "balancer.timeouts.rpchtp",
         "did you mean 'rpchttp'?", True),
        ('[balancer.timeouts]\nimap = { client_idle = "5m" }\n', "balancer.timeouts.imap",
         "allowed here: client_idle, server_idle, owa, ecp", True),
        ('[balancer.timeouts]\nrpchttp = { client_idel = "5m" }\n', "balancer.timeouts.rpchttp.client_idel",
         "did you mean 'client_idle'?", True),
        ('[balancer.timeouts]\neas = { server_idle = "0s" }\n', "balancer.timeouts.eas.server_idle",
         "must be longer than 0s", False),
        ("[balancer.timeouts]\neas = {}\n", "balancer.timeouts.eas", "sets nothing", False),
        ('[balancer.timeouts]\neas = "5m"\n', "balancer.timeouts.eas", "expected a table, got a string",
         True),
        ('[balancer.timeout]\nclient_idle = "5m"\n', "balancer.timeout", "did you mean 'timeouts'?", True),
        ("[balancer]\npersistence_table_size = 0\n", "balancer.persistence_table_size", "at least 1", True),
        ("[balancer]\npersistence_table_size = -5\n", "balancer.persistence_table_size", "at least 1", True),
        ('[farm.exchange]\neas_heartbeat = { min = "10m", max = "5m" }\n', "farm.exchange.eas_heartbeat.min",
         "min 10m is above max 5m", False),
        ('[farm.exchange]\neas_heartbeat = { max = "2h" }\n', "farm.exchange.eas_heartbeat.max",
         "accepts heartbeat limits from 1s to 59m (3540 s), got '2h'", False),
        ('[farm.exchange]\neas_heartbeat = { min = "500ms" }\n', "farm.exchange.eas_heartbeat.min",
         "accepts heartbeat limits from 1s", False),
        ('[farm.exchange]\neas_heartbeat = { mn = "1m" }\n', "farm.exchange.eas_heartbeat.mn",
         "did you mean 'min'?", True),
        ('[farm.exchange]\nrpc_min_connection_timeout = "0s"\n', "farm.exchange.rpc_min_connection_timeout",
         "must be longer than 0s", False),
        ('[farm.exchange]\ntcp_keepalive = "-2h"\n', "farm.exchange.tcp_keepalive", "must be longer than 0s",
         True),
        ('[farm.exchange]\nowa_timeot = "5m"\n', "farm.exchange.owa_timeot", "did you mean 'owa_timeout'?",
         True),
        ("[thresholds]\ncut = -1\n", "thresholds.cut", "at least 0", True),
        ("[thresholds]\ncut = { imap = 0 }\n", "thresholds.cut.imap", "allowed here: owa", True),
        ("[thresholds]\neas_heartbeat_alert = 0\n", "thresholds.eas_heartbeat_alert",
         "expected true or false, got an integer", True),
    ],
)  # fmt: skip
def test_a_mistake_names_the_file_and_the_key(tmp_path, edit, key, says, in_schema):
    """`in_schema`: the JSON Schema (what an editor checks as people type) sees it too; values it cannot
    judge alone (zero, a range of Exchange's, two keys compared) are the reader's."""
    error = error_of(tmp_path, BASE + edit)
    assert (error.key, says in error.problem) == (key, True), error.problem
    assert SCHEMA.is_valid(tomllib.loads(BASE + edit)) is not in_schema


def test_the_schema_accepts_what_the_reader_accepts(tmp_path):
    text = BASE + TIMERS
    load_text(tmp_path, text)
    assert SCHEMA.is_valid(tomllib.loads(text))


@pytest.mark.parametrize(
    ("edit", "key", "says"),
    [
        # HAProxy 2.6 has one client timeout per frontend: a service's own on the one VIP cannot be.
        ('[balancer]\ndriver = "haproxy"\n[balancer.timeouts]\nclient_idle = "5m"\n'
         'rpchttp = { client_idle = "20m" }\n', "balancer.timeouts.rpchttp.client_idle",
         "topology vip-per-service"),
        # nginx keeps no persistence table.
        ('[balancer]\ndriver = "nginx"\npersistence_table_size = 100\n', "balancer.persistence_table_size",
         "nginx OSS keeps no persistence table"),
        # HAProxy keeps tables, but none of these methods uses one.
        ('[balancer]\ndriver = "haproxy"\npreset = "none-all"\npersistence_table_size = 100\n',
         "balancer.persistence_table_size", "no service here has one of them"),
        # Traefik cannot time out TCP at all: the scenario's own timeout covers MAPI.
        ('[balancer]\ndriver = "traefik"\npreset = "none-all"\n[balancer.timeouts]\nserver_idle = "5m"\n',
         "balancer.timeouts.server_idle", "Traefik's TCP routers have no idle timeout"),
        # OWA and ECP share one pool: one server_idle.
        ('[balancer]\ndriver = "envoy"\n[balancer.timeouts]\necp = { server_idle = "20m" }\n',
         "balancer.timeouts.ecp.server_idle", "owa and ecp share one pool"),
    ],
)  # fmt: skip
def test_what_the_driver_refuses_blames_the_key_that_asked(tmp_path, edit, key, says):
    error = error_of(tmp_path, BASE + edit)
    assert (error.key, says in error.problem) == (key, True), error.problem


def test_a_refusal_quotes_the_scenarios_own_values_not_scaled_ones(tmp_path):
    edit = '[balancer]\ndriver = "envoy"\n[balancer.timeouts]\nserver_idle = "5m"\n'
    edit += 'ecp = { server_idle = "20m" }\n'
    error = error_of(tmp_path, BASE + edit)
    assert "owa 300 s, ecp 1200 s" in error.problem, error.problem


def test_the_compose_labs_balancer_runs_the_scenarios_clock():
    """The balancer container of compose/lab.yml takes the scenario its CAS and load generators take
    (CASLAB_SCENARIO), so stick entries and idle timeouts run its time_scale faster there too; a preset
    named in CASLAB_PRESET replaces the scenario's, and the lab is plain HTTP whatever the scenario says."""
    from lab.balancers.container import balancer_spec
    from lab.scenario import load_scenario

    servers = local_farm(3, "10.213.0")
    quickstart = load_scenario("quickstart")  # time_scale 120, recommended: 30 min stick entries
    spec = balancer_spec({"CASLAB_DRIVER": "haproxy", "CASLAB_PRESET": ""}, servers)
    assert (spec.driver, spec.preset, spec.tls) == ("haproxy", "recommended", "none")
    assert spec.vip.host == "0.0.0.0"
    assert spec.persistence == quickstart.balancer_spec(servers).persistence
    assert spec.persistence["owa"].timeout_s == 30 * 60 / 120

    env = {"CASLAB_SCENARIO": "tenant-10k", "CASLAB_DRIVER": "nginx", "CASLAB_PRESET": "none-all"}
    spec = balancer_spec(env, servers)  # tenant-10k is HTTPS offload at time_scale 10
    assert (spec.driver, spec.preset, spec.tls) == ("nginx", "none-all", "none")
    with pytest.raises(SystemExit, match="no such file or bundled scenario"):
        balancer_spec({"CASLAB_SCENARIO": "no-such", "CASLAB_DRIVER": "haproxy"}, servers)
