"""Finding scenarios: a file the user names, or a bundled one (lab/scenarios/*.toml) by its bare name.

A scenario's origin, which its messages and its report name, is what the user typed: a bundled
scenario's name (`quickstart`), else the path as given on the command line, never resolved, so that
nothing a run writes holds a path of the machine it ran on.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from lab.scenario.model import Scenario, ScenarioError
from lab.scenario.reader import parse_scenario

SCENARIO_DIR = Path(__file__).parent.parent / "scenarios"


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario file, or a bundled scenario by its bare name (`quickstart`)."""
    path = Path(path_or_name)
    origin = str(path_or_name)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        bundled = SCENARIO_DIR / f"{path.name}.toml"
        if not bundled.exists():
            known = ", ".join(bundled_scenarios())
            raise ScenarioError(origin, "", f"no such file or bundled scenario; bundled: {known}")
        path, origin = bundled, path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(origin, "", f"cannot read: {err.strerror or err}") from None
    scenario = parse_scenario(text, origin=origin, default_name=path.stem)
    return dataclasses.replace(scenario, folder=path.parent)  # a user's config is relative to it


def bundled_scenarios() -> dict[str, str]:
    """Bundled scenario name -> its one-line description."""
    out = {}
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        try:
            description = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
        except tomllib.TOMLDecodeError:
            description = "(not valid TOML)"
        out[path.stem] = str(description)
    return out
