"""The `caslab` command line (DESIGN.md section 10).

`build_parser` declares every command with its one-line help, a description and examples (what
`caslab COMMAND --help` teaches); each command runs one small function below, which imports what it
needs when it runs. Exit codes: 0 pass (or done), 1 a check failed, 2 the lab could not run (a wrong
scenario, option or address included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from caslab import vocab
from lab.backends.teardown import EXIT_BOUND_S
from lab.verdict import EXIT_CANNOT_RUN, EXIT_CODES, EXIT_FAIL, EXIT_PASS

if TYPE_CHECKING:
    from mockcas.config import CasConfig

BACKEND_HELP = "local: processes on loopback (default); docker: containers on a lab network of their own"
DRIVER_HELP = f"balancer driver: {', '.join(vocab.DRIVERS)} (a VIP you run yourself)"
PRESET_HELP = "persistence preset: article, recommended, source-ip-all, lb-cookie-all, none-all"
EXIT_HELP = "Exit code: 0 pass, 1 a check failed, 2 the run is invalid or the lab could not run."

DESCRIPTION = """\
caslab tests a load balancer's persistence (affinity) settings in front of an Exchange 2010 CAS farm.

A run starts a farm of mock CAS, a real balancer (Envoy by default; HAProxy, nginx, Traefik, or an
external VIP) and Locust populations of Exchange clients, then tells whether any session broke and
whether the load stayed balanced. Results go to reports/<name>-<UTC time>/.

Exit codes of `run`, `matrix`, `suite`, `advise` and `report`: 0 pass, 1 a check failed, 2 the lab could not
run. `compare`: 0 no regression, 1 a regression, 2 a folder it cannot read.
`caslab COMMAND --help` says more about each command.
"""

EPILOG = """\
examples:
  caslab scenarios                              list the bundled scenarios
  caslab run quickstart                         a small run on the default driver (Envoy)
  caslab run hosted-tenant-source-ip --driver haproxy
  caslab balancer config --driver haproxy --preset recommended > haproxy.cfg
  caslab scenario schema > scenario.schema.json the JSON Schema of scenario files, for editors
  caslab up                                     a lab to explore by hand; caslab down stops it
  caslab suite scenarios/                       every scenario file of a folder: one JUnit, one page
  caslab compare OLD_RUN NEW_RUN                what got worse (exit 1 on a regression)
  caslab advise hosted-tenant-recommended --driver haproxy,nginx   the best config per driver
"""


def _run_cas(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from lab.scenario import ScenarioError
    from mockcas.config import CasConfig  # imports mockcas before aiohttp (RPC/HTTP needs that)
    from mockcas.server import serve_forever

    if bool(args.cert) != bool(args.key):
        print("caslab cas: --cert and --key go together", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        farm_key = bytes.fromhex(args.farm_key) if args.farm_key else None
    except ValueError:
        print("caslab cas: --farm-key must be hex", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        settings = _cas_timers(args)
    except ScenarioError as err:
        print(f"caslab cas: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    config = CasConfig(
        name=args.name,
        host=args.host,
        http_port=args.http_port,
        https_port=args.https_port,
        mapi_port=args.mapi_port,
        ab_port=args.ab_port,
        admin_port=args.admin_port,
        key_seed=args.key_seed,
        users=args.users,
        password=args.password,
        vip_host=args.vip_host,
        cert_file=Path(args.cert) if args.cert else None,
        key_file=Path(args.key) if args.key else None,
        oab_skew=args.oab_skew,
        run_id=args.run_id,
        w3c_log_dir=Path(args.w3c_log) if args.w3c_log else None,
        **settings,
    )
    problem = _exchange_settings_problem(config)
    if problem:
        print(f"caslab cas: {problem}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if farm_key:
        config.farm_key = farm_key
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(serve_forever(config))
    except OSError as err:
        print(f"caslab cas: cannot listen on {args.host}: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return EXIT_PASS


def _cas_timers(args: argparse.Namespace) -> dict[str, float]:
    """The CAS's time scale and Exchange settings (CasConfig fields): each flag given, else the value of
    the --scenario (its time_scale and [farm] settings, as a run passes them to its CAS), else none and
    the CAS's default. ScenarioError when the scenario cannot be read."""
    from lab.model import EXCHANGE_FLAGS
    from lab.scenario import load_scenario

    timers: dict[str, float] = {}
    if args.scenario:
        scenario = load_scenario(args.scenario)
        timers["time_scale"] = scenario.time_scale
        for name in EXCHANGE_FLAGS:
            if (value := getattr(scenario.farm.exchange, name)) is not None:
                timers[name] = value
    given = {"time_scale": args.time_scale}
    given.update({name: getattr(args, flag[2:].replace("-", "_")) for name, flag in EXCHANGE_FLAGS.items()})
    timers.update({name: value for name, value in given.items() if value is not None})
    return timers


def _exchange_settings_problem(config: CasConfig) -> str:
    """What is wrong with the Exchange settings of `caslab cas` ("" when nothing is)."""
    timers = {
        "--rpc-min-connection-timeout": config.rpc_min_connection_timeout_s,
        "--eas-heartbeat-min": config.eas_heartbeat_min_s,
        "--eas-heartbeat-max": config.eas_heartbeat_max_s,
        "--owa-timeout": config.owa_timeout_s,
        "--tcp-keepalive": config.tcp_keepalive_s,
    }
    for flag, seconds in timers.items():
        if seconds is not None and not seconds > 0:
            return f"{flag} must be more than 0 seconds, not {seconds:g}"
    if config.eas_heartbeat_min_s > config.eas_heartbeat_max_s:
        return "--eas-heartbeat-min must not be more than --eas-heartbeat-max"
    return ""


