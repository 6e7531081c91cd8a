"""caslab advise: candidates per service group, successive halving with a stand-in evaluator (no runs),
the Citrix MAPI known answer, advice.json's shape; one slow search on the lab end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from caslab.vocab import SERVICES
from lab.advise.candidates import (
    baseline_methods,
    generate,
    held_silence_s,
    idle_timeouts,
    used_groups,
    with_methods,
)
from lab.advise.command import advise
from lab.advise.judge import Outcome
from lab.advise.search import Trial, advise_driver, rungs
from lab.scenario import load_scenario, parse_scenario
from tests.namespace import isolated, require_namespaces


def candidates(scenario_name: str, driver: str) -> dict[tuple[str, ...], list[str]]:
    scenario = load_scenario(scenario_name)
    base = baseline_methods(scenario, driver)
    return {
        g: [str(p) for p in generate(scenario, driver, g, base).candidates] for g in used_groups(scenario)
    }


def test_haproxy_candidates_for_the_hosted_tenant():
    found = candidates("hosted-tenant-source-ip", "haproxy")
    assert {"lb-cookie", "app-cookie OutlookSession"} <= set(found[("owa", "ecp")])
    assert "header Authorization" in found[("eas",)]
    assert "source-ip" in found[("rpchttp",)]  # measured, never ruled out unseen: it depends on addresses
    assert found[("oab",)] == ["none"] and found[("autodiscover",)] == ["none"]


@pytest.mark.parametrize("driver", ["haproxy", "nginx", "envoy"])
def test_inserted_cookies_are_no_candidates_for_eas_or_rpchttp(driver):
    scenario = load_scenario("quickstart")  # Outlook 2007 among the tenant's clients
    base = baseline_methods(scenario, driver)
    for group in (("eas",), ("rpchttp",)):
        found = generate(scenario, driver, group, base)
        assert "lb-cookie" not in [str(p) for p in found.candidates]
        why = next(r for r in found.rejected if r.method == "lb-cookie")
        assert why.stage == "clients"
    eas = next(r for r in generate(scenario, driver, ("eas",), base).rejected if r.method == "lb-cookie")
    assert "never returns it" in eas.why


def test_nginx_has_no_app_cookie_and_says_why():
    scenario = load_scenario("hosted-tenant-source-ip")
    base = baseline_methods(scenario, "nginx")
    for group in used_groups(scenario):
        found = generate(scenario, "nginx", group, base)
        assert not [p for p in found.candidates if p.method == "app-cookie"]
    owa = generate(scenario, "nginx", ("owa", "ecp"), base)
    refused = next(r for r in owa.rejected if r.method.startswith("app-cookie"))
    assert refused.stage == "driver" and "nginx" in refused.why


def test_the_persistence_timeout_outlives_the_clients_timers():
    scenario = load_scenario("hosted-tenant-recommended")
    base = baseline_methods(scenario, "haproxy")
    assert base["eas"].timeout_s >= 3540 * 1.25  # the EAS heartbeat may grow to 59 minutes
    assert base["owa"].timeout_s >= 1800


def test_rungs_are_short_then_twice_as_long():
    assert rungs(20) == [5, 10]
    assert rungs(6) == [3]
    assert rungs(120) == [10, 20]


# -- a stand-in evaluator: made-up figures, no runs ------------------------------------------------------


def summary(balance: float, hard: dict[str, int] | None = None, limit: float = 1.5) -> dict:
    services = {s: {"requests": 100, "sessions": 10, "hard_breaks": (hard or {}).get(s, 0)} for s in SERVICES}
    checks = [
        {"name": "hard_breaks", "value": sum((hard or {}).values()), "limit": 0, "pass": not hard},
        {"name": "balance_max_over_mean", "value": balance, "limit": limit, "pass": balance <= limit},
    ]
    return {
        "verdict": "pass" if all(c["pass"] for c in checks) else "fail",
        "checks": checks,
        "services": services,
        "balance": {"max_over_mean": balance},
        "populations": {"tenant": {"shares": {"CAS01": 0.9, "CAS02": 0.05, "CAS03": 0.05}}},
        "scenario": {"populations": [{"name": "tenant", "source_ips": 1}]},
    }


class StandIn:
    """Figures by the method of the group being searched; counts the runs it was asked for."""

    def __init__(self, figures, confirm: dict | None = None, runs_allowed: int = 1000):
        self.figures, self.confirm, self.runs_allowed = figures, confirm, runs_allowed
        self.asked: list[Trial] = []

    def estimate(self, seconds: float) -> float:
        return 0.0

    def __call__(self, trials, deadline):
        out = []
        for trial in trials:
            if len(self.asked) >= self.runs_allowed:
                out.append(Outcome("not run", "the budget ran out", seconds=trial.seconds))
                continue
            self.asked.append(trial)
            s = (self.confirm or summary(1.1)) if trial.candidate is None else self.figures(trial)
            out.append(Outcome(s["verdict"], "stand-in", None, s, trial.seconds))
        return out


def by_method(owa: dict[str, dict], default: dict | None = None):
    def figures(trial):
        if trial.group == ("owa", "ecp"):
            return owa[str(trial.candidate)]
        return default or summary(1.1)

    return figures


def tenant_of_browsers() -> object:
    return parse_scenario(
        """
