"""One run of `caslab advise` in a process of its own: `python -m lab.advise.worker JOB`.

JOB is a pickle that lab.advise.runner wrote: (scenario, out folder, run name). The run goes on the
CASLAB_LOCAL_NET the runner gave this process; the result (exit code and run folder) goes to JOB with
the suffix .json. A process of its own, because Locust patches the process it runs in (gevent) and one
process runs one lab at a time.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path


def main(job: Path) -> int:
    scenario, out, name = pickle.loads(job.read_bytes())  # written by our own parent process
    result = job.with_suffix(".json")
    from lab.run import RunInterrupted, run_scenario

    try:
        code, run_dir = run_scenario(scenario, Path(out), run_name=name)
        result.write_text(json.dumps({"code": code, "run_dir": str(run_dir)}))
    except RunInterrupted as stop:
        result.write_text(json.dumps({"code": 2, "run_dir": str(stop.run_dir), "interrupted": True}))
        return 2
    except Exception as err:  # the run could not even start: its folder could not be made
        result.write_text(json.dumps({"code": 2, "run_dir": None, "error": f"{type(err).__name__}: {err}"}))
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
