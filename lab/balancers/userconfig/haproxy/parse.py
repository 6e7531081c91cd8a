"""HAProxy's config language as the reader needs it: lines split into words the way HAProxy splits them
(quotes, backslash escapes, `#` comments), each word with its place in the line so that a rewrite can
change one word and keep the user's spacing; sections with the `defaults` each one inherits; times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Section keywords of HAProxy 2.6 (a line whose first word is one of these starts a section).
SECTIONS = frozenset(
    {
        "global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "mailers", "userlist",
        "cache", "program", "ring", "http-errors", "fcgi-app", "log-forward",
    }
)  # fmt: skip
PROXIES = frozenset({"defaults", "frontend", "backend", "listen"})


@dataclass(frozen=True)
class Word:
    text: str  # unquoted, unescaped
    start: int  # its span in the raw line
    end: int


@dataclass
class Line:
    index: int  # 0-based, in the source's text (placeholders filled in)
    raw: str
    words: list[Word]

    @property
    def keyword(self) -> str:
        return self.words[0].text if self.words else ""

    @property
    def args(self) -> list[str]:
        return [w.text for w in self.words[1:]]

    def texts(self) -> list[str]:
        return [w.text for w in self.words]

    def option(self, name: str) -> str | None:
        """The word after `name` among the args (`crt /x.pem` -> "/x.pem"), or None."""
        texts = self.texts()
        for i, text in enumerate(texts[:-1]):
            if i > 0 and text == name:
                return texts[i + 1]
        return None

    def has(self, *names: str) -> bool:
        return any(t in names for t in self.texts()[1:])

    @property
    def indent(self) -> str:
        return self.raw[: len(self.raw) - len(self.raw.lstrip())]


@dataclass
class Section:
    kind: str
    name: str
    header: Line
    lines: list[Line] = field(default_factory=list)
    defaults: Section | None = None  # the `defaults` section it inherits from

    def all(self, keyword: str, *more: str) -> list[Line]:
        """Its lines starting with `keyword` (and then `more` words), in order."""
        return [line for line in self.lines if line.texts()[: 1 + len(more)] == [keyword, *more]]

    def last(self, keyword: str, *more: str, inherit: bool = True) -> Line | None:
        """Its last line starting with the words given, else its defaults' (HAProxy's inheritance)."""
        mine = self.all(keyword, *more)
        if mine:
            return mine[-1]
        if inherit and self.defaults is not None:
            return self.defaults.last(keyword, *more)
        return None

    @property
    def mode(self) -> str:
        line = self.last("mode")
        return line.args[0] if line and line.args else "tcp"  # HAProxy's default mode is tcp

    @property
    def is_proxy(self) -> bool:
        return self.kind in ("frontend", "backend", "listen")


def words(raw: str) -> list[Word]:
    """The words of one line as HAProxy reads them: blanks separate, quotes group, a backslash escapes
    the next character, an unquoted `#` starts a comment."""
    out: list[Word] = []
    i, n = 0, len(raw)
    while i < n:
        while i < n and raw[i] in " \t":
            i += 1
        if i >= n or raw[i] == "#":
            break
        start, text, quote = i, [], ""
        while i < n:
            c = raw[i]
            if quote:
                if c == quote:
                    quote = ""
                elif c == "\\" and quote == '"' and i + 1 < n:
                    i += 1
                    text.append(raw[i])
                else:
                    text.append(c)
            elif c in "\"'":
                quote = c
            elif c == "\\" and i + 1 < n:
                i += 1
                text.append(raw[i])
            elif c in " \t#":
                break
            else:
                text.append(c)
            i += 1
        out.append(Word("".join(text), start, i))
    return out


def comment_free(raw: str) -> str:
    """The line without its comment."""
    ws = words(raw)
    return raw[: ws[-1].end] if ws else ""


def parse(text: str) -> tuple[list[Line], list[Section]]:
    """Every line, and the sections (lines before the first section belong to none)."""
    lines = [Line(i, raw, words(raw)) for i, raw in enumerate(text.splitlines())]
    sections: list[Section] = []
    defaults: dict[str, Section] = {}
    last_defaults: Section | None = None
    for line in lines:
        if not line.words:
            if sections:
                sections[-1].lines.append(line)
            continue
        if line.keyword in SECTIONS:
            name = line.args[0] if line.args and line.args[0] != "from" else ""
            section = Section(line.keyword, name, line)
            if line.keyword in ("frontend", "backend", "listen", "defaults"):
                parent = line.option("from")
                section.defaults = defaults.get(parent) if parent else last_defaults
            if line.keyword == "defaults":
                last_defaults = section
                if name:
                    defaults[name] = section
            sections.append(section)
        elif sections:
            sections[-1].lines.append(line)
    return lines, sections


_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1e-3}


def seconds(value: str) -> float | None:
    """An HAProxy time ("30s", "1h", "500" = milliseconds) in seconds, or None if it is not one."""
    match = _TIME.match(value.strip())
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def haproxy_time(value: float) -> str:
    """Seconds as an HAProxy time: whole seconds when exact, else milliseconds."""
    if value == int(value):
        return f"{int(value)}s"
    return f"{max(1, round(value * 1000))}ms"


def edited(line: Line, changes: dict[int, str | None], extra: str = "") -> str:
    """The raw line with word i replaced by changes[i] as given (None: removed with the blank before it;
    quote a single word with `word`), then `extra` appended; the rest of the line (spacing, comment) as
    written."""
    end = line.words[-1].end if line.words else len(line.raw)
    body, tail = line.raw[:end], line.raw[end:]
    for i in sorted(changes, reverse=True):
        word, new = line.words[i], changes[i]
        if new is None:
            start = line.words[i - 1].end if i > 0 else word.start
            body = body[:start] + body[word.end :]
        else:
            body = body[: word.start] + new + body[word.end :]
    return body + (" " + extra if extra else "") + tail


def word(text: str) -> str:
    """`text` as one HAProxy word (quoted when it holds a blank or a #, such as a path)."""
    return f'"{text}"' if any(c in text for c in " \t#\"'\\") else text
