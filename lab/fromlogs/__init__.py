"""`caslab scenario from-logs` (DESIGN.md section 14): a farm's own logs in, a scenario out whose
populations, client mix, address changes and request rates match them, with a fit report.

    read.py        files of any format, plain or gzipped, into one tally; no Exchange traffic is an error
      sources.py   opening (gzip by its magic), a file's first line, LogError
      w3c.py       IIS W3C logs of Exchange 2010 CAS, streamed through pyarrow's CSV reader
      textlog.py   line logs read with one expression per format: haproxy.py, nginx.py
      batch.py     the one shape every reader hands on, and the notes it keeps per file
    tally.py       the small counters a day of logs comes down to (ids, not names)
    classify.py    what one value says: the service of a path, the family of a User-Agent, a user
    infer.py       the inference: clients.py (kinds), populations.py (addresses), rates.py
    model.py       what is inferred, as plain data
    writer.py      the scenario TOML, every inference a comment with its evidence
    fit.py         observed against synthesized; lab_rates.py, what the lab's client kinds make
    figures.py     the fit as text; page.py, plots.py, templates/: the fit report
    command.py     the command itself

Streaming: no file is held in memory (blocks of whole lines; counters that grow with the number of
clients, not of lines). Nothing personal leaves: user names and device ids are counted, never written.
"""
