"""`caslab suite`: every scenario file of a folder, one junit.xml, one index.html, one exit code.

The fast tests give run_suite (and run_matrix) a stand-in for lab.run.run_scenario that writes a run
folder with a hand-made summary.json: what the suite does with runs that pass, fail, cannot run or are
interrupted, without starting a lab. The slow test runs a suite of two short scenarios end to end in a
network namespace of its own, then again with --baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from namespace import isolated, require_namespaces
from test_compare import summary

from lab.matrix import run_matrix
from lab.runfolder import new_run_dir
from lab.scenario import load_scenario
from lab.suite import SuiteError, run_suite

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = (REPO / "lab" / "scenarios" / "quickstart.toml").read_text()


def scenario_folder(tmp_path: Path, *names: str, broken: str = "") -> Path:
    """A folder of copies of quickstart named `names`, and a file `broken` with an unknown key."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.toml").write_text(QUICKSTART.replace('name = "quickstart"', f'name = "{name}"'))
    if broken:
        (folder / f"{broken}.toml").write_text(QUICKSTART.replace("seed = 1", "seed = 1\nsede = 2"))
    return folder


class StandIn:
    """Runs each scenario by writing its folder with summary(verdict) from `verdicts` (by run name);
    a verdict of "ctrl-c" raises KeyboardInterrupt after making the folder, as lab.run does once the
    lab is torn down."""

    def __init__(self, verdicts: dict[str, str]) -> None:
        self.verdicts = verdicts
        self.ran: list[str] = []

    def __call__(self, scenario, out: Path, *, say, run_name: str, **_options) -> tuple[int, Path]:
        self.ran.append(run_name)
        run_dir = new_run_dir(out, run_name)
        verdict = self.verdicts[run_name]
        if verdict == "ctrl-c":
            raise KeyboardInterrupt
        if verdict == "could not run":
            say("caslab: the lab could not run: 127.0.1.11:80 is taken")
            return 2, run_dir
        (run_dir / "summary.json").write_text(json.dumps(summary(verdict, f"the {verdict} reason")))
        (run_dir / "report.html").write_text("<html></html>")
        return {"pass": 0, "fail": 1, "invalid": 2}[verdict], run_dir


def junit_suites(folder: Path) -> dict[str, ET.Element]:
    root = ET.parse(folder / "junit.xml").getroot()
    return {suite.get("name"): suite for suite in root}


def test_every_scenario_runs_in_its_own_folder_with_one_junit_and_one_index(tmp_path):
    run = StandIn({"a": "pass", "b": "fail"})
    code, folder = run_suite(
        scenario_folder(tmp_path, "b", "a"), tmp_path / "out", run=run, say=lambda _: None
    )
    assert code == 1 and run.ran == ["a", "b"]
    assert folder.parent == (tmp_path / "out").resolve() and folder.name.startswith("suite-scenarios-")
    suites = junit_suites(folder)
    assert list(suites) == ["caslab.a", "caslab.b"]
    assert suites["caslab.b"].get("failures") == "1" and suites["caslab.a"].get("failures") == "0"
    index = (folder / "index.html").read_text()
    for name in ("a", "b"):
        link = next(p.name for p in folder.iterdir() if p.name.startswith(f"{name}-"))
        assert f"href='{link}/report.html'" in index
    assert "the fail reason" in index and "FAIL" in index


def test_a_scenario_file_with_an_error_is_that_runs_error_and_the_suite_goes_on(tmp_path):
    run = StandIn({"a": "pass", "c": "pass"})
    folder_in = scenario_folder(tmp_path, "a", "c", broken="b")
    code, folder = run_suite(folder_in, tmp_path / "out", run=run, say=lambda _: None)
    assert code == 2 and run.ran == ["a", "c"]
    error = junit_suites(folder)["caslab.b"].find("testcase/error")
    assert error is not None and "sede" in error.get("message") and "b.toml" in error.get("message")
    record = json.loads((folder / "suite.json").read_text())
    assert [(r["name"], r["status"]) for r in record["runs"]] == [
        ("a", "pass"),
        ("b", "could not run"),
        ("c", "pass"),
    ]
    assert "sede" in (folder / "index.html").read_text()


def test_a_lab_that_could_not_run_says_why_and_exits_2(tmp_path):
    run = StandIn({"a": "could not run"})
    code, folder = run_suite(scenario_folder(tmp_path, "a"), tmp_path / "out", run=run, say=lambda _: None)
    assert code == 2
    error = junit_suites(folder)["caslab.a"].find("testcase/error")
    assert "127.0.1.11:80 is taken" in error.get("message")


