"""What a run writes (DESIGN.md section 9): summary.json, junit.xml, report.html and the raw data.

folder.py    write_run stores a finished run's data and renders its files; render_report renders
             them again from the stored data (`caslab report RUN_DIR`)
summary.py   summary.json
junit.py     junit.xml
page.py      report.html: what the page shows, handed to its template
plots.py     the page's plots as inline SVG
templates/   report.html.j2 and its style sheet (package data)
"""

from lab.report.folder import RUN_FACTS, render_report, write_run
from lab.report.junit import junit_xml
from lab.report.page import report_html, what_broke
from lab.report.summary import SCHEMA, summary

__all__ = [
    "RUN_FACTS",
    "SCHEMA",
    "junit_xml",
    "render_report",
    "report_html",
    "summary",
    "what_broke",
    "write_run",
]