name = "browsers"
duration = "20s"
time_scale = 120
[farm]
servers = 3
[[population]]
kind = "tenant-nat"
users = 30
clients = { browser = 1.0 }
[thresholds]
hard_breaks = 0
balance_max_over_mean = 1.5
""",
        "browsers.toml",
    )


def test_halving_drops_what_cannot_pass_and_keeps_the_best():
    figures = by_method(
        {
            "source-ip": summary(2.9),  # balance: the tenant on one CAS
            "lb-cookie": summary(1.2),
            "app-cookie OutlookSession": summary(1.05),
        }
    )
    evaluator = StandIn(figures)
    advice = advise_driver(tenant_of_browsers(), "haproxy", evaluator, deadline=float("inf"))
    owa = advice.groups[0]
    assert owa.group == ("owa", "ecp") and str(owa.chosen) == "app-cookie OutlookSession" and owa.passing
    rejected = {r.method: r for r in owa.rejected}
    assert rejected["source-ip"].stage == "run"
    assert (
        "balance 2.90x mean" in rejected["source-ip"].why
        and "tenant, 1 source address" in rejected["source-ip"].why
    )
    assert rejected["lb-cookie"].stage == "ranked"
    assert rejected["none"].stage == "clients"  # never run
    assert advice.status == "pass" and advice.methods["ecp"] == advice.methods["owa"]
    assert [t.seconds for t in evaluator.asked] == [5, 5, 5, 20]  # one round left one; then the confirm


def test_halving_drops_a_candidate_on_its_own_hard_breaks():
    figures = by_method(
        {
            "source-ip": summary(1.2),
            "lb-cookie": summary(1.1, hard={"ecp": 4}),
            "app-cookie OutlookSession": summary(1.3),
        }
    )
    advice = advise_driver(tenant_of_browsers(), "haproxy", StandIn(figures), deadline=float("inf"))
    owa = advice.groups[0]
    why = next(r.why for r in owa.rejected if r.method == "lb-cookie")
    assert why.startswith("hard breaks 4 (ecp 4")
    assert str(owa.chosen) == "source-ip"  # best balance of the two left


def test_a_group_that_piles_its_own_load_on_one_cas_is_dropped(tmp_path):
    """EAS on source IP behind one NAT address: the run's balance may hold (EAS is a small part of the
    load), but EAS alone sits on one CAS where the baseline spread it."""
    import pandas as pd

    from lab.advise.judge import blocking, group_balance

    def run(name: str, eas_servers: list[str]) -> Outcome:
        folder = tmp_path / name
        folder.mkdir()
        rows = [("tenant", "eas", cas) for cas in eas_servers] + [
            ("tenant", "owa", f"CAS0{i % 3 + 1}") for i in range(90)
        ]
        pd.DataFrame(rows, columns=["population", "service", "server"]).to_parquet(folder / "events.parquet")
        s = summary(1.1)
        s["farm"] = {"servers": ["CAS01", "CAS02", "CAS03"]}
        (folder / "summary.json").write_text(json.dumps(s))
        return Outcome("pass", "", folder, s, 5)

    baseline = run("header", ["CAS01", "CAS02", "CAS03"] * 10)
    source_ip = run("source-ip", ["CAS02"] * 30)
    assert group_balance(source_ip, ("eas",)) == 3.0
    thresholds = tenant_of_browsers().thresholds
    why = blocking(source_ip, ("eas",), thresholds, baseline)
    assert why == (
        "balance of eas alone 3.00x mean (limit 1.5; 1.00x with the baseline) "
        "(tenant, 1 source address: 100% of its requests on CAS02)"
    )
    assert blocking(baseline, ("eas",), thresholds, None) is None


def test_when_the_budget_runs_out_the_best_so_far_is_said_to_be_that():
    figures = by_method(
        {"source-ip": summary(2.9), "lb-cookie": summary(1.2), "app-cookie OutlookSession": summary(1.0)}
    )
    advice = advise_driver(
        tenant_of_browsers(), "haproxy", StandIn(figures, runs_allowed=2), deadline=float("inf")
    )
    owa = advice.groups[0]
    assert not owa.complete and str(owa.chosen) == "lb-cookie"
    assert next(r for r in owa.rejected if r.method == "app-cookie OutlookSession").stage == "budget"
    assert advice.status == "fail" and "budget ran out" in advice.reason and advice.confirm is None


def test_a_candidate_left_standing_when_the_budget_runs_out_is_said_to_be_so():
    figures = by_method(
        {"source-ip": summary(1.3), "lb-cookie": summary(1.2), "app-cookie OutlookSession": summary(1.1)}
    )
    scenario = tenant_of_browsers()  # rounds of 5 s (three runs) and 10 s (two): the second is cut short
    advice = advise_driver(scenario, "haproxy", StandIn(figures, runs_allowed=4), deadline=float("inf"))
    owa = advice.groups[0]
    methods = {r.method: r.stage for r in owa.rejected}
    assert str(owa.chosen) not in methods and not owa.complete
    assert str(owa.chosen) == "app-cookie OutlookSession"
    assert methods["source-ip"] == "ranked" and methods["lb-cookie"] == "budget"


def test_when_nothing_ran_the_baseline_is_kept_and_said_unevaluated():
    figures = by_method({})
    advice = advise_driver(tenant_of_browsers(), "haproxy", StandIn(figures, runs_allowed=0), float("inf"))
    owa = advice.groups[0]
    assert str(owa.chosen) == "lb-cookie" and owa.passing and owa.evidence.startswith("not evaluated")
    assert {r.stage for r in owa.rejected if r.method in ("source-ip", "app-cookie OutlookSession")} == {
        "budget"
    }


def test_citrix_mapi_cannot_pass_balance_and_the_advice_says_why():
    scenario = load_scenario("citrix-mapi")
    mapi = generate(scenario, "haproxy", ("mapi", "addressbook"), baseline_methods(scenario, "haproxy"))
    assert [str(p) for p in mapi.candidates] == ["source-ip"]  # plain TCP: none breaks Outlook's handles
    confirm = summary(1.9, limit=1.3)
    confirm["populations"] = {"citrix": {"shares": {"CAS03": 0.91, "CAS01": 0.05, "CAS02": 0.04}}}
    confirm["scenario"] = {"populations": [{"name": "citrix", "source_ips": 1}]}
    advice = advise_driver(
        scenario, "haproxy", StandIn(lambda t: summary(1.9, limit=1.3), confirm), float("inf")
    )
    assert advice.status == "fail"
    assert (
        "balance_max_over_mean 1.9, must be <= 1.3 (citrix, 1 source address: 91% of its requests on CAS03)"
        in advice.reason
    )
    assert "mapi+addressbook can only be source-ip here" in advice.reason


def test_advice_json_shape(tmp_path):
    figures = by_method(
        {"source-ip": summary(2.9), "lb-cookie": summary(1.2), "app-cookie OutlookSession": summary(1.0)}
    )
    code, folder = advise(
        tenant_of_browsers(), ["haproxy", "nginx"], 600, tmp_path, say=lambda _t: None,
        evaluator=lambda scenario, driver, folder: StandIn(figures),
    )  # fmt: skip
    assert code == 0
    data = json.loads((folder / "advice.json").read_text())
    assert data["schema"] == "caslab.advice/1" and data["verdict"] == "pass"
    assert [d["driver"] for d in data["drivers"]] == ["haproxy", "nginx"]
    haproxy = data["drivers"][0]
    owa = haproxy["services"]["owa"]
    assert (
        owa["method"] == "app-cookie OutlookSession"
        and owa["timeout_s"] >= 1800
        and owa["group"] == ["owa", "ecp"]
    )
    assert {"method", "stage", "why", "run"} <= set(owa["rejected"][0])
    assert haproxy["config_files"] == ["haproxy/haproxy.cfg"]
    assert "stick on req.cook(OutlookSession)" in (folder / "haproxy/haproxy.cfg").read_text()
    assert data["drivers"][1]["services"]["owa"]["method"] == "lb-cookie"  # nginx cannot learn a cookie
    page = (folder / "advice.html").read_text()
    assert "advice for browsers" in page and "Advice per service" in page
    assert "<b>source-ip</b> (run): balance 2.90x mean" in page and "<b>none</b> (clients)" in page


def test_ctrl_c_writes_what_finished_and_exits_2(tmp_path):
    figures = by_method(
        {"source-ip": summary(2.9), "lb-cookie": summary(1.2), "app-cookie OutlookSession": summary(1.0)}
    )

    class Interrupted(StandIn):
        def __call__(self, trials, deadline):
            raise KeyboardInterrupt

    evaluators = iter([StandIn(figures), Interrupted(figures)])
    code, folder = advise(
        tenant_of_browsers(), ["haproxy", "nginx"], 600, tmp_path, say=lambda _t: None,
        evaluator=lambda scenario, driver, folder: next(evaluators),
    )  # fmt: skip
    assert code == 2
    data = json.loads((folder / "advice.json").read_text())
    assert [d["driver"] for d in data["drivers"]] == ["haproxy"] and data["drivers"][0]["status"] == "pass"


def test_runs_go_on_one_loopback_net_per_core_but_one(monkeypatch):
    from lab.advise import runner

    monkeypatch.setattr(runner.os, "cpu_count", lambda: 4)
    monkeypatch.setenv("CASLAB_LOCAL_NET", "127.0.22")
    assert runner.lanes() == ["127.0.22", "127.0.41", "127.0.42"]
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert runner.lanes() == ["127.0.22"]


# -- on the lab ----------------------------------------------------------------------------------------

TINY = """
name = "tiny-tenant"
duration = "6s"
ramp = "1s"
time_scale = 120
seed = 3
[farm]
servers = 3
[[population]]
kind = "tenant-nat"
users = 18
source_ips = 1
clients = { browser = 1.0 }
[thresholds]
hard_breaks = 0
error_rate_pct = 1
balance_max_over_mean = 1.6
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_haproxy_advice_for_a_tiny_tenant_keeps_owa_on_a_cookie(tmp_path):
    """A NAT-ed tenant of browsers: source IP puts it on one CAS (rejected by its balance), a cookie
    spreads it; the winner passes its confirming run, and the files say so."""
    require_namespaces()
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    out = str(tmp_path / "out")
    argv = [sys.executable, "-m", "lab.cli", "advise", str(scenario), "--driver", "haproxy",
            "--budget", "100s", "--out", out]  # fmt: skip
    done = subprocess.run(isolated(*argv), capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cookie" in done.stdout  # the winning haproxy.cfg
    (folder,) = (tmp_path / "out").iterdir()
    data = json.loads((folder / "advice.json").read_text())
    owa = data["drivers"][0]["services"]["owa"]
    assert owa["method"] in ("lb-cookie", "app-cookie OutlookSession")
    source_ip = next(r for r in owa["rejected"] if r["method"] == "source-ip")
    assert source_ip["stage"] == "run" and source_ip["why"].startswith("balance "), source_ip
    assert (folder / data["drivers"][0]["confirm_run"] / "report.html").is_file()
    assert Path(folder / "advice.html").is_file()


def test_idle_timeouts_too_short_for_the_clients_held_connections_are_raised_and_said():
    """A 5-minute idle timeout in front of phones: a Ping is held silent up to its heartbeat's maximum
    (59 minutes), so the advice raises it to 1.25 x that (74 minutes) for every service and says why;
    the scenario's own timeouts stay where they are long enough."""
    text = load_scenario("hosted-tenant-recommended").source_text
    short = parse_scenario(text + '\n[balancer.timeouts]\nclient_idle = "5m"\n', "short.toml")
    timeouts, notes = idle_timeouts(short)
    assert held_silence_s(short, "eas") == 3540 and timeouts.client_idle_s == 4440  # 1.25 x, whole minutes
    assert timeouts.server_idle_s is None
    assert len(notes) == 1 and "client_idle 5m is shorter than eas" in notes[0], notes
    assert with_methods(short, "haproxy", {}).balancer.timeouts == timeouts
    long = parse_scenario(text + '\n[balancer.timeouts]\nclient_idle = "2h"\n', "long.toml")
    assert idle_timeouts(long) == (long.balancer.timeouts, [])