def test_ctrl_c_stops_the_suite_and_writes_what_finished(tmp_path):
    run = StandIn({"a": "pass", "b": "ctrl-c", "c": "pass"})
    said: list[str] = []
    code, folder = run_suite(
        scenario_folder(tmp_path, "a", "b", "c"), tmp_path / "out", run=run, say=said.append
    )
    assert code == 2 and run.ran == ["a", "b"]  # c never started
    record = json.loads((folder / "suite.json").read_text())
    assert [(r["name"], r["status"]) for r in record["runs"]] == [
        ("a", "pass"),
        ("b", "interrupted"),
        ("c", "not run"),
    ]
    assert set(junit_suites(folder)) == {"caslab.a", "caslab.b", "caslab.c"}
    assert (folder / "index.html").is_file()
    assert any("[2/3] b: interrupted" in line for line in said)


def test_a_baseline_is_compared_run_by_run_and_a_regression_exits_1(tmp_path):
    scenarios = scenario_folder(tmp_path, "a", "b")
    _, base = run_suite(
        scenarios, tmp_path / "out", run=StandIn({"a": "pass", "b": "pass"}), say=lambda _: None
    )
    worse = StandIn({"a": "pass", "b": "fail"})
    code, folder = run_suite(scenarios, tmp_path / "out", baseline=base, run=worse, say=lambda _: None)
    assert code == 1
    compared = json.loads((folder / "compare.json").read_text())
    assert [p["name"] for p in compared["pairs"]] == ["a", "b"] and compared["regressions"] == 1
    assert "worse: verdict" in (folder / "index.html").read_text()
    assert (folder / "compare.md").read_text().startswith("### :x:")


def test_an_unreadable_baseline_stops_the_suite_before_any_run(tmp_path):
    run = StandIn({"a": "pass"})
    with pytest.raises(SuiteError, match=r"--baseline .*nowhere: no such folder"):
        run_suite(scenario_folder(tmp_path, "a"), tmp_path / "out", baseline=tmp_path / "nowhere", run=run)
    assert run.ran == []


def test_a_folder_without_scenario_files_is_an_error(tmp_path):
    with pytest.raises(SuiteError, match="no scenario files"):
        run_suite(tmp_path, tmp_path / "out", run=StandIn({}))


def test_the_matrix_is_the_runs_page_and_ctrl_c_writes_what_finished(tmp_path):
    run = StandIn({"haproxy-recommended": "pass", "nginx-recommended": "ctrl-c"})
    scenario = load_scenario("quickstart")
    drivers = ["haproxy", "nginx", "envoy"]
    code, folder = run_matrix(scenario, drivers, ["recommended"], tmp_path, say=lambda _: None, run=run)
    assert code == 2 and run.ran == ["haproxy-recommended", "nginx-recommended"]
    cells = json.loads((folder / "matrix.json").read_text())["cells"]
    assert [(c["driver"], c["status"]) for c in cells] == [("haproxy", "pass"), ("nginx", "interrupted"),
                                                            ("envoy", "not run")]  # fmt: skip
    page = (folder / "matrix.html").read_text()
    assert "haproxy × recommended" in page and "hard breaks" in page and "max_over_mean" not in page
    assert "Services × runs" in page and "<svg" in page


# ---- end to end: a real suite of two short scenarios, in a network namespace of its own ----

TINY = """\
name = "{name}"
duration = "4s"
ramp = "1s"
time_scale = 120
seed = {seed}
[farm]
servers = 2
tls = "none"
[balancer]
driver = "haproxy"
preset = "recommended"
[[population]]
kind = "intranet"
users = 4
clients = {{ browser = 1.0 }}
[thresholds]
hard_breaks = 0
"""


def caslab_suite(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lab.cli", "suite", *args]
    return subprocess.run(isolated(*command), capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.mark.slow
def test_a_suite_of_two_scenarios_end_to_end_then_against_itself_as_baseline(tmp_path):
    require_namespaces()
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    for seed, name in enumerate(("first", "second"), 1):
        (scenarios / f"{name}.toml").write_text(TINY.format(name=name, seed=seed))
    out = tmp_path / "out"
    done = caslab_suite(str(scenarios), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/2] first: pass" in done.stderr and "[2/2] second: pass" in done.stderr
    (suite,) = out.iterdir()
    suites = junit_suites(suite)
    assert list(suites) == ["caslab.first", "caslab.second"]
    assert all(s.get("failures") == "0" and s.get("errors") == "0" for s in suites.values())
    index = (suite / "index.html").read_text()
    for name in ("first", "second"):
        (run_dir,) = [p for p in suite.iterdir() if p.name.startswith(f"{name}-")]
        assert (run_dir / "report.html").is_file() and f"href='{run_dir.name}/report.html'" in index

    # The same scenarios again: their differences are chance, not regressions (latency aside: CPU noise
    # of a shared machine can double a p95 of short runs, so its tolerance is wide here).
    again = caslab_suite(
        str(scenarios), "--out", str(out), "--baseline", str(suite), "--tolerance", "p95_latency=1000"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    compared = json.loads(next(p for p in out.iterdir() if p != suite).joinpath("compare.json").read_text())
    assert [(p["name"], p["compared"]) for p in compared["pairs"]] == [("first", True), ("second", True)]
