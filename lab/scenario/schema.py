"""The JSON Schema of scenario files, made from the declared keys (lab.scenario.keys) and the vocabulary
they name, never written by hand: `caslab scenario schema` prints it, and the bundled scenarios point at
the committed copy (lab/scenarios/scenario.schema.json) with taplo's `#:schema` header, so that editors
with TOML schema support (taplo, Even Better TOML) complete and check keys as people type.

The schema says what one key at a time may hold, and what a population kind or persistence method
allows. Rules across sections (a fault's server in the farm, a method the TLS mode allows, what the
driver refuses) are the reader's alone: `caslab run` still names the key and what is allowed there.
Draft 7, the newest draft editors' TOML schema support reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caslab.vocab import CLIENT_KINDS, METHODS
from lab.scenario.durations import DURATION_HELP, DURATION_PATTERN
from lab.scenario.keys import NAMED_METHODS, TOP_KEYS, Key
from lab.scenario.model import POPULATION_KINDS

SCHEMA_FILE = Path(__file__).parent.parent / "scenarios" / "scenario.schema.json"
SCHEMA_DIRECTIVE = f"#:schema ./{SCHEMA_FILE.name}"  # the first line of a bundled scenario
DRAFT = "http://json-schema.org/draft-07/schema#"


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file, as plain data."""
    schema = {
        "$schema": DRAFT,
        "title": "caslab scenario",
        "description": "A caslab scenario (DESIGN.md section 8): a farm, a balancer, populations of "
        "clients, faults and thresholds. Times are durations: " + DURATION_HELP + ".",
        **_table(TOP_KEYS),
    }
    schema["properties"]["population"]["items"]["allOf"] = _population_kind_rules()
    return schema


def schema_text() -> str:
    """The schema as `caslab scenario schema` prints it and the committed file holds it."""
    return json.dumps(scenario_schema(), indent=2) + "\n"


def _table(keys: tuple[Key, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {key.name: _value(key) for key in keys},
        "additionalProperties": False,
    }
    required = [key.name for key in keys if key.required]
    if required:
        schema["required"] = required
    return schema


def _value(key: Key) -> dict[str, Any]:
    """The schema of one key's value, with its description and default."""
    schema = {"description": key.help, **_typed(key)}
    if key.default is not None:
        schema["default"] = key.default
    return schema


def _typed(key: Key) -> dict[str, Any]:
    if key.type == "table":
        return _table(key.keys)
    if key.type == "tables":
        return {"type": "array", "items": _table(key.keys), **({"minItems": 1} if key.required else {})}
    if key.type == "persistence":
        return {"anyOf": [_persistence_string(), _persistence_table(key.keys)]}
    scalar = _scalar(key)
    if key.keys:  # the same limit per service
        return {"anyOf": [scalar, _table(key.keys)]}
    return scalar


def _scalar(key: Key) -> dict[str, Any]:
    if key.type == "duration":
        return {"type": "string", "pattern": DURATION_PATTERN}
    if key.type == "string":
        return {"type": "string", **({"enum": list(key.choices)} if key.choices else {})}
    if key.type == "boolean":
        return {"type": "boolean"}
    schema: dict[str, Any] = {"type": key.type}  # integer or number
    if key.type == "number":
        schema["exclusiveMinimum" if key.positive else "minimum"] = 0
    elif key.minimum is not None:
        schema["minimum"] = key.minimum
    if key.maximum is not None:
        schema["maximum"] = key.maximum
    return schema


def _persistence_string() -> dict[str, Any]:
    """The short form: a method alone, or a method that reads a name and the name after a space (as
    the reader splits it: at the first space, the name stripped)."""
    unnamed = "|".join(m for m in METHODS if m not in NAMED_METHODS)
    named = "|".join(NAMED_METHODS)
    return {"type": "string", "pattern": rf"^(?:(?:{unnamed})(?: \s*)?|(?:{named}) \s*\S[\s\S]*)$"}


def _persistence_table(keys: tuple[Key, ...]) -> dict[str, Any]:
    """The table form: `name` is there exactly when the method reads one."""
    schema = _table(keys)
    schema["if"] = {"properties": {"method": {"enum": list(NAMED_METHODS)}}}
    schema["then"] = {"required": ["name"]}
    schema["else"] = {"not": {"required": ["name"]}}
    return schema


def _population_kind_rules() -> list[dict[str, Any]]:
    """What each population kind does not allow: its own addresses, its client kinds, moving."""
    rules = []
    for kind, spec in POPULATION_KINDS.items():
        refused: dict[str, Any] = {}
        if spec.allowed_clients != CLIENT_KINDS:
            refused["properties"] = {"clients": {"propertyNames": {"enum": list(spec.allowed_clients)}}}
        forbidden = [
            key
            for key, no in (("source_ips", spec.own_address), ("ip_change_every", not spec.changes_address))
            if no
        ]
        if forbidden:
            refused["not"] = {"anyOf": [{"required": [k]} for k in forbidden]}
        if refused:
            rules.append(
                {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": refused}
            )
    return rules
