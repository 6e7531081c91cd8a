"""The docker backend (lab/backends/docker/): `caslab run --backend docker` gives the verdicts the local
backend gives, `caslab up --backend docker` serves a lab until `caslab down`, faults reach the
containers, and nothing of a lab (container, network, volume) outlives it, also after Ctrl-C.

Needs a Docker engine and caslab's images; the module's first fixture makes sure of both, as
tests/test_compose.py does. Lab networks are picked in 10.221.0.0/16; the local runs compared with them
use 127.0.221.x (CASLAB_LOCAL_NET), away from the local default 127.0.1.x.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import background
import docker
import pandas as pd
import pytest

from lab.backends.docker import RUN_DIR_LABEL, RUN_LABEL, DockerLab, LabNetwork
from lab.backends.state import LabRecord
from lab.balancers.presets import resolve
from lab.model import BalancerSpec

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CASLAB = [sys.executable, "-m", "lab.cli"]
LOCAL_NET = "127.0.221"
DURATION = "6s"  # after the scenarios' 3 s ramp: enough requests for every check, and short
ENV = {**os.environ, "CASLAB_LOCAL_NET": LOCAL_NET, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def engine_and_images() -> None:
    """dockerd answers, and the images match the working tree."""
    for script in ("scripts/docker-engine", "compose/build-images"):
        done = subprocess.run([str(ROOT / script)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{script} failed:\n{done.stdout}{done.stderr}"


def leftovers(out: Path) -> list[str]:
    """Containers, networks and volumes of any lab whose run folder is under `out`."""
    client = docker.from_env()
    only = {"label": RUN_LABEL}

    def mine(labels: dict | None) -> bool:
        return (labels or {}).get(RUN_DIR_LABEL, "").startswith(str(out))

    return [
        *(f"container {c.name}" for c in client.containers.list(all=True, filters=only) if mine(c.labels)),
        *(f"network {n.name}" for n in client.networks.list(filters=only) if mine(n.attrs["Labels"])),
        *(f"volume {v.name}" for v in client.volumes.list(filters=only) if mine(v.attrs["Labels"])),
    ]


def caslab_run(scenario: str, backend: str, out: Path, workers: int = 1) -> tuple[int, dict]:
    """`caslab run` in a subprocess with `workers` load generators; its exit code and summary.json."""
    command = [*CASLAB, "run", scenario, "--backend", backend, "--duration", DURATION, "--out", str(out),
               "--workers", str(workers)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    summaries = list(out.glob("*/summary.json"))
    assert len(summaries) == 1, f"no report from {' '.join(command)}:\n{done.stdout}{done.stderr}"
    return done.returncode, json.loads(summaries[0].read_text())


def failed_checks(summary: dict) -> set[str]:
    return {c["name"] for c in summary["checks"] if not c["pass"]}


def check_value(summary: dict, name: str) -> float:
    return next(c["value"] for c in summary["checks"] if c["name"] == name)


def assert_ran_in_containers_and_left_nothing(
    out: Path, loadgen_logs: tuple[str, ...] = ("loadgen",)
) -> None:
    """The run's folder holds the output of every container (CAS, balancer, each load generator), which
    the lab keeps when it removes them, and none of them, nor the network, is left."""
    run_dir = next(out.iterdir())
    farm = sorted(p.name for p in (run_dir / "farm").iterdir())
    assert farm == ["CAS01", "CAS01.log", "CAS02", "CAS02.log", "CAS03", "CAS03.log"]  # IIS logs, output
    assert all(list((run_dir / "farm" / cas).glob("u_ex*.log")) for cas in ("CAS01", "CAS02", "CAS03"))
    assert sorted(p.stem for p in run_dir.glob("loadgen*.log")) == sorted(loadgen_logs)
    assert list((run_dir / "balancer").glob("*.log"))
    lab_log = (run_dir / "lab.log").read_text()
    assert re.search(r"starting 3 CAS of run [\w.-]+ on 10\.221\.\d+\.0/2\d", lab_log)
    assert leftovers(out) == []


def test_quickstart_passes_in_containers_as_it_does_locally(tmp_path: Path) -> None:
    """Also with the load in two loadgen containers (--workers 2), each a Locust worker of the master in
    caslab, holding only its own users' source addresses."""
    local_code, local = caslab_run("quickstart", "local", tmp_path / "local")
    docker_code, in_docker = caslab_run("quickstart", "docker", tmp_path / "docker", workers=2)

    assert local_code == docker_code == 0
    assert local["verdict"] == in_docker["verdict"] == "pass"
    assert local["invalid_reasons"] == in_docker["invalid_reasons"] == []
    assert failed_checks(local) == failed_checks(in_docker) == set()
    assert check_value(local, "hard_breaks") == check_value(in_docker, "hard_breaks") == 0
    for summary in (local, in_docker):  # every CAS took part, as the balance check says
        assert set(summary["servers"]) == {"CAS01", "CAS02", "CAS03"}
        assert check_value(summary, "balance_max_over_mean") <= 1.5
    assert in_docker["reconciliation"]["unmatched"] == in_docker["reconciliation"]["server_differs"] == 0
    run_dir = next((tmp_path / "docker").iterdir())
    assert "2 loadgen containers, master in this process" in (run_dir / "lab.log").read_text()
    events = pd.read_parquet(run_dir / "events.parquet")
    tagged = events[events["request_id"] != ""].copy()
    tagged["worker"] = tagged["request_id"].str.split(".").str[:2].str.join(".")  # index.pid.user-n
    assert tagged["worker"].nunique() == 2
    assert (tagged.groupby("source_ip")["worker"].nunique() == 1).all()  # each address in one worker
    assert_ran_in_containers_and_left_nothing(tmp_path / "docker", ("loadgen-1", "loadgen-2"))


