"""A CAS knows the run it serves and every request says which run it belongs to: `caslab cas --run-id`
names the run (and the process) in the admin answers, and each ledger row keeps the run id its request
carried (X-CasLab-Run for HTTP, `run` on a MAPI or Address Book line; "" for none), so a lab can tell
its own CAS and its own rows from another lab's on the same addresses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from mockcas_helpers import ledger

from caslab.vocab import AB_PORT, ADMIN_PORT, HEALTH_PATH, HTTP_PORT, MAPI_PORT, RUN_HEADER
from loadgen.wire.mapi import AddressBookConnection, MapiConnection

HOST = "127.0.19.11"
RUN = "quickstart-20260101T000000Z-4f2a"
ADMIN = f"http://{HOST}:{ADMIN_PORT}"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def cas() -> Iterator[subprocess.Popen]:
    """`caslab cas --run-id RUN` in its own process, ready once its health answer names RUN and its pid."""
    command = [sys.executable, "-m", "lab.cli", "cas", "--name", "CAS01", "--host", HOST, "--run-id", RUN]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                health = get_json(f"{ADMIN}/caslab/health")
                if (health.get("run"), health.get("pid")) == (RUN, process.pid):
                    break
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, "the CAS did not answer its health check"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def http_get(path: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{HOST}:{HTTP_PORT}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_health_answer_names_the_server_the_run_and_the_process(cas):
    health = get_json(f"{ADMIN}/caslab/health")
    assert health == {"server": "CAS01", "health": "up", "ok": True, "run": RUN, "pid": cas.pid}


def test_stats_and_every_ledger_page_name_the_run(cas):
    assert get_json(f"{ADMIN}/caslab/stats")["run"] == RUN
    assert get_json(f"{ADMIN}/caslab/ledger?since=0")["run"] == RUN
    assert get_json(f"{ADMIN}/caslab/ledger?since=1000000")["run"] == RUN  # an empty page too


def test_http_rows_keep_the_run_id_the_request_carried_and_empty_when_it_carried_none(cas):
    assert http_get(HEALTH_PATH, {"X-CasLab-Request": "with-run", RUN_HEADER: RUN}) == 200
    assert http_get("/EWS/Exchange.asmx", {"X-CasLab-Request": "other-run", RUN_HEADER: "another"}) == 401
    assert http_get(HEALTH_PATH, {"X-CasLab-Request": "no-run"}) == 200  # a balancer's probe says none
    runs = {row["request_id"]: row["run_id"] for row in ledger(HOST)}
    assert (runs["with-run"], runs["other-run"], runs["no-run"]) == (RUN, "another", "")


def test_line_rows_keep_the_run_id_the_line_carried_and_empty_when_it_carried_none(cas):
    with MapiConnection((HOST, MAPI_PORT), run_id=RUN) as mapi:
        assert mapi.logon("user1", "caslab", rid="mapi-with-run").status == 0
    with AddressBookConnection((HOST, AB_PORT)) as address_book:
        assert address_book.ping(rid="ab-no-run").status == 0
    with MapiConnection((HOST, MAPI_PORT), run_id="x" * 201) as mapi:  # longer than an id may be
        assert mapi.ping(rid="mapi-long-run").status == 400
    runs = {row["request_id"]: row["run_id"] for row in ledger(HOST)}
    assert (runs["mapi-with-run"], runs["ab-no-run"], runs["mapi-long-run"]) == (RUN, "", "")
