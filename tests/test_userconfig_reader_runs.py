"""Users' own nginx, Envoy and Traefik files run through the lab (`caslab run --config`, `[balancer]
config`) with the verdict the source article gives; and the configs `caslab balancer config` prints,
run through this path, with the verdicts of the rendered ones.

Every run is `caslab run` in a subprocess inside a network namespace of its own with nothing but
loopback, whatever namespace pytest runs in: the files hold production addresses (10.20.0.x), so a
rewrite the lab missed fails there instead of leaving the machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from namespace import require_namespaces
from test_scenarios import REPO, Run, expect_verdict, top_share
from test_userconfig_runs import caslab_run

from lab.balancers.userconfig import reader_for

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "userconfig"
FILES = {"nginx": "nginx-hash.conf", "envoy": "envoy-hash-policy.yaml", "traefik": "traefik-sticky.yml"}


@pytest.fixture(scope="module", autouse=True)
def namespaces() -> None:
    require_namespaces()


@pytest.mark.parametrize("driver", FILES)
def test_a_production_file_passes_in_front_of_the_nat_ed_tenant(driver, tmp_path):
    run = caslab_run(tmp_path / "out", HERE / f"candidate-{driver}.toml")
    summary = expect_verdict(run, 0)
    assert summary["balancer"]["config"] == FILES[driver] and summary["balancer"]["preset"] is None
    assert summary["farm"]["tls"] == "bridge"  # each file ends TLS and speaks TLS to the CAS
    assert summary["totals"]["hard_breaks"] == 0 and summary["totals"]["requests"] > 300
    if driver == "nginx":  # OWA hashed on the client address: the tenant leans on one CAS
        assert top_share(summary, "tenant-nat") > max(summary["populations"]["direct"]["shares"].values())
    folder = run.folder / "balancer"
    assert (folder / "written" / FILES[driver]).read_text() == (HERE / FILES[driver]).read_text()
    for path in folder.iterdir():
        if path.is_file() and path.suffix in (".conf", ".yaml", ".yml"):
            assert not re.search(r"(?m)^[^#\n]*\b10\.20\.", path.read_text()), path


def run_changed(tmp_path: Path, driver: str, text: str) -> tuple[Run, dict]:
    """`caslab run` of the driver's candidate scenario on `text` in place of its file; the run and its
    summary, once it ended failed (exit 1) and valid."""
    (tmp_path / FILES[driver]).write_text(text)
    scenario = tmp_path / "candidate.toml"
    scenario.write_text((HERE / f"candidate-{driver}.toml").read_text())
    run = caslab_run(tmp_path / "out", scenario)
    return run, expect_verdict(run, 1)


def cut_services(summary: dict) -> set[str]:
    return {service for service, figures in summary["services"].items() if figures["cut"]}


def edited(driver: str, old: str, new: str) -> str:
    """The driver's production file with its one `old` replaced by `new`."""
    text = (HERE / FILES[driver]).read_text()
    assert text.count(old) == 1
    return text.replace(old, new)


def timers_said(tmp_path: Path, driver: str, text: str, service: str) -> tuple[str, ...]:
    """What `caslab balancer explain` says the timeouts of the file `text` cut of `service`."""
    path = tmp_path / f"explained{Path(FILES[driver]).suffix}"
    path.write_text(text)
    return reader_for(driver).explain(path).reading(service).timers


def test_hash_on_the_source_address_for_everything_fails_for_the_reason_the_article_gives(tmp_path):
    """nginx: `hash $remote_addr` in every upstream puts the NAT-ed tenant on one CAS."""
    text = (HERE / FILES["nginx"]).read_text()
    run, summary = run_changed(
        tmp_path, "nginx", re.sub(r"(?m)^        (hash|least_conn)\b.*$", "        hash $remote_addr;", text)
    )
    assert "balance_max_over_mean" in run.failed_checks()
    assert top_share(summary, "tenant-nat") >= 0.99, summary["populations"]  # the tenant on one CAS
    assert set(summary["balancer"]["methods"].values()) == {"source-ip"}


def test_envoy_at_layer_4_on_the_source_address_holds_every_session_but_piles_the_tenant(tmp_path):
    """TLS passed through on the client's address (tests/userconfig/envoy-l4.yaml): no session breaks,
    and the NAT-ed tenant lands on one CAS, as explain predicts ("balance")."""
    run, summary = run_changed(tmp_path, "envoy", (HERE / "envoy-l4.yaml").read_text())
    assert run.failed_checks() == {"balance_max_over_mean"}
    assert summary["totals"]["hard_breaks"] == 0 and summary["farm"]["tls"] == "passthrough"
    assert top_share(summary, "tenant-nat") >= 0.99, summary["populations"]


def test_nginx_s_default_client_body_timeout_cuts_outlook_anywhere_as_in_production(tmp_path):
    """The file without its client_body_timeout: nginx's default 60 s (Exchange time, so scaled in the
    lab like any time the file sets) closes every RPC_IN_DATA channel that Outlook leaves idle longer,
    and Outlook pings IN only every 12 minutes (2 with MinimumConnectionTimeout 120)."""
    text = (HERE / FILES["nginx"]).read_text()
    line = next(x for x in text.splitlines(keepends=True) if x.lstrip().startswith("client_body_timeout"))
    run, summary = run_changed(tmp_path, "nginx", text.replace(line, ""))
    assert cut_services(summary) == {"rpchttp"}, summary["services"]
    adoption = (run.folder / "balancer" / "adoption.json").read_text()  # what the lab put into the file
    assert "nginx's default client_body_timeout 60s, which the file does not set" in adoption
    (advice,) = summary["timers_advice"]
    assert advice.startswith(
        f"Your file {FILES['nginx']}: client_body_timeout (nginx's default) 1m cuts idle"
    )