def test_hosted_tenant_on_source_ip_fails_balance_in_containers_as_it_does_locally(tmp_path: Path) -> None:
    local_code, local = caslab_run("hosted-tenant-source-ip", "local", tmp_path / "local")
    docker_code, in_docker = caslab_run("hosted-tenant-source-ip", "docker", tmp_path / "docker")

    assert local_code == docker_code == 1
    assert failed_checks(local) == failed_checks(in_docker) == {"balance_max_over_mean"}
    assert check_value(local, "hard_breaks") == check_value(in_docker, "hard_breaks") == 0
    for summary in (local, in_docker):  # the tenant's one NAT address: all of it on one CAS
        assert max(summary["populations"]["tenant-nat"]["shares"].values()) == 1.0
        assert len([s for s in summary["populations"]["direct"]["shares"].values() if s > 0]) >= 2
    assert_ran_in_containers_and_left_nothing(tmp_path / "docker")


def test_ctrl_c_mid_run_removes_every_container_and_the_network(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    command = [*CASLAB, "run", "quickstart", "--backend", "docker", "--duration", "60s", "--out", str(out),
               "--workers", "2"]  # fmt: skip
    run, seen = start(  # progress lines start once the load runs
        command,
        None,
        ("phase: ramp", "phase: load"),
        # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when it started, and a
        # shell starts background jobs (a CI script's `cmd &`) with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert run.poll() is None, seen
        running = leftovers(out)
        assert len([c for c in running if c.startswith("container")]) == 6, (
            running
        )  # 3 CAS, balancer, 2 loadgen
        assert len([n for n in running if n.startswith("network")]) == 1, running

        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2
    assert "interrupted; tearing the lab down" in output
    assert leftovers(out) == []


def test_up_serves_the_vip_over_tls_until_down(tmp_path: Path) -> None:
    command = [
        *CASLAB,
        "up",
        "--backend",
        "docker",
        "--servers",
        "2",
        "--driver",
        "haproxy",
        "--tls",
        "offload",
    ]
    up, text = start(command, tmp_path, "stop with Ctrl-C")
    try:
        owa = re.search(r"OWA\s+(https://10\.221\.[\d.]+:8443/owa/)", text)
        ca = re.search(r"CA\s+(\S+)", text)
        assert owa and ca, text

        tls = ssl.create_default_context(cafile=ca.group(1))  # the VIP's certificate names its address
        answered = set()
        for _ in range(6):  # no cookie: each request is a new visitor, round robin over both CAS
            with urllib.request.urlopen(
                owa.group(1) + "auth/logon.aspx", context=tls, timeout=10
            ) as response:
                assert response.status == 200 and "Outlook Web App" in response.read().decode()
                answered.add(response.headers["X-CasLab-Server"])
        assert answered == {"CAS01", "CAS02"}

        down = subprocess.run([*CASLAB, "down"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0 and "stopped" in down.stdout
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            up.kill()
    assert leftovers(tmp_path) == []


def get(url: str, request_id: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"X-CasLab-Request": request_id})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers["X-CasLab-Server"]


def test_vip_per_service_and_faults_reach_the_containers(tmp_path: Path, monkeypatch) -> None:
    """Each service group's own VIP address answers (the balancer container gets them added), a stopped
    CAS is gone and its ledger rows were kept, a started one answers again, health switches reach it."""
    monkeypatch.chdir(tmp_path)  # the checkout whose .caslab/ holds the lab's state file
    network = LabNetwork.pick(0)
    spec = BalancerSpec("haproxy", resolve("none-all"), network.servers(2), network.vip,
                        topology="vip-per-service", preset="none-all")  # fmt: skip
    lab = DockerLab(spec, tmp_path, network, LabRecord.create(tmp_path, "run", "docker"), time_scale=60)
    try:
        lab.start()
        mapi_host = network.vip.service_host("mapi", "vip-per-service")
        web_hosts = [h for h in network.vip.hosts("vip-per-service") if h != mapi_host]
        assert len(web_hosts) == 6
        sent = [f"test-{n}" for n in range(12)]
        served = [
            get(f"http://{web_hosts[n % 6]}:8080/owa/auth/logon.aspx", rid) for n, rid in enumerate(sent)
        ]
        assert {status for status, _ in served} == {200}
        assert {server for _, server in served} == {"CAS01", "CAS02"}

        lab.fault("stop", "CAS01")
        assert lab.cas["CAS01"].wait(timeout=30)["StatusCode"] != 0  # killed, as a crash
        kept = {r["request_id"] for r in lab.ledger_rows if r["server"] == "CAS01" and r["request_id"]}
        assert kept == {rid for rid, (_, server) in zip(sent, served, strict=True) if server == "CAS01"}
        lab.fault("start", "CAS01")
        assert lab.server_stats().keys() == {"CAS01", "CAS02"}

        lab.fault("health-down", "CAS02")
        health = json.loads(urllib.request.urlopen(f"{spec.servers[1].admin_url}/caslab/health").read())
        assert health["health"] == "down"
        assert sent[0] in {r["request_id"] for r in lab.collect_ledgers()}
    finally:
        lab.stop()
    assert leftovers(tmp_path) == []
    assert (tmp_path / "balancer" / "haproxy.log").exists()


def start(
    command: list[str], cwd: Path | None, ready: str | tuple[str, ...], **popen: object
) -> tuple[subprocess.Popen, str]:
    """A caslab command in the background with this file's environment (background.start)."""
    return background.start(command, cwd, ready, env=ENV, **popen)


def test_a_sigkilled_run_leaves_its_containers_which_caslab_down_of_its_checkout_removes(
    tmp_path: Path,
) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    out = here / "reports"
    command = [*CASLAB, "run", "quickstart", "--backend", "docker", "--duration", "60s", "--out", str(out),
               "--workers", "1"]  # fmt: skip
    # The first progress line can fall after the short ramp: either phase means the load is running.
    run, _ = start(command, here, ("phase: ramp", "phase: load"))
    try:
        running = leftovers(out)
        tag = subprocess.run([str(ROOT / "compose/build-images"), "--print-tag"], capture_output=True,
                             text=True).stdout.strip()  # fmt: skip
        client = docker.from_env()
        images = {c.image.tags[0] for c in client.containers.list(filters={"label": RUN_LABEL})}
        assert {image.split(":")[1] for image in images} == {tag}, images  # this checkout's sources
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert len([c for c in running if c.startswith("container")]) == 5, running
    assert sorted(leftovers(out)) == sorted(running)  # nothing tore them down

    other = subprocess.run([*CASLAB, "down"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0 and sorted(leftovers(out)) == sorted(running), other.stdout  # not its lab

    down = subprocess.run([*CASLAB, "down"], cwd=here, capture_output=True, text=True, timeout=120)

    assert down.returncode == 0, down.stdout + down.stderr
    removed = (
        rf"removed lab quickstart-\S+ \(run, docker, owner pid {run.pid} on \S+\): 5 containers, 1 network,"
    )
    assert re.search(removed, down.stdout), down.stdout
    assert leftovers(out) == []


def test_caslab_down_all_removes_every_lab_on_the_engine_also_of_another_checkout(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    up, _ = start([*CASLAB, "up", "--backend", "docker", "--servers", "2", "--driver", "haproxy"], here,
                  "stop with Ctrl-C")  # fmt: skip
    up.send_signal(signal.SIGKILL)
    up.wait()
    left = leftovers(here)
    assert len([c for c in left if c.startswith("container")]) == 3, left  # 2 CAS and the balancer

    down = subprocess.run(
        [*CASLAB, "down", "--all"], cwd=elsewhere, capture_output=True, text=True, timeout=120
    )

    assert down.returncode == 0, down.stdout + down.stderr
    assert f"(docker, owner pid {up.pid} on" in down.stdout and "3 containers, 1 network" in down.stdout, (
        down.stdout
    )
    assert leftovers(here) == []
