"""A user's YAML (or JSON) file as a tree that knows the line and column of every value, and edits of
single values in place, so the file as run is the user's file with only those values changed.

PyYAML's composer keeps each node's position; a reader walks `Node`s, and replaces a value (`replace`),
inserts one into a sequence or a mapping (`insert_item`, `insert_key`), whatever the file's style: block
YAML or flow (JSON). Envoy and Traefik files are read this way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml

from lab.balancers.userconfig import AdoptedFile, ConfigRefused, Problem, Rewrite, Source


@dataclass
class Node:
    """One value of the file, with its position."""

    node: yaml.Node
    path: tuple[str | int, ...] = ()

    @property
    def line(self) -> int:
        """0-based line index where the value starts."""
        return self.node.start_mark.line

    @property
    def is_map(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    @property
    def is_list(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    @property
    def value(self) -> str | None:
        return self.node.value if isinstance(self.node, yaml.ScalarNode) else None

    def items(self) -> Iterator[tuple[str, Node]]:
        if self.is_map:
            for k, v in self.node.value:
                yield str(k.value), Node(v, (*self.path, str(k.value)))

    def key_node(self, key: str) -> Node | None:
        if self.is_map:
            for k, _v in self.node.value:
                if k.value == key:
                    return Node(k, self.path)
        return None

    def get(self, *keys: str | int) -> Node | None:
        node: Node | None = self
        for key in keys:
            if node is None:
                return None
            if isinstance(key, int):
                items = node.list()
                node = items[key] if 0 <= key < len(items) else None
            else:
                node = next((v for k, v in node.items() if k == key), None)
        return node

    def text(self, *keys: str) -> str | None:
        node = self.get(*keys)
        return node.value if node is not None else None

    def many(self, *keys: str | int) -> list[Node]:
        """The items of the sequence at `keys` ([] when there is none)."""
        node = self.get(*keys)
        return node.list() if node is not None else []

    def list(self) -> list[Node]:
        if self.is_list:
            return [Node(v, (*self.path, i)) for i, v in enumerate(self.node.value)]
        return []

    def walk(self) -> Iterator[Node]:
        """This node and every node inside it, in file order."""
        yield self
        for _k, v in self.items():
            yield from v.walk()
        for v in self.list():
            yield from v.walk()

    def data(self) -> object:
        """The plain Python value."""
        if self.is_map:
            return {k: v.data() for k, v in self.items()}
        if self.is_list:
            return [v.data() for v in self.list()]
        return (
            yaml.safe_load(yaml.serialize(self.node))
            if self.node.tag != "tag:yaml.org,2002:str"
            else self.value
        )


def load(text: str, file: str) -> Node:
    """The root node of a YAML or JSON file; ConfigRefused with the parser's line on a syntax error."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        shown = text.splitlines()[line - 1] if 0 < line <= text.count("\n") + 1 else ""
        why = getattr(err, "problem", None) or str(err)
        raise ConfigRefused(
            [Problem(file, line, f"YAML syntax: {why}", shown)], f"{file} is not YAML"
        ) from None
    return Node(root if root is not None else yaml.MappingNode("tag:yaml.org,2002:map", []))


def scalar(value: object, like: Node | None = None) -> str:
    """A value as a YAML scalar that is also JSON: strings double-quoted where the original was quoted or
    JSON-like, numbers bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    style = like.node.style if like is not None and isinstance(like.node, yaml.ScalarNode) else '"'
    text = str(value)
    if style == "'" and "'" not in text:
        return f"'{text}'"
    if style in (None, "") and re.fullmatch(r"[A-Za-z0-9_./:@-]+", text) and not text[0].isdigit():
        return text
    return json.dumps(text)


@dataclass
class Edits:
    """Changes to one file's text, each with the rule that made it; `apply` gives the file as run."""

    source: Source
    changes: list[tuple[int, int, int, int, str, str]] = field(
        default_factory=list
    )  # l1, c1, l2, c2, new, rule
    added: list[tuple[int, str, str]] = field(default_factory=list)  # (before line index, text, rule)

    def replace(self, node: Node, new: str, rule: str) -> None:
        s, e = node.node.start_mark, node.node.end_mark
        self.changes.append((s.line, s.column, e.line, e.column, new, rule))

    def insert_item(self, seq: Node, item: str, rule: str) -> None:
        """Put `item` (a scalar or flow value) first in a sequence."""
        if seq.node.flow_style:
            s = seq.node.start_mark
            tail = ", " if seq.node.value else ""
            self.changes.append((s.line, s.column + 1, s.line, s.column + 1, item + tail, rule))
            return
        first = seq.node.value[0].start_mark if seq.node.value else seq.node.start_mark
        line = self.source.text.splitlines()[first.line]
        dash = line[: first.column].rstrip()
        pad = " " * (len(dash) - 1) if dash.endswith("-") else " " * first.column
        self.added.append((first.line, f"{pad}- {item}", rule))

    def insert_key(self, mapping: Node, key: str, value: dict | str, rule: str) -> None:
        """Add `key: value` (a flow value, valid YAML and JSON) to a mapping, first in it."""
        text = f"{json.dumps(key)}: {value if isinstance(value, str) else json.dumps(value)}"
        if mapping.node.flow_style or not mapping.node.value:
            s = mapping.node.start_mark
            tail = ", " if mapping.node.value else ""
            if not mapping.node.value and not mapping.node.flow_style:  # an empty document
                self.added.append((0, text, rule))
                return
            self.changes.append((s.line, s.column + 1, s.line, s.column + 1, text + tail, rule))
            return
        first = mapping.node.value[0][0].start_mark
        self.added.append((first.line, " " * first.column + text, rule))

    def apply(self, name: str) -> tuple[AdoptedFile, list[Rewrite]]:
        lines = self.source.text.splitlines()
        written = self.source.written.splitlines()
        new = list(lines)
        rules: dict[int, list[str]] = {}
        dropped: set[int] = set()
        for l1, c1, l2, c2, text, rule in sorted(self.changes, key=lambda c: (c[0], c[1]), reverse=True):
            new[l1] = new[l1][:c1] + text + (lines[l2][c2:] if l2 != l1 else new[l1][c2:])
            for i in range(l1 + 1, l2 + 1):
                dropped.add(i)
            rules.setdefault(l1, []).append(rule)
        before: dict[int, list[tuple[str, str]]] = {}
        for at, text, rule in self.added:
            before.setdefault(at, []).append((text, rule))
        out, origins, rewrites = [], [], []
        for i, line in enumerate(new):
            for text, rule in before.get(i, []):
                out.append(text)
                origins.append(0)
                rewrites.append(Rewrite(self.source.name, 0, "", text, rule))
            origin = self.source.line_of(i)
            was = written[origin - 1] if 0 < origin <= len(written) else lines[i]
            if i in dropped:
                rewrites.append(Rewrite(self.source.name, origin, was, "", "joined into the line above"))
                continue
            out.append(line)
            origins.append(origin)
            if i in rules and line != lines[i]:
                rewrites.append(
                    Rewrite(self.source.name, origin, was, line, "; ".join(dict.fromkeys(reversed(rules[i]))))
                )
        for text, rule in before.get(len(new), []):
            out.append(text)
            origins.append(0)
            rewrites.append(Rewrite(self.source.name, 0, "", text, rule))
        text = "\n".join(out) + "\n"
        return AdoptedFile(name, self.source.name, self.source.written, text, tuple(origins)), rewrites