def test_envoy_s_default_route_timeout_cuts_direct_push_as_in_production(tmp_path):
    """The file without its ActiveSync route's `timeout: 0s`: Envoy's default 15 s (Exchange time, so
    scaled in the lab like any time the file sets) ends every Ping a device holds longer (minutes)."""
    timeout = "                  timeout: 0s\n"
    eas_route = f"cluster: exchange_hash\n{timeout}                  hash_policy:\n                  - header"
    changed = edited("envoy", eas_route, eas_route.replace(timeout, ""))
    (said,) = timers_said(tmp_path, "envoy", changed, "eas")
    assert said.startswith("route timeout (Envoy's default) 15s cuts Direct Push Pings held longer")
    assert "every Ping is cut" in said
    run, summary = run_changed(tmp_path, "envoy", changed)
    assert cut_services(summary) == {"eas"}, summary["services"]
    assert summary["timers_advice"] == [f"Your file {FILES['envoy']}: {said}."]
    adoption = (run.folder / "balancer" / "adoption.json").read_text()  # what the lab put into the file
    assert "Envoy's default route timeout 15s, which the file does not set" in adoption


RPC_ROUTE = "cluster: exchange_hash\n                  timeout: 0s\n                  idle_timeout: 1200s"
HCM_IDLE = "          stream_idle_timeout: 3600s\n"


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        # The RPC route without its `timeout: 0s`: Envoy's 15 s runs from the end of the request to the end
        # of the answer, and an RPC_OUT_DATA channel's answer lasts as long as the channel.
        (RPC_ROUTE, RPC_ROUTE.replace("                  timeout: 0s\n", ""),
         "route timeout (Envoy's default) 15s ends every RPC_OUT_DATA channel 15s after it opened"),
        # `request_timeout: 300s`, as Envoy's edge best practices set it: it bounds the receipt of a whole
        # request, and an RPC_IN_DATA channel's request lasts as long as the channel.
        (HCM_IDLE, HCM_IDLE + "          request_timeout: 300s\n",
         "request_timeout 5m (line 27) ends every RPC_IN_DATA channel 5m after it opened"),
    ],
)  # fmt: skip
def test_envoy_s_limits_on_a_whole_request_or_answer_end_outlook_anywhere_channels_busy_or_not(
    tmp_path, old, new, says
):
    """Every channel of one direction ends that long (Exchange time) after it opened, whatever it carries,
    as `caslab balancer explain` says; and the report advises from the file's timeout, not from
    keep-alives."""
    changed = edited("envoy", old, new)
    (said,) = timers_said(tmp_path, "envoy", changed, "rpchttp")
    assert said.startswith(says)
    _run, summary = run_changed(tmp_path, "envoy", changed)
    assert cut_services(summary) == {"rpchttp"}, summary["services"]
    assert summary["timers_advice"] == [f"Your file {FILES['envoy']}: {said}."]


def test_traefik_s_response_header_timeout_cuts_direct_push_and_no_outlook_anywhere_channel(tmp_path):
    """A servers transport's responseHeaderTimeout of 5 minutes (Exchange time) under every service:
    Pings held longer are cut, as `caslab balancer explain` says; Outlook Anywhere's channels, whose
    headers come at once or whose body is still streaming, are not."""
    transport = "      serverName: mail.contoso.com\n"
    changed = edited(
        "traefik", transport, transport + "      forwardingTimeouts: { responseHeaderTimeout: 5m }\n"
    )
    (said,) = timers_said(tmp_path, "traefik", changed, "eas")
    assert said.startswith("responseHeaderTimeout 5m (line 70) cuts Direct Push Pings")
    assert timers_said(tmp_path, "traefik", changed, "rpchttp") == ()
    _run, summary = run_changed(tmp_path, "traefik", changed)
    assert cut_services(summary) == {"eas"}, summary["services"]
    assert summary["timers_advice"] == [f"Your file {FILES['traefik']}: {said}."]


# One run each: every preset's file reads back as its preset (tests/test_userconfig_readers.py), and
# each driver's production file passes above (nginx's hash on the source fails as the article says).
@pytest.mark.parametrize(
    ("driver", "scenario", "preset", "duration"),
    [
        ("nginx", "hosted-tenant-recommended", "recommended", "6s"),
        ("envoy", "lb-cookie-everything", "lb-cookie-all", "12s"),
        ("traefik", "round-robin", "none-all", "12s"),
    ],
)
def test_the_configs_the_lab_renders_give_the_same_verdicts_through_this_path(
    tmp_path, driver, scenario, preset, duration
):
    printed = subprocess.run(
        [sys.executable, "-m", "lab.cli", "balancer", "config", "--driver", driver, "--preset", preset,
         "--scenario", scenario],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    options = ("--driver", driver, "--duration", duration)
    rendered = caslab_run(tmp_path / "rendered", scenario, *options)
    code = rendered.code
    assert code in (0, 1), rendered.stdout + rendered.stderr
    config = tmp_path / {"nginx": "nginx.conf", "envoy": "envoy.json", "traefik": "dynamic.yml"}[driver]
    config.write_text(_main_file(driver, printed))
    own = caslab_run(tmp_path / "own", scenario, *options, "--config", str(config))
    expect_verdict(own, code)
    assert own.failed_checks() == rendered.failed_checks()


def _main_file(driver: str, printed: str) -> str:
    """The main file of what `caslab balancer config` prints (Traefik's: the dynamic config)."""
    if driver != "traefik":
        return printed
    return printed.split("# ---- dynamic.yml ----\n", 1)[1]
