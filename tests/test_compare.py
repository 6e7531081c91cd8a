"""`caslab compare` on hand-made summary.json files (no runs): noise in counts is not a regression, a
rise beyond chance is; balance must leave what random placement gives; pass -> fail is a regression;
invalid runs are not compared; unreadable input is exit 2 naming the folder or file."""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.cli import main
from lab.compare import Comparison, binomial_tail, compare_folders, count_change, parse_tolerances

SERVICES = ("owa", "eas", "rpchttp", "oab")


def summary(verdict: str = "pass", reason: str = "every check held", **changes: object) -> dict:
    """A summary.json of a run with 1000 requests and 100 sessions per service, nothing broken, max/mean
    1.1 with 1.3 as the random placements' 95th percentile; `changes` are "service.field" or
    "balance.field" = value."""
    services = {
        s: {"requests": 1000, "sessions": 100, "split_sessions": 0, "hard_breaks": 0, "soft_breaks": 0,
            "errors": 0, "cut": 0, "latency_ms": {"p50": 20.0, "p95": 100.0, "p99": 150.0}}
        for s in SERVICES
    }  # fmt: skip
    data = {
        "schema": "caslab.summary/1",
        "verdict": verdict,
        "verdict_reason": reason,
        "checks": [
            {"name": "hard_breaks", "value": 0, "limit": 0, "op": "<=", "pass": verdict != "fail"},
            {"name": "error_rate_pct", "value": 0, "limit": 1, "op": "<=", "pass": True},
        ],
        "totals": {"requests": 4000, "error_rate_pct": 0.0},
        "services": services,
        "servers": {"CAS01": {"requests": 1400}, "CAS02": {"requests": 1300}, "CAS03": {"requests": 1300}},
        "balance": {"max_over_mean": 1.1, "random_max_over_mean_p95": 1.3, "random_placement_pct": 40.0,
                    "exceeds_random": False},
    }  # fmt: skip
    for key, value in changes.items():
        part, field = key.split(".", 1)
        (data["balance"] if part == "balance" else services[part])[field] = value
    return data


def write_run(folder: Path, data: dict, report: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data))
    if report:
        (folder / "report.html").write_text("<html>report</html>")
    return folder


def compare(tmp_path: Path, base: dict, new: dict, *options: str) -> int:
    """The exit code of `caslab compare` on two run folders of these summaries."""
    b = write_run(tmp_path / "base" / "r-20261201T000000Z", base)
    n = write_run(tmp_path / "new" / "r-20261202T000000Z", new)
    return main(["compare", str(b), str(n), *options])


def result_of(base: dict, new: dict, figure: str, scope: str) -> str:
    comparison = compare_dicts(base, new)
    return next(
        c.result for p in comparison.pairs for c in p.changes if (c.figure, c.scope) == (figure, scope)
    )


def compare_dicts(base: dict, new: dict, tolerances: tuple[str, ...] = ()) -> Comparison:
    with tempfile.TemporaryDirectory() as tmp:
        b = write_run(Path(tmp) / "b", base)
        n = write_run(Path(tmp) / "n", new)
        return compare_folders(b, n, parse_tolerances(list(tolerances)))


def test_three_hard_breaks_from_none_in_runs_of_equal_size_is_noise():
    assert result_of(summary(), summary(**{"owa.hard_breaks": 3}), "hard_breaks", "owa") == "within noise"
    assert not compare_dicts(summary(), summary(**{"owa.hard_breaks": 3})).regressions


def test_ten_hard_breaks_from_none_is_a_regression_and_exits_1(tmp_path, capsys):
    new = summary(**{"owa.hard_breaks": 10})
    assert result_of(summary(), new, "hard_breaks", "owa") == "worse"
    code = compare(tmp_path, summary(), new)
    out = capsys.readouterr().out
    assert code == 1
    assert "WORSE" in out and "hard breaks" in out
    assert out.endswith("regression: 2 figures got worse in 1 of 1 compared run\n")  # owa, all services


def test_a_tolerance_absorbs_a_rise_beyond_chance():
    new = summary(**{"owa.hard_breaks": 10})
    comparison = compare_dicts(summary(), new, ("hard_breaks=20",))
    assert not comparison.regressions
    changed = {c.result for p in comparison.pairs for c in p.changes if c.figure == "hard_breaks"}
    assert "within tolerance" in changed


def test_counts_are_weighed_by_exposure_twice_the_requests_may_have_twice_the_breaks():
    assert count_change("hard_breaks", "owa", (20, 1000), (40, 2000), 0).result == "same"
    assert count_change("hard_breaks", "owa", (20, 1000), (120, 2000), 0).result == "worse"


def test_the_binomial_tail_is_exact_on_small_cases():
    assert binomial_tail(3, 3, 0.5) == pytest.approx(0.125)  # 0 -> 3: p = 1/8
    assert binomial_tail(10, 10, 0.5) == pytest.approx(1 / 1024)
    assert binomial_tail(1, 2, 0.5) == pytest.approx(0.75)


def test_balance_beyond_tolerance_and_above_random_placements_is_a_regression():
    new = summary(**{"balance.max_over_mean": 1.6, "balance.exceeds_random": True})
    assert result_of(summary(), new, "balance", "run") == "worse"


def test_balance_beyond_tolerance_but_within_random_placements_is_noise():
    new = summary(**{"balance.max_over_mean": 1.25})  # above 1.1 + 0.05, below the 1.3 chance gives
    assert result_of(summary(), new, "balance", "run") == "within noise"


