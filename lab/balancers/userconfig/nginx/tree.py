"""An nginx config as a tree of directives, read by crossplane (nginx Inc.'s parser), with each directive's
file, line and context; includes followed by the reader's rule; and edits of single directives in a line.

crossplane reads one file at a time here (`single=True`): the reader resolves includes itself, by the
rule a user can predict (relative to the main file's folder; a glob or a missing file is refused by
name), and walks an included file in the context of its `include` line.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import crossplane

from lab.balancers.userconfig import ConfigRefused, Problem


@dataclass
class Directive:
    name: str
    args: list[str]
    file: str  # the file's name (as written for the user's files, as run for the files as run)
    index: int  # 0-based line index in its file's text
    occurrence: int  # how many statements of this name come before it on its line
    context: tuple[str, ...]  # the blocks it is in: ("http", "server", "location")
    block: list[Directive] | None = None
    parent: Directive | None = field(default=None, repr=False)

    def first(self, name: str) -> Directive | None:
        return next((d for d in self.block or () if d.name == name), None)

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.block or () if d.name == name]

    @property
    def text(self) -> str:
        return " ".join([self.name, *self.args])

    def inherited(self, name: str) -> Directive | None:
        """The directive `name` that applies here: in this block, else in the nearest enclosing one."""
        node: Directive | None = self
        while node is not None:
            found = node.first(name)
            if found is not None:
                return found
            node = node.parent
        return None


def parse(text: str, file: str, context: tuple[str, ...] = ()) -> list[Directive]:
    """The directives of one file's text; ConfigRefused with crossplane's message and line on a syntax
    error."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=True) as tmp:
        tmp.write(text)
        tmp.flush()
        payload = crossplane.parse(
            tmp.name, single=True, check_ctx=False, check_args=False, catch_errors=True
        )
    errors = payload["errors"] or [e for c in payload["config"] for e in c["errors"]]
    if errors:
        lines = text.splitlines()
        problems = []
        for err in errors:
            line = err.get("line") or 0
            why = str(err.get("error", "")).replace(tmp.name, file).split(" in ")[0]
            shown = lines[line - 1] if 0 < line <= len(lines) else ""
            problems.append(Problem(file, line, f"nginx syntax: {why}", shown))
        raise ConfigRefused(problems, f"{file} is not a config nginx can read")
    return _build(payload["config"][0]["parsed"], file, context, None)


def _build(
    items: list[dict], file: str, context: tuple[str, ...], parent: Directive | None
) -> list[Directive]:
    out: list[Directive] = []
    seen: dict[tuple[int, str], int] = {}
    for item in items:
        index = item["line"] - 1
        key = (index, item["directive"])
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        d = Directive(item["directive"], list(item.get("args", [])), file, index, occurrence, context)
        d.parent = parent
        if "block" in item:
            d.block = _build(item["block"], file, (*context, item["directive"]), d)
        out.append(d)
    return out


def walk(
    directives: list[Directive], included: Callable[[Directive], list[Directive] | None] | None = None
) -> Iterator[Directive]:
    """Every directive in file order, blocks and (through `included`) included files entered."""
    for d in directives:
        yield d
        if d.name == "include" and included is not None:
            inner = included(d)
            if inner:
                yield from walk(inner, included)
        if d.block is not None:
            yield from walk(d.block, included)


# One nginx word: a quoted string or a run of characters that are not blanks, quotes or ; { } #.
_WORD = r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s;{}'"#]+)"""


def statements(line: str, name: str) -> list[re.Match[str]]:
    """The simple statements `name ...;` in one line of text, in order (comments left out)."""
    pattern = re.compile(rf"(?<![\w$./-]){re.escape(name)}(?:\s+{_WORD})*\s*;")
    code = _code(line)
    return [m for m in pattern.finditer(line) if m.start() < code]


def _code(line: str) -> int:
    """Where the comment of a line starts (its length when it has none)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            return i
    return len(line)


def replace_statement(line: str, d: Directive, new: str) -> str | None:
    """`line` with the statement of directive `d` replaced by `new` (a whole statement, or "" to drop it);
    None when the statement is not on that line (it spans lines)."""
    found = statements(line, d.name)
    if d.occurrence >= len(found):
        return None
    m = found[d.occurrence]
    return line[: m.start()] + new + line[m.end() :]


def quote(word: str) -> str:
    """A word as nginx reads it: quoted when it holds blanks or special characters."""
    return word if re.fullmatch(r"[^\s;{}'\"#]+", word) else '"' + word.replace('"', '\\"') + '"'


def statement(name: str, args: list[str]) -> str:
    return " ".join([name, *(quote(a) for a in args)]) + ";"


# -- includes ---------------------------------------------------------------------------------------------

NGINX_CONF_DIR = Path("/etc/nginx")  # files of the lab's nginx package (mime.types, proxy_params...)


def include_path(word: str, base: Path, file: str, line: int, text: str) -> Path:
    """The file an `include` reads, by the rule a user can predict: relative to the main file's folder (an
    absolute path as written); where that is not there, a file of the lab's nginx package with that name
    directly in /etc/nginx (mime.types, proxy_params, fastcgi_params). Refused: globs, missing files."""
    if any(c in word for c in "*?["):
        raise ConfigRefused(
            [
                Problem(
                    file,
                    line,
                    f"include of a glob ({word}): the lab follows named files only; "
                    "include each file by name",
                    text,
                )
            ],
            f"{file} includes files the lab cannot follow",
        )
    path = Path(word) if Path(word).is_absolute() else base / word
    if path.is_file():
        return path
    packaged = NGINX_CONF_DIR / Path(word).name
    if Path(word).parent in (Path("."), NGINX_CONF_DIR) and packaged.is_file():
        return packaged
    raise ConfigRefused(
        [Problem(file, line, f"include {word}: no such file (read relative to {base})", text)],
        f"{file} includes a file that is not there",
    )


def run_name(word: str, taken: set[str]) -> str:
    """The name an included file has in the run folder: its path flattened (conf.d/owa.conf ->
    conf.d_owa.conf), made unique."""
    name = word.lstrip("/").replace("/", "_") or "include.conf"
    base, n = name, 2
    while name in taken:
        name = f"{n}_{base}"
        n += 1
    taken.add(name)
    return name
