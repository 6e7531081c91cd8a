"""The `caslab` command line (DESIGN.md section 10).

Each command is one small function registered in COMMANDS; a command that is not built yet says so and
exits 2 instead of printing anything that could be mistaken for a result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_OK, EXIT_CHECK_FAILED, EXIT_CANNOT_RUN = 0, 1, 2

DESCRIPTION = """\
caslab tests a load balancer's persistence (affinity) settings in front of an Exchange 2010 CAS farm.

A run starts a farm of mock CAS, a real balancer (Envoy by default; HAProxy, nginx, Traefik, or an
external VIP) and Locust populations of Exchange clients, then tells whether any session broke and
whether the load stayed balanced. Results go to reports/<name>-<UTC time>/.

Exit codes of `run` and `matrix`: 0 pass, 1 a check failed, 2 the lab could not run.
"""

EPILOG = """\
examples:
  caslab scenarios                              list the bundled scenarios
  caslab run quickstart                         a small run on the default driver (Envoy)
  caslab run hosted-tenant-source-ip --driver haproxy
  caslab balancer config --driver haproxy --preset recommended > haproxy.cfg
  caslab cas --name CAS01 --host 127.0.1.11     one mock CAS in the foreground
"""


def _not_built(name: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        print(f"caslab {name}: not built yet ({issue}).", file=sys.stderr)
        return EXIT_CANNOT_RUN

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caslab",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run one scenario and write its report")
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or a bundled scenario name")
    p.add_argument("--driver", help="balancer driver: envoy (default), haproxy, nginx, traefik, external")
    p.add_argument("--preset", help="persistence preset: article, recommended, source-ip-all, ...")
    p.add_argument("--backend", choices=["local", "docker"], default="local")
    p.add_argument("--duration", help="override the load phase, e.g. 30s")
    p.add_argument("--out", help="reports folder (default: reports/)")
    p.set_defaults(func=_not_built("run", "the 'caslab run' issue"))

    p = sub.add_parser("matrix", help="run one scenario on several drivers x presets, side by side")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--drivers", default="envoy,haproxy,nginx")
    p.add_argument("--presets", default="recommended")
    p.add_argument("--out")
    p.set_defaults(func=_not_built("matrix", "the 'caslab run' issue"))

    p = sub.add_parser("balancer", help="balancer helpers: print a rendered config")
    bsub = p.add_subparsers(dest="balancer_command", metavar="ACTION", required=True)
    pc = bsub.add_parser("config", help="print the config a driver renders for a preset")
    pc.add_argument("--driver", required=True)
    pc.add_argument("--preset", required=True)
    pc.add_argument("--scenario")
    pc.set_defaults(func=_not_built("balancer config", "the balancer drivers issue"))

    p = sub.add_parser("up", help="start a lab to explore by hand (farm + balancer)")
    p.add_argument("--backend", choices=["local", "docker"], default="local")
    p.add_argument("--servers", type=int, default=3)
    p.set_defaults(func=_not_built("up", "the 'caslab run' issue"))

    p = sub.add_parser("down", help="stop the lab started by 'caslab up'")
    p.set_defaults(func=_not_built("down", "the 'caslab run' issue"))

    p = sub.add_parser("cas", help="run one mock CAS in the foreground (container entry point)")
    p.add_argument("--name", default="CAS01")
    p.add_argument("--host", default="127.0.1.11")
    p.set_defaults(func=_not_built("cas", "the mockcas issue"))

    p = sub.add_parser("scenarios", help="list the bundled scenarios")
    p.set_defaults(func=_not_built("scenarios", "the 'caslab run' issue"))

    p = sub.add_parser("report", help="re-render the report of a finished run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=_not_built("report", "the 'caslab run' issue"))
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