def test_pass_to_fail_is_a_regression_even_when_no_figure_moved(tmp_path):
    new = summary("fail", "hard_breaks 1 > 0")
    comparison = compare_dicts(summary(), new)
    assert [(c.figure, c.base, c.new) for _name, c in comparison.regressions] == [("verdict", "pass", "fail")]
    assert compare(tmp_path, summary(), new) == 1


def test_an_invalid_run_is_not_compared_and_is_no_regression(tmp_path, capsys):
    new = summary("invalid", "load generator CPU above 90 %", **{"owa.hard_breaks": 500})
    comparison = compare_dicts(summary(), new)
    assert not comparison.regressions
    assert not comparison.pairs[0].compared and "invalid" in comparison.pairs[0].note
    assert compare(tmp_path, summary(), new) == 0
    assert "not compared" in capsys.readouterr().out


def test_p95_latency_must_rise_beyond_its_tolerance():
    assert (
        result_of(summary(), summary(**{"owa.latency_ms": {"p95": 140.0}}), "p95_latency", "owa") != "worse"
    )
    assert (
        result_of(summary(), summary(**{"owa.latency_ms": {"p95": 400.0}}), "p95_latency", "owa") == "worse"
    )


def suite(folder: Path, runs: dict[str, dict], stamp: str) -> Path:
    for name, data in runs.items():
        write_run(folder / f"{name}-{stamp}", data)
    return folder


def test_suites_pair_their_runs_by_scenario_and_say_what_only_one_side_has(tmp_path, capsys):
    base = suite(tmp_path / "base", {"a": summary(), "b": summary(), "gone": summary()}, "20261201T000000Z")
    runs = {"a": summary(), "b": summary(**{"eas.soft_breaks": 40}), "added": summary()}
    new = suite(tmp_path / "new", runs, "20261202T000000Z")
    assert main(["compare", str(base), str(new), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "caslab.compare/1" and report["regressions"] == 2
    pairs = {p["name"]: p for p in report["pairs"]}
    assert set(pairs) == {"a", "b", "gone", "added"}
    worse = [c for c in pairs["b"]["changes"] if c["regression"]]
    assert [(c["figure"], c["scope"]) for c in worse] == [
        ("soft_breaks", "eas"),
        ("soft_breaks", "all services"),
    ]
    assert not pairs["added"]["compared"] and not pairs["gone"]["compared"]


def test_markdown_is_a_table_for_a_pull_request_comment(tmp_path, capsys):
    base = suite(tmp_path / "base", {"a": summary()}, "20261201T000000Z")
    new = suite(tmp_path / "new", {"a": summary(**{"owa.hard_breaks": 12})}, "20261202T000000Z")
    assert main(["compare", str(base), str(new), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("### :x: caslab compare: regression: 2 figures got worse in 1 of 1 compared run")
    assert "| a | pass → pass | hard breaks (owa) 0 → 12; hard breaks (all services) 0 → 12 |" in out


def test_the_html_page_links_each_run_report_and_shows_what_got_worse(tmp_path):
    base = suite(tmp_path / "base", {"a": summary(), "b": summary()}, "20261201T000000Z")
    new = suite(
        tmp_path / "new", {"a": summary(), "b": summary(**{"owa.hard_breaks": 12})}, "20261202T000000Z"
    )
    page = tmp_path / "compare.html"
    assert main(["compare", str(base), str(new), "--html", str(page)]) == 1
    text = page.read_text()
    assert "href='new/a-20261202T000000Z/report.html'" in text
    assert "href='new/b-20261202T000000Z/report.html'" in text
    assert "REGRESSION" in text and "worse: hard breaks (owa)" in text
    assert "Services × runs" in text and "<svg" in text  # the grid and a balance plot per run
    assert "error rate (%)" in text and "max_over_mean" not in text  # human column names with units


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "neither a run folder"),
        (lambda p: (p.mkdir(), (p / "summary.json").write_text("{not json")), "summary.json: cannot read"),
        (lambda p: (p.mkdir(), (p / "summary.json").write_text('{"schema": "other/1"}')), "schema 'other/1'"),
    ],
    ids=["missing", "empty", "not-json", "other-schema"],
)
def test_unreadable_input_exits_2_naming_the_folder_or_file(tmp_path, capsys, make, said):
    good = write_run(tmp_path / "good", summary())
    bad = tmp_path / "bad"
    make(bad)
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("caslab compare: ") and str(bad) in err and said in err


def test_a_run_is_not_compared_with_a_suite(tmp_path, capsys):
    run = write_run(tmp_path / "run", summary())
    folder = suite(tmp_path / "suite", {"a": summary()}, "20261202T000000Z")
    assert main(["compare", str(run), str(folder)]) == 2
    assert "compare like with like" in capsys.readouterr().err


def test_a_bad_tolerance_is_a_usage_error_naming_the_figures(tmp_path, capsys):
    run = write_run(tmp_path / "run", summary())
    assert main(["compare", str(run), str(run), "--tolerance", "breaks=3"]) == 2
    assert "hard_breaks" in capsys.readouterr().err


def test_junit_of_a_suite_counts_every_testsuite(tmp_path):
    from lab.report.junit import junit_document, run_testsuite
    from lab.verifier.checks import Check

    checks = [Check.from_dict(c) for c in summary("fail")["checks"]]
    text = junit_document([run_testsuite("caslab.a", checks), run_testsuite("caslab.b", checks, "CPU")])
    root = ET.fromstring(text)
    assert [s.get("name") for s in root] == ["caslab.a", "caslab.b"]
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "6",
        "1",
        "1",
        "2",
    )