def _list_scenarios(_args: argparse.Namespace) -> int:
    from lab.scenario import bundled_scenarios

    scenarios = bundled_scenarios()
    width = max(map(len, scenarios), default=0)
    for name, description in scenarios.items():
        print(f"{name:<{width}}  {description}")
    return EXIT_PASS


def _scenario_schema(_args: argparse.Namespace) -> int:
    from lab.scenario import schema_text

    sys.stdout.write(schema_text())
    return EXIT_PASS


def _scenario_from_logs(args: argparse.Namespace) -> int:
    from lab.fromlogs.command import from_logs

    if args.time_scale <= 0:
        print("caslab scenario from-logs: --time-scale must be above 0", file=sys.stderr)
        return EXIT_CANNOT_RUN
    capture = tuple(c.strip() for c in args.haproxy_capture.split(",") if c.strip())
    return from_logs(
        [Path(p) for p in args.logs],
        output=Path(args.output) if args.output else None,
        report=Path(args.report) if args.report else None,
        time_scale=args.time_scale,
        haproxy_capture=capture,
    )


def _rerender_report(args: argparse.Namespace) -> int:
    """Re-render report.html, junit.xml and summary.json from a run's stored data; exit as the verdict."""
    from lab.report import RUN_FACTS, render_report
    from lab.scenario import ScenarioError

    run_dir = Path(args.run_dir)
    missing = [n for n in (RUN_FACTS, "events.parquet", "ledger.parquet") if not (run_dir / n).is_file()]
    if missing:
        print(f"caslab report: {run_dir} is not a finished run (no {', '.join(missing)})", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        analysis = render_report(run_dir)
    except (ScenarioError, ValueError, OSError) as err:
        print(f"caslab report: cannot render {run_dir}: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(f"{analysis.verdict}: {run_dir / 'report.html'}")
    return EXIT_CODES[analysis.verdict]


def _balancer_config(args: argparse.Namespace) -> int:
    """Print the config a driver renders for a preset (or a scenario's balancer section), for a local farm.
    Paths in it (stats socket, certificates) are relative to a run folder: balancer/, tls/."""
    from lab.balancers import BalancerError, Unsupported, driver_class
    from lab.balancers.presets import PRESETS, resolve
    from lab.model import BalancerSpec, TlsFiles, Vip, local_farm
    from lab.scenario import ScenarioError, load_scenario

    tls_dir = Path("tls")
    tls_files = TlsFiles(
        tls_dir / "ca.pem", tls_dir / "server.crt", tls_dir / "server.key", tls_dir / "server.pem"
    )
    try:
        if args.scenario:
            scenario = load_scenario(args.scenario).with_overrides(driver=args.driver, preset=args.preset)
            servers = local_farm(scenario.farm.servers)
            spec = scenario.balancer_spec(
                servers, tls_files=tls_files if scenario.farm.tls != "none" else None
            )
        else:
            if args.preset not in PRESETS:
                raise Unsupported(f"unknown preset {args.preset!r}; allowed: {', '.join(PRESETS)}")
            spec = BalancerSpec(args.driver, resolve(args.preset), local_farm(3), Vip(), preset=args.preset)
        driver = driver_class(spec.driver)(spec, Path("."))
        driver.check()
        rendered = driver.render()
    except (ScenarioError, Unsupported, BalancerError) as err:
        print(f"caslab balancer config: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    for name, text in rendered.items():
        if len(rendered) > 1:
            print(f"# ---- {name} ----")
        print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_PASS


def _balancer_explain(args: argparse.Namespace) -> int:
    """Print, per service, what a user's config does and predicts; then whether it can run in the lab."""
    import dataclasses

    from lab.balancers import BalancerError
    from lab.balancers.userconfig import ConfigRefused, reader_for
    from lab.balancers.userconfig.placeholders import example_place
    from lab.candidate import check_as_run, explain_table
    from lab.scenario import ScenarioError, load_scenario

    path = Path(args.file)
    try:
        place = example_place()
        if args.scenario:
            scenario = load_scenario(args.scenario)
            place = dataclasses.replace(
                example_place(scenario.farm.servers),
                topology=scenario.balancer.topology,
                time_scale=scenario.time_scale,
            )
        reader = reader_for(args.driver)
        print(explain_table(reader.explain(path, place)), end="")
        adopted = reader.adopt(path, place)
    except ConfigRefused as err:
        print(f"caslab balancer explain: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except ScenarioError as err:
        print(f"caslab balancer explain: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    servers = ", ".join(dict.fromkeys(f"{m.server}->{m.cas}" for m in adopted.servers))
    print(f"\nin the lab: tls {adopted.tls} ({adopted.tls_reason}); {len(adopted.rewrites)} lines rewritten")
    if servers:
        print(f"servers: {servers}")
    try:
        checked = check_as_run(path, place, args.driver)
    except BalancerError as err:
        print(f"caslab balancer explain: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(checked)
    if args.diff:
        print(adopted.diff(), end="")
    else:
        print("(--diff shows the file as it would run)")
    return EXIT_PASS


def _run(args: argparse.Namespace) -> int:
    from lab.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario).with_overrides(
            driver=args.driver, preset=args.preset, duration=args.duration, config=args.config
        )
    except ScenarioError as err:
        print(f"caslab run: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    path = scenario.config_path
    if path is not None and not path.is_file():
        print(f"caslab run: {path}: no such file (the balancer config to run)", file=sys.stderr)
        return EXIT_CANNOT_RUN
    from lab.backends.teardown import end_process
    from lab.run import run_scenario  # imports Locust, which patches the process with gevent

    try:
        code, _run_dir = run_scenario(
            scenario, Path(args.out), backend=args.backend, allow_unrouted=args.allow_unrouted,
            run_name=args.name, workers=args.workers, remote_workers=args.remote_workers,
            master_bind=args.master_bind,
        )  # fmt: skip
    except KeyboardInterrupt:  # the lab is torn down by now
        code = EXIT_CANNOT_RUN
    end_process(code)  # at once: the interpreter's own teardown of a large run's users is slow


def _worker(args: argparse.Namespace) -> int:
    from loadgen.worker import parse_host_port, run_worker  # imports Locust only when it runs

    try:
        host, port = parse_host_port(args.master)
    except ValueError as err:
        print(f"caslab worker: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return run_worker(host, port, args.events)


def _matrix(args: argparse.Namespace) -> int:
    from lab.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario).with_overrides(duration=args.duration)
    except ScenarioError as err:
        print(f"caslab matrix: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    from lab.backends.teardown import end_process
    from lab.matrix import run_matrix  # imports Locust, which patches the process with gevent

    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    try:
        code, _folder = run_matrix(scenario, drivers, presets, Path(args.out))
    except KeyboardInterrupt:  # between runs: nothing of a lab is left running
        code = EXIT_CANNOT_RUN
    end_process(code)  # at once: the interpreter's own teardown of a large run's users is slow


def _suite(args: argparse.Namespace) -> int:
    from lab.compare import CompareError, parse_tolerances
    from lab.suite import SuiteError, run_suite

    try:
        tolerances = parse_tolerances(args.tolerance)
        code, _folder = run_suite(
            Path(args.dir), Path(args.out), driver=args.driver, config=args.config, backend=args.backend,
            baseline=Path(args.baseline) if args.baseline else None, tolerances=tolerances,
        )  # fmt: skip
    except (SuiteError, CompareError) as err:
        print(f"caslab suite: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    from lab.backends.teardown import end_process

    end_process(code)  # at once: the interpreter's own teardown of a large run's users is slow


def _compare(args: argparse.Namespace) -> int:
    import json

    from lab.compare import CompareError, compare_folders, parse_tolerances
    from lab.report.compared import headline, markdown, terminal_table
    from lab.runset import RunSetError

    try:
        comparison = compare_folders(Path(args.base), Path(args.new), parse_tolerances(args.tolerance))
    except (CompareError, RunSetError) as err:
        print(f"caslab compare: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.format == "json":
        print(json.dumps(comparison.to_dict(), indent=2))
    elif args.format == "markdown":
        print(markdown(comparison), end="")
    else:
        print(terminal_table(comparison), end="")
    if args.html:
        from lab.report.runs_page import runs_html

        page = Path(args.html)
        worse = bool(comparison.regressions)
        banner = (
            "regression" if worse else "no regression",
            "fail" if worse else "pass",
            headline(comparison),
        )
        new_runs = [p.new for p in comparison.pairs if p.new is not None]
        text = runs_html(
            "compare", f"BASE {args.base} → NEW {args.new}", new_runs, page.parent.resolve(),
            comparison=comparison, headline=banner,
        )  # fmt: skip
        page.write_text(text, encoding="utf-8")
        print(f"caslab compare: {page}", file=sys.stderr)
    return EXIT_FAIL if comparison.regressions else EXIT_PASS


def _advise(args: argparse.Namespace) -> int:
    from lab.scenario import ScenarioError, load_scenario, parse_duration

    drivers = [d.strip() for d in args.driver.split(",") if d.strip()]
    try:
        scenario = load_scenario(args.scenario)
        for driver in drivers:
            scenario.with_overrides(driver=driver)  # an unknown driver is an error before anything runs
        budget_s = parse_duration(args.budget)
    except ScenarioError as err:
        print(f"caslab advise: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except ValueError as err:
        print(f"caslab advise: --budget: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if "external" in drivers:
        print("caslab advise: --driver external: the lab cannot set the methods of a VIP you run; "
              "advise on envoy, haproxy, nginx or traefik", file=sys.stderr)  # fmt: skip
        return EXIT_CANNOT_RUN
    if scenario.balancer.config is not None:
        print("caslab advise: the scenario names its own balancer config; advice is for the lab's "
              "methods (remove balancer.config)", file=sys.stderr)  # fmt: skip
        return EXIT_CANNOT_RUN
    from lab.advise.command import advise

    code, _folder = advise(scenario, drivers, budget_s, Path(args.out))
    return code


def _up(args: argparse.Namespace) -> int:
    from lab.balancers import Unsupported
    from lab.runfolder import new_run_dir
    from lab.up import up

    try:
        run_dir = new_run_dir(Path(args.out), "up")
        return up(args.servers, args.driver, args.preset, args.tls, run_dir, backend=args.backend)
    except (Unsupported, KeyError, ValueError) as err:
        print(f"caslab up: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except RuntimeError as err:  # Docker absent, a balancer or CAS that did not start: torn down already
        print(f"caslab up: the lab could not start: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN


def _down(args: argparse.Namespace) -> int:
    from lab.up import down

    return down(everything=args.all)


def _command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, examples: str = ""
) -> argparse.ArgumentParser:
    """A (sub)command with its one-line `help` in the list above it, and its own --help: the
    `description` and, when given, `examples` (lines of "command    what it does")."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caslab",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(
        sub,
        "run",
        "run one scenario and write its report",
        "Run one scenario: start a farm of mock CAS behind a real balancer, run the scenario's client\n"
        "populations through it for the ramp and the load phase, fire its faults, then check the CAS's\n"
        "ledgers and the clients' events against its thresholds. report.html, summary.json and junit.xml\n"
        "go to OUT/<name>-<UTC time>/; the lab is torn down on every way out, Ctrl-C included.\n"
        "The process exits as soon as the verdict is out, and at most "
        f"{EXIT_BOUND_S} s after Ctrl-C or SIGTERM,\n"
        "whatever the run was doing (what the lab has not torn down by then is killed). A run whose\n"
        "addresses another lab holds stops before its load (exit 2) and names that lab.\n" + EXIT_HELP,
        "  caslab run quickstart                            a small run on the default driver (Envoy)\n"
        "  caslab run hosted-tenant-source-ip --driver haproxy\n"
        "  caslab run my-farm.toml --preset recommended --duration 2m\n"
        "  caslab run quickstart --backend docker           the same lab in containers\n"
        "  caslab run hosted-tenant-recommended --driver haproxy --config haproxy.cfg   your own config\n"
        "  CASLAB_LOCAL_NET=127.0.22 caslab run quickstart  a second local lab beside a running one\n"
        "  caslab run tenant.toml --workers 4               load from 4 Locust worker processes\n"
        "  caslab run tenant.toml --master-bind 10.0.0.5:5557 --remote-workers 1   and 1 joining from\n"
        "  caslab worker --master 10.0.0.5:5557             another machine, which runs this\n",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or a bundled scenario name")
    p.add_argument("--driver", help=f"{DRIVER_HELP}; default: the scenario's")
    p.add_argument("--preset", help=f"{PRESET_HELP}; default: the scenario's")
    p.add_argument("--backend", choices=["local", "docker"], default="local", help=BACKEND_HELP)
    p.add_argument("--duration", help="override the load phase, e.g. 30s")
    p.add_argument("--out", default="reports", help="reports folder (default: reports/)")
    p.add_argument(
        "--name",
        help="the run folder's name, OUT/NAME-<UTC time>/ (default: the scenario's name)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="your own balancer config for the scenario's driver, run as written with the lab put into it "
        "(see `caslab balancer explain`); presets and persistence overrides do not apply then",
    )
    p.add_argument(
        "--allow-unrouted",
        action="store_true",
        help="run a --config that routes nowhere a service the clients use (the report shows its errors)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="load generator processes: a Locust master in caslab and N workers (the docker backend: N "
        "loadgen containers), each address's users in one worker; 1 runs Locust in caslab itself (docker: "
        "in one container) (default: this machine's cores minus one, at least 1)",
    )
    p.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        metavar="M",
        help="wait for M more workers that join from other machines (`caslab worker --master HOST:PORT`, "
        "which the console names while it waits) and give them their share of the users (default: 0)",
    )
    p.add_argument(
        "--master-bind",
        metavar="HOST:PORT",
        help="where the Locust master listens for workers: an address of this machine the others reach, "
        "0.0.0.0 for all (default: 127.0.0.1 and a free port)",
    )
    p.set_defaults(func=_run)

    p = _command(
        sub,
        "matrix",
        "run one scenario on several drivers x presets, side by side",
        "Run one scenario once for every driver x preset (one after the other, each a full `caslab run`)\n"
        "and write matrix.html, a side-by-side table of their verdicts and figures, to\n"
        "OUT/matrix-<name>-<UTC time>/ (the page `caslab suite` writes too). A combination a driver\n"
        "refuses is shown as refused, not run. Ctrl-C tears the current run down, stops, and writes the\n"
        "page for what finished. Exit code: 0 every run passed, 1 a check of some run failed, 2 some run\n"
        "was invalid or could not run, or Ctrl-C.",
        "  caslab matrix quickstart\n"
        "  caslab matrix hosted-tenant-source-ip --drivers haproxy,nginx --presets article,recommended\n",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or a bundled scenario name")
    p.add_argument("--drivers", default="envoy,haproxy,nginx", help="comma-separated (default: %(default)s)")
    p.add_argument("--presets", default="recommended", help="comma-separated (default: %(default)s)")
    p.add_argument("--duration", help="override the load phase of every run, e.g. 30s")
    p.add_argument("--out", default="reports", help="reports folder (default: reports/)")
    p.set_defaults(func=_matrix)

    p = _command(
        sub,
        "suite",
        "run every scenario file of a folder: one JUnit file, one index page, one exit code",
        "Run every scenario file (*.toml) of DIR, by name, one after another; each is a full `caslab run`\n"
        "in its own folder under OUT/suite-<DIR's name>-<UTC time>/. Then write junit.xml (a testsuite\n"
        "per scenario, a testcase per check: for your CI's test view), index.html (every run's verdict\n"
        "and reason, figures, services x runs, balance, links to the reports) and suite.json. A scenario\n"
        "file with an error is that run's error; the suite goes on. --driver and --config apply to every\n"
        "scenario (your candidate config under test).\n\n"
        "--baseline: a suite folder of an earlier run of the same scenarios (e.g. the main branch's last\n"
        "CI results); each run is compared with its run there as `caslab compare` does, the change shows\n"
        "on index.html, and compare.json and compare.md (for a pull request comment) are written.\n\n"
        "Ctrl-C tears the current run down, stops, and writes the pages for what finished.\n"
        "Progress goes to stderr. Exit code: 0 every run passed (and none got worse than the baseline),\n"
        "1 a check failed or a figure got worse, 2 a run was invalid or could not run, or Ctrl-C.",
        "  caslab suite scenarios/                          every scenario file in scenarios/\n"
        "  caslab suite scenarios/ --driver haproxy --config candidate.cfg --out results\n"
        "  caslab suite scenarios/ --baseline main-results/suite-scenarios-20261201T020000Z\n"
        "  caslab suite scenarios/ --backend docker\n",
    )
    p.add_argument("dir", metavar="DIR", help="a folder of scenario files (*.toml)")
    p.add_argument("--driver", help=f"{DRIVER_HELP}; default: each scenario's")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="your own balancer config, run in every scenario (as `caslab run --config`)",
    )
    p.add_argument("--backend", choices=["local", "docker"], default="local", help=BACKEND_HELP)
    p.add_argument("--baseline", metavar="DIR", help="a suite folder to compare each run with")
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --baseline: a tolerance of `caslab compare` (see its --help)",
    )
    p.add_argument("--out", default="reports", help="where the suite's folder goes (default: reports/)")
    p.set_defaults(func=_suite)

    p = _command(
        sub,
        "compare",
        "say what got worse from one run (or suite, or matrix) to another",
        "Compare two run folders, or two suite (or matrix) folders run by run (paired by scenario file,\n"
        "or driver-preset): per service hard and soft breaks, split sessions, cuts, error rate and p95\n"
        "latency, and for all services together; balance; the verdict. Only what got worse beyond chance\n"
        "and beyond a tolerance is a regression: counts get the exact test of two Poisson rates\n"
        "(p < 0.001), so 0 -> 3 hard breaks in runs of the same size is noise and 0 -> 10 is not;\n"
        "balance must also exceed what random placement of the same sessions gives; pass -> fail always\n"
        "is. Invalid or unfinished runs are not compared (they are listed). Only summary.json is read, so\n"
        "a CI artifact of another machine compares as well.\n\n"
        "Tolerances (--tolerance NAME=VALUE, repeat or separate by commas): hard_breaks, soft_breaks,\n"
        "split_sessions, cuts (events beyond BASE's rate; default 0), error_rate (percentage points;\n"
        "default 0), p95_latency (percent; default 50), balance (max/mean; default 0.05).\n\n"
        "Exit code: 0 no regression, 1 a regression, 2 a folder could not be read (the message names it).",
        "  caslab compare reports/quickstart-20261201T020000Z reports/quickstart-20261202T020000Z\n"
        "  caslab compare main-results/suite-ci-20261201T020000Z reports/suite-ci-20261202T020000Z\n"
        "  caslab compare BASE NEW --format markdown > comment.md\n"
        "  caslab compare BASE NEW --tolerance hard_breaks=5,balance=0.1 --html compare.html\n",
    )
    p.add_argument("base", metavar="BASE", help="the run or suite folder to compare with (the baseline)")
    p.add_argument("new", metavar="NEW", help="the run or suite folder to judge")
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="how much worse a figure may get before it is a regression (see above)",
    )
    p.add_argument(
        "--format",
        choices=["table", "markdown", "json"],
        default="table",
        help="table for the terminal (default), markdown for a pull request comment, json",
    )
    p.add_argument("--html", metavar="FILE", help="also write the comparison as a page (the runs page)")
    p.set_defaults(func=_compare)

    p = _command(
        sub,
        "advise",
        "find the persistence config that passes for a population on a driver, with the evidence",
        "Search the persistence methods (and timeouts) per service for the scenario's population on each\n"
        "--driver, by runs on the lab, and write the winning config with the evidence.\n\n"
        "Candidates: per group of services (OWA+ECP together, MAPI+Address Book together, the others\n"
        "apart) the methods the driver can do that the population's clients can carry (an ActiveSync\n"
        "device never returns a balancer cookie; Outlook Anywhere is no candidate for one), each with a\n"
        "persistence timeout longer than the clients' timers. One group is searched at a time while the\n"
        "others keep the recommended preset's method (or their winner): short runs of every candidate,\n"
        "cheapest first; a candidate whose run shows it cannot pass is dropped at once, the better half\n"
        "of the rest run twice as long (successive halving). The winners together are confirmed by a\n"
        "run of the scenario's own length. Runs go as many at once as cores allow minus one, each on its\n"
        "own CASLAB_LOCAL_NET. --budget is wall time for everything; when it runs out the best so far is\n"
        "written and said to be that. Several drivers are advised one after another, side by side.\n\n"
        "Writes OUT/advise-<name>-<UTC time>/: per driver its runs and its winning config as the\n"
        "balancer's own files (what `caslab balancer config` prints for it), advice.json (per service the\n"
        "chosen method and timeout, each rejected candidate with the figure or reason that rejected it)\n"
        "and advice.html (the confirming runs linked to their reports, then every run of the search).\n"
        "The best driver's config is printed on stdout; progress goes to stderr.\n\n"
        "Exit code: 0 a config passed its confirming run, 1 none did (the closest is written, with what\n"
        "blocks it), 2 the lab could not run, or Ctrl-C.",
        "  caslab advise hosted-tenant-recommended --driver haproxy > haproxy.cfg\n"
        "  caslab advise my-tenant.toml --driver envoy,haproxy,nginx --budget 30m\n"
        "  caslab advise citrix-mapi --driver haproxy --budget 3m    exit 1: MAPI has only source IP\n",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or a bundled scenario name")
    p.add_argument(
        "--driver",
        required=True,
        help="a driver or several, comma-separated (envoy, haproxy, nginx, traefik)",
    )
    p.add_argument(
        "--budget", default="10m", help="wall time for the whole search, e.g. 90s, 10m (default 10m)"
    )
    p.add_argument("--out", default="reports", help="where the advice folder goes (default: reports/)")
    p.set_defaults(func=_advise)

    p = _command(
        sub,
        "balancer",
        "balancer helpers: print a rendered config, explain your own",
        "Balancer helpers. `config` prints the files a driver renders, to read or to start from;\n"
        "`explain` reads your own config and says what it does per service, before anything runs.",
    )
    bsub = p.add_subparsers(dest="balancer_command", metavar="ACTION", required=True, help="one of:")
    pc = _command(
        bsub,
        "config",
        "print the config a driver renders for a preset",
        "Print the config a driver renders for a persistence preset, or for a scenario's balancer\n"
        "section (its farm size, TLS mode and per-service overrides), in front of a local farm. Paths in\n"
        "it (stats socket, certificates) are relative to a run folder: balancer/, tls/. A driver that\n"
        "cannot do what is asked says what and why, and the exit code is 2.",
        "  caslab balancer config --driver haproxy --preset recommended > haproxy.cfg\n"
        "  caslab balancer config --driver haproxy --preset source-ip-all --scenario ssl-session-id-tls13\n",
    )
    pc.add_argument("--driver", required=True, help=DRIVER_HELP)
    pc.add_argument("--preset", required=True, help=PRESET_HELP)
    pc.add_argument("--scenario", help="a scenario file or bundled name whose balancer section to render")
    pc.set_defaults(func=_balancer_config)
    pe = _command(
        bsub,
        "explain",
        "say what your own config does per service, before running it",
        "Read your own balancer config (for --driver) and print, per service, the backend its routes send\n"
        "the service's requests to, the persistence the lab reads there (in the lab's method names where it\n"
        "is one of them, else in the file's words), its timeouts, and what that predicts for each client\n"
        "kind (a cookie an ActiveSync device never returns, a NAT-ed tenant on one source address...).\n"
        "Then whether the file can run in the lab: how many lines the lab's rules rewrite (--diff shows\n"
        "them), or each line it refuses and why (exit code 2). Nothing is started and nothing is sent.",
        "  caslab balancer explain haproxy.cfg --driver haproxy\n"
        "  caslab balancer explain haproxy.cfg --driver haproxy --diff --scenario quickstart\n",
    )
    pe.add_argument("file", metavar="FILE", help="your balancer config")
    pe.add_argument("--driver", required=True, help=DRIVER_HELP)
    pe.add_argument("--scenario", help="read it for this scenario's farm size, topology and time scale")
    pe.add_argument("--diff", action="store_true", help="print the diff from the file to the file as run")
    pe.set_defaults(func=_balancer_explain)

    p = _command(
        sub,
        "up",
        "start a lab to explore by hand (farm + balancer, no load)",
        "Start a farm of mock CAS behind a real balancer and wait; point a browser, curl or Outlook at\n"
        "the VIP it prints. Stops on Ctrl-C or `caslab down` (from another terminal in this folder).",
        "  caslab up                                  3 CAS behind Envoy, TLS offloaded, on 127.0.1.1\n"
        "  caslab up --driver haproxy --tls none --servers 2\n"
        "  caslab up --backend docker\n",
    )
    p.add_argument("--backend", choices=["local", "docker"], default="local", help=BACKEND_HELP)
    p.add_argument("--servers", type=int, default=3, help="number of CAS (default 3)")
    p.add_argument("--driver", default="envoy", help="balancer driver (default envoy)")
    p.add_argument("--preset", default="recommended", help="persistence preset (default recommended)")
    p.add_argument("--tls", default="offload", choices=vocab.TLS_MODES, help="TLS mode (default offload)")
    p.add_argument("--out", default="reports", help="where the lab's folder goes (default reports/)")
    p.set_defaults(func=_up)

    p = _command(
        sub,
        "down",
        "stop the lab started by 'caslab up'; remove what killed labs left",
        "Stop the lab that `caslab up` started from this folder (it waits for the lab to be torn down),\n"
        "then remove every process, container and network of this folder's labs whose owner (the\n"
        "`caslab run` or `caslab up` that made it) is gone, e.g. killed with SIGKILL. `caslab run` and\n"
        "`caslab up` do the same before they start, and say what they removed.",
        "  caslab down                                this folder's labs\n"
        "  caslab down --all                          also running ones, and every caslab lab on Docker\n",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every lab of this folder, running or not, and every caslab lab on the Docker engine",
    )
    p.set_defaults(func=_down)

    p = _command(
        sub,
        "worker",
        "run one Locust worker of a run (the lab starts its own for --workers)",
        "Connect to a run's Locust master at HOST:PORT with Locust's own transport, take the run's load\n"
        "plan and share of users from it, and run them until the master stops; start it before or after\n"
        "the run (it retries for 5 minutes). `caslab run --workers N` starts N of these on its own\n"
        "machine; on another machine, join a run started with `--master-bind ADDR:PORT --remote-workers M`.\n"
        "The worker runs the plan as the master sends it: it must reach the run's VIP from the scenario's\n"
        "client addresses (the local backend's are loopback ones). Its event log is sent to the master\n"
        "at the end, which writes it into the run folder; with --events (a folder it shares with the\n"
        "run) it is written there directly instead.",
        "  caslab worker --master 10.0.0.5:5557             join a run on 10.0.0.5 from this machine\n",
    )
    p.add_argument("--master", required=True, metavar="HOST:PORT", help="the run's Locust master")
    p.add_argument(
        "--events",
        type=Path,
        help="event log beside the run's, the host name and pid added (events.csv -> "
        "events-<host>-<pid>.csv); default: sent to the master at the end",
    )
    p.set_defaults(func=_worker)

    p = _command(
        sub,
        "cas",
        "run one mock CAS in the foreground (container entry point)",
        "Run one mock Exchange 2010 CAS until SIGTERM/Ctrl-C. Ports are the same on every CAS; each CAS\n"
        "has its own address. The admin port serves /caslab/health, /caslab/ledger, /caslab/stats and\n"
        "/caslab/fault?health=up|down|drain. A run starts its CAS this way; run one by hand to try a\n"
        "client against a single server.",
        "  caslab cas --name CAS01 --host 127.0.1.11\n"
        "  caslab cas --name CAS02 --host 127.0.1.12 --time-scale 60 --log-level DEBUG\n"
        "  caslab cas --name CAS01 --host 127.0.1.11 --w3c-log logs/CAS01   its IIS log in logs/CAS01/\n",
    )
    p.add_argument("--name", default="CAS01", help="server name, sent as X-CasLab-Server (default CAS01)")
    p.add_argument("--host", default="127.0.1.11", help="address to listen on (default 127.0.1.11)")
    p.add_argument("--http-port", type=int, default=vocab.HTTP_PORT, help="HTTP (default %(default)s)")
    p.add_argument("--https-port", type=int, default=vocab.HTTPS_PORT, help="used with --cert/--key")
    p.add_argument("--mapi-port", type=int, default=vocab.MAPI_PORT, help="MAPI (default %(default)s)")
    p.add_argument("--ab-port", type=int, default=vocab.AB_PORT, help="Address Book (default %(default)s)")
    p.add_argument("--admin-port", type=int, default=vocab.ADMIN_PORT, help="admin (default %(default)s)")
    p.add_argument("--farm-key", help="hex key shared by the farm (mailbox state); random if omitted")
    p.add_argument("--key-seed", help="derive this CAS's own key from a seed, for reproducible runs")
    p.add_argument(
        "--time-scale", type=float, help="protocol timers run this much faster (default 1, or the scenario's)"
    )
    p.add_argument(
        "--scenario",
        metavar="NAME_OR_FILE",
        help="take --time-scale and the Exchange settings from this scenario (its time_scale and [farm]), "
        "as `caslab run` gives them to its CAS; the flags given as well win (the compose lab uses it)",
    )
    p.add_argument("--users", type=int, default=100_000, help="number of users userN@<domain>")
    p.add_argument("--password", default="caslab", help="every user's password (default %(default)s)")
    p.add_argument("--vip-host", default="mail.caslab.test", help="host name Autodiscover hands out")
    p.add_argument("--cert", help="PEM certificate chain for HTTPS")
    p.add_argument("--key", help="PEM private key for HTTPS")
    p.add_argument("--oab-skew", action="store_true", help="serve an OAB version unlike the other CAS")
    p.add_argument("--run-id", default="", help="the lab run this CAS serves, named in its admin answers")
    seconds = {"type": float, "metavar": "S"}
    exchange = p.add_argument_group(
        "Exchange settings", "seconds of Exchange time, run --time-scale faster like every protocol timer"
    )
    exchange.add_argument(
        "--rpc-min-connection-timeout",
        **seconds,
        help="the RPC proxy's MinimumConnectionTimeout: RPC/HTTP keep-alives every S seconds on both "
        "channels, at most (default: not set; 720 s announced for IN, 900 s on OUT)",
    )
    exchange.add_argument("--eas-heartbeat-min", help="MinHeartbeatInterval (default 60)", **seconds)
    exchange.add_argument("--eas-heartbeat-max", help="MaxHeartbeatInterval (default 3540)", **seconds)
    exchange.add_argument("--owa-timeout", help="OWA forms logon idle lifetime (default 900)", **seconds)
    exchange.add_argument(
        "--tcp-keepalive",
        **seconds,
        help="Windows KeepAliveTime on MAPI and Address Book connections (default 7200)",
    )
    p.add_argument(
        "--w3c-log",
        metavar="DIR",
        help="write an IIS W3C log (u_exYYMMDD.log, as IIS 7.5 on Exchange 2010) into DIR",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ... (default %(default)s)")
    p.set_defaults(func=_run_cas)

    p = _command(
        sub,
        "scenarios",
        "list the bundled scenarios",
        "List the bundled scenarios (lab/scenarios/*.toml), each with what it shows. Run one by its\n"
        "name; copy one to start a scenario of your own.",
        "  caslab scenarios\n  caslab run cas-failure\n",
    )
    p.set_defaults(func=_list_scenarios)

    p = _command(
        sub,
        "scenario",
        "scenario file helpers: the JSON Schema of scenario files, a scenario from logs",
        "Scenario file helpers. `schema` prints the JSON Schema of scenario files; `from-logs` infers a\n"
        "scenario from a farm's IIS or balancer access logs.",
    )
    ssub = p.add_subparsers(dest="scenario_command", metavar="ACTION", required=True, help="one of:")
    ps = _command(
        ssub,
        "schema",
        "print the JSON Schema of scenario files",
        "Print the JSON Schema of scenario files: every key with what it does, its type, default and\n"
        "allowed values. Editors with TOML schema support (taplo, Even Better TOML) complete and check\n"
        "the keys of a file whose first line names the schema, as the bundled scenarios do:\n"
        "    #:schema ./scenario.schema.json\n"
        "`caslab run` still checks more than the schema can: what needs two keys compared (a fault's\n"
        "server in the farm, a method the TLS mode allows) and what the chosen driver refuses.",
        "  caslab scenario schema > scenario.schema.json\n",
    )
    ps.set_defaults(func=_scenario_schema)
    pf = _command(
        ssub,
        "from-logs",
        "infer a scenario from CAS (IIS) or balancer access logs",
        "Read the logs of a real farm and write a scenario whose populations, client mix and address\n"
        "changes match them, each inference a comment with its evidence (e.g. '3 addresses carried\n"
        "47-63 distinct users each: a NAT-ed tenant'). User names and device ids are counted, never\n"
        "written.\n\n"
        "Logs: IIS W3C logs of Exchange 2010 CAS (u_exYYMMDD.log; the #Fields line decides the columns;\n"
        "log cs(User-Agent), cs-username and, behind a balancer that source-NATs, X-Forwarded-For as\n"
        "cs(X-Forwarded-For)), HAProxy `option httplog` and nginx `combined` access logs (or nginx's\n"
        "`main`, which adds X-Forwarded-For), plain or gzipped, several files and days at once. The\n"
        "format is told from each file's first line.\n\n"
        "What it infers: each request's service from its path; each client's kind from its User-Agent\n"
        "and services (Outlook 2010/2007 by Microsoft Office/14.0 or 12.0, RPC over HTTP by MSRPC, MAPI\n"
        "Outlook by its HTTP calls without RPC over HTTP, ActiveSync devices by DeviceId, browsers,\n"
        "EWS applications); populations from addresses (many users behind one: a NAT-ed tenant, or a\n"
        "Citrix farm if all run desktop Outlook; one user each: intranet or direct; phones moving among\n"
        "shared addresses: a carrier, with their rate of address changes); request rates per kind and\n"
        "the peak hour. The figures of the fit (observed against what the scenario makes in the lab)\n"
        "are printed; --report writes them as an HTML page with plots.\n\n"
        "A file that is not a log is an error naming its line; lines of another format inside a log\n"
        "are counted and quoted here, never guessed at; logs with no Exchange traffic are an error.\n"
        "Exit code: 0 the scenario was written, 2 the logs could not make one.",
        "  caslab scenario from-logs u_ex240105.log u_ex240106.log.gz -o tenant.toml --report fit.html\n"
        "  caslab scenario from-logs logs/CAS*/u_ex*.log > farm.toml\n"
        "  caslab scenario from-logs haproxy.log --haproxy-capture User-Agent -o from-balancer.toml\n"
        "  caslab scenario from-logs reports/RUN/farm/*/u_ex*.log --time-scale 120   a caslab run's logs\n",
    )
    pf.add_argument("logs", nargs="+", metavar="LOG", help="log files (plain or gzipped)")
    pf.add_argument("-o", "--output", metavar="FILE", help="write the scenario here (default: stdout)")
    pf.add_argument("--report", metavar="FILE", help="write the fit report (HTML) here")
    pf.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="the logs' clock ran this many times faster than Exchange's (a caslab run's time_scale)",
    )
    pf.add_argument(
        "--haproxy-capture",
        default="",
        metavar="NAMES",
        help="the request headers HAProxy captures, in its config's order (e.g. User-Agent,X-Forwarded-For)",
    )
    pf.set_defaults(func=_scenario_from_logs)

    p = _command(
        sub,
        "report",
        "re-render the report of a finished run",
        "Re-render report.html, junit.xml and summary.json of a finished run from the data it stored\n"
        "(events, ledgers, facts), e.g. after an update of caslab. Exit code: as the run's verdict.",
        "  caslab report reports/quickstart-20261126T101500Z\n",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder, reports/<name>-<UTC time>")
    p.set_defaults(func=_rerender_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CANNOT_RUN
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
