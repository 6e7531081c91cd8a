"""Placeholders in a user's config: where a rewrite rule cannot put the lab into a line safely, the file
names the lab's addresses and files itself, as jinja2 expressions filled in before any rule runs.

Rendering is strict (jinja2's StrictUndefined): a name that is not a placeholder is an error naming its
line. A file with no `{{` or `{%` is read as it is. The placeholders (PLACEHOLDERS, also in the README):

    {{ cas_servers }}              the farm's CAS as server lines in the driver's syntax, to their HTTP port
    {{ cas_servers.https }}        ... to their HTTPS port (also .http, .mapi, .addressbook)
    {{ cas_servers("https", "check ssl") }}  ... with options on every line (the driver's syntax)
    {{ cas[0].host }}, {{ cas[0].name }}, {{ cas[0].http_port }} ...   one CAS (.https_port, .mapi_port,
                                   .ab_port); {{ cas | length }} is the farm's size
    {{ vip }}                      the VIP's address; {{ vips.owa }} the address of a service's VIP
    {{ http_port }} {{ https_port }} {{ mapi_port }} {{ ab_port }} {{ stats_port }}   the VIP's ports
    {{ cert_pem }}                 the run's key and certificate chain in one PEM file (HAProxy's `crt`)
    {{ cert }} {{ key }} {{ ca }}   the run's certificate chain, its key, its CA (PEM files)
    {{ server_name }}              the name on the run's certificate (mail.caslab.test)
    {{ run_folder }}               the balancer's folder of the run (its sockets and logs)

Lines that hold placeholders are still read by the rules afterwards: a server line from
`{{ cas_servers }}` is mapped like any other (to the CAS it already names), so placeholders and rules mix.
YAML files indent with jinja2's own filter: `{{ cas_servers | indent(8) }}`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from caslab.vocab import SERVICES
from lab.balancers.userconfig import ConfigRefused, Place, Problem, Source
from lab.model import TlsFiles, Vip, local_farm

if TYPE_CHECKING:
    from lab.balancers.userconfig import Reader

PLACEHOLDERS: dict[str, str] = {
    "cas_servers": "the farm's CAS as server lines in the driver's syntax (HTTP port; .https, .mapi, "
    ".addressbook for the others; cas_servers(role, options) to add options)",
    "cas": "the farm's CAS, each with .name, .host, .http_port, .https_port, .mapi_port, .ab_port",
    "vip": "the VIP's address",
    "vips": "the VIP address of each service (vips.owa, vips.mapi, ...)",
    "http_port": "the VIP's HTTP port",
    "https_port": "the VIP's HTTPS port",
    "mapi_port": "the VIP's MAPI port",
    "ab_port": "the VIP's Address Book port",
    "stats_port": "the VIP's port for the balancer's stats",
    "cert_pem": "the run's key and certificate chain in one PEM file",
    "cert": "the run's certificate chain (PEM)",
    "key": "the run's certificate key (PEM)",
    "ca": "the run's CA certificate (PEM)",
    "server_name": "the name on the run's certificate",
    "run_folder": "the balancer's folder of the run",
}

# Sandboxed: a config file is text to fill in, and may come from anywhere; it reaches no Python internals.
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class CasServers:
    """`{{ cas_servers }}`: the farm as server lines of the reader's syntax, to the CAS port of a role."""

    def __init__(self, reader: Reader, place: Place) -> None:
        self.reader, self.place = reader, place

    def __call__(self, role: str = "http", options: str = "") -> str:
        if role not in ("http", "https", "mapi", "addressbook"):
            roles = "http, https, mapi, addressbook"
            raise jinja2.UndefinedError(f"cas_servers has no role {role!r}; roles: {roles}")
        return self.reader.server_lines(self.place, role, options)

    def __str__(self) -> str:
        return self("http")

    @property
    def http(self) -> str:
        return self("http")

    @property
    def https(self) -> str:
        return self("https")

    @property
    def mapi(self) -> str:
        return self("mapi")

    @property
    def addressbook(self) -> str:
        return self("addressbook")


def values(reader: Reader, place: Place) -> dict[str, object]:
    """What each placeholder stands for in `place`."""
    vip, files = place.vip, place.tls_files
    return {
        "cas_servers": CasServers(reader, place),
        "cas": list(place.servers),
        "vip": vip.host,
        "vips": {s: vip.service_host(s, place.topology) for s in SERVICES},
        "http_port": vip.http_port,
        "https_port": vip.https_port,
        "mapi_port": vip.mapi_port,
        "ab_port": vip.ab_port,
        "stats_port": vip.stats_port,
        "cert_pem": str(files.server_pem),
        "cert": str(files.server_cert),
        "key": str(files.server_key),
        "ca": str(files.ca_pem),
        "server_name": files.server_name,
        "run_folder": str(place.folder),
    }


def open_source(reader: Reader, path: Path, place: Place, name: str | None = None) -> Source:
    """Read one file of a user's config and fill in its placeholders (ConfigRefused naming the line of a
    placeholder that is wrong, or a file that cannot be read)."""
    name = name or path.name
    try:
        written = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise ConfigRefused([Problem(name, 0, f"cannot read it: {why}")], f"cannot read {name}") from None
    if "{{" not in written and "{%" not in written:
        return Source(name, path, written, written, tuple(range(1, written.count("\n") + 2)))
    try:
        text = _ENV.from_string(written).render(values(reader, place))
    except jinja2.TemplateSyntaxError as err:
        line = err.lineno or 0
        raise ConfigRefused(
            [Problem(name, line, f"placeholder syntax: {err.message}", _line(written, line))],
            f"{name} has a placeholder that cannot be filled in",
        ) from None
    except (jinja2.UndefinedError, SecurityError) as err:
        line, shown = _line_naming(written, str(err))
        why = f"{err}; placeholders: {', '.join(PLACEHOLDERS)}"
        raise ConfigRefused([Problem(name, line, why, shown)], f"{name} has an unknown placeholder") from None
    return Source(name, path, written, text, _origins(written.splitlines(), text.splitlines()))


def example_place(servers: int = 3) -> Place:
    """The lab's default local place (3 CAS on 127.0.1.11.., the VIP on 127.0.1.1, TLS files in tls/), for
    reading a file before any run exists (`caslab balancer explain`)."""
    tls = Path("tls")
    files = TlsFiles(tls / "ca.pem", tls / "server.crt", tls / "server.key", tls / "server.pem")
    return Place(tuple(local_farm(servers)), Vip(), files, Path("balancer"))


def _origins(written: list[str], rendered: list[str]) -> tuple[int, ...]:
    """For each rendered line, the written line (1-based) it came from: equal lines map one to one, the
    lines a placeholder expanded to map to the placeholder's line."""
    out = [0] * len(rendered)
    matcher = difflib.SequenceMatcher(None, written, rendered, autojunk=False)
    for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for j in range(j1, j2):
            out[j] = min(i1 + (j - j1), max(i1, i2 - 1)) + 1
    return tuple(out)


def _line(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _line_naming(text: str, message: str) -> tuple[int, str]:
    """The first line whose placeholder names what jinja2's message names ("'vipp' is undefined")."""
    names = re.findall(r"'([^']+)'", message)  # "'x' is undefined", "'dict object' has no attribute 'y'"
    if names:
        pattern = re.compile(r"\{[{%][^}]*\b" + re.escape(names[-1]) + r"\b")
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                return number, line
    return 0, ""
