"""The fit report (`--report fit.html`): one self-contained page showing how far the written scenario
is from the logs, with the evidence of every population and the scenario itself.

This module decides what the page shows; templates/fit.html.j2 lays it out, with the style sheet of
the run report (lab/report/templates). Log lines are never quoted here: they hold user names (the
misfit examples go to the terminal only); files are named with their counts.
"""

from __future__ import annotations

import datetime as dt

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined

from lab.fromlogs.fit import Fit
from lab.fromlogs.model import Inference
from lab.fromlogs.plots import fit_plots

TEMPLATES = Environment(
    loader=ChoiceLoader(
        [PackageLoader("lab.fromlogs", "templates"), PackageLoader("lab.report", "templates")]
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def fit_html(inference: Inference, fit: Fit, scenario_text: str, name: str) -> str:
    files = inference.observed.files
    first = min((f.first_ts for f in files if f.first_ts is not None), default=None)
    last = max((f.last_ts for f in files if f.last_ts is not None), default=None)
    return TEMPLATES.get_template("fit.html.j2").render(
        name=name,
        inference=inference,
        fit=fit,
        plots=fit_plots(fit),
        files=files,
        span=f"{_utc(first)} to {_utc(last)} UTC" if first is not None and last is not None else "",
        scenario_text=scenario_text,
    )


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
