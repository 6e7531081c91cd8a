"""The evaluator of `caslab advise` on the lab: each trial is an ordinary run (lab.run.run_scenario) in a
child process of its own (lab.advise.worker), so that several run at once, each on its own loopback net
(CASLAB_LOCAL_NET), as many as the machine's cores minus one (at least one).

Children run in their own session: Ctrl-C in the terminal reaches only caslab advise, which sends each
running child one SIGTERM (a run tears its lab down on SIGTERM as on Ctrl-C) and waits for it. A run
whose status is `invalid` (e.g. the machine was saturated) is made once more before it counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab.advise.candidates import with_methods
from lab.advise.judge import Outcome
from lab.advise.search import Trial
from lab.runset import RunSetError, run_entry
from lab.scenario import Scenario, format_duration

OVERHEAD_S = 12.0  # start, teardown and verdict of a small run, until a run measured it
GRACE_S = 120.0  # a run this much past its estimate is stopped


def lanes() -> list[str]:
    """The loopback nets runs go on at once: the user's CASLAB_LOCAL_NET (or the default) first, then
    127.0.41, 127.0.42... (cores minus one of them, at least one)."""
    count = max(1, (os.cpu_count() or 2) - 1)
    first = os.environ.get("CASLAB_LOCAL_NET", "127.0.1")
    return [first] + [f"127.0.{41 + i}" for i in range(count - 1)]


class LabEvaluator:
    """Runs trials of one scenario on one driver into `folder` (lab.advise.search.Evaluator)."""

    def __init__(
        self, scenario: Scenario, driver: str, folder: Path, say: Callable[[str], None] = print
    ) -> None:
        self.scenario, self.driver, self.folder, self.say = scenario, driver, folder, say
        self.nets = lanes()
        self.overhead_s = OVERHEAD_S
        self.count = 0
        self.cache: dict[tuple, Outcome] = {}

    def estimate(self, seconds: float) -> float:
        return self.scenario.ramp_s + seconds + self.overhead_s

    def __call__(self, trials: list[Trial], deadline: float) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        todo = []
        for i, trial in enumerate(trials):
            if trial.key in self.cache:
                outcomes[i] = self.cache[trial.key]
            else:
                todo.append(i)
        for i, outcome in self._run_all([trials[i] for i in todo], deadline).items():
            outcomes[todo[i]] = outcome
        for i in todo:
            if outcomes[i].status == "invalid":  # once more: a saturated machine is no verdict
                again = self._run_all([trials[i]], deadline).get(0)
                outcomes[i] = again if again and again.status != "not run" else outcomes[i]
            if outcomes[i].status != "not run":
                self.cache[trials[i].key] = outcomes[i]
        return [outcomes[i] for i in range(len(trials))]

    def _run_all(self, trials: list[Trial], deadline: float) -> dict[int, Outcome]:
        """Run `trials` on the free lanes; those that cannot end before `deadline` are "not run"."""
        waiting = list(enumerate(trials))
        running: dict[str, tuple[int, Trial, subprocess.Popen, Path, float]] = {}
        done: dict[int, Outcome] = {}
        try:
            while waiting or running:
                free = [n for n in self.nets if n not in running]
                while waiting and free:
                    i, trial = waiting.pop(0)
                    if time.monotonic() + self.estimate(trial.seconds) > deadline:
                        done[i] = Outcome("not run", "the budget ran out", seconds=trial.seconds)
                        continue
                    net = free.pop(0)
                    running[net] = (i, trial, *self._start(trial, net), time.monotonic())
                for net, (i, trial, child, job, started) in list(running.items()):
                    late = time.monotonic() - started > self.estimate(trial.seconds) + GRACE_S
                    if late and child.poll() is None:
                        child.send_signal(signal.SIGTERM)
                        child.wait()
                    if child.poll() is not None:
                        del running[net]
                        done[i] = self._finished(trial, job, time.monotonic() - started)
                if running:
                    time.sleep(0.2)  # polling children; a run takes seconds
        except KeyboardInterrupt:
            for _i, _trial, child, _job, _started in running.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)  # the run tears its lab down, as on Ctrl-C
            for _i, _trial, child, _job, _started in running.values():
                child.wait()
            raise
        return done

    def _start(self, trial: Trial, net: str) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        name = f"{self.count:02d}-{trial.name}"
        variant = with_methods(self.scenario, self.driver, trial.methods)
        if trial.seconds != self.scenario.duration_s:
            variant = variant.with_overrides(duration=format_duration(trial.seconds))
        variant = dataclasses.replace(variant, source_text=_noted(variant, trial))
        job = self.folder / f".{name}.job"
        job.write_bytes(pickle.dumps((variant, str(self.folder), name)))
        self.say(f"caslab advise: {self.driver}: run {name} on {net}")
        env = {**os.environ, "CASLAB_LOCAL_NET": net}
        with open(self.folder / f".{name}.out", "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "lab.advise.worker", str(job)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        return child, job

    def _finished(self, trial: Trial, job: Path, took: float) -> Outcome:
        result = job.with_suffix(".json")
        job.unlink(missing_ok=True)
        if not result.is_file():
            log = job.with_suffix(".out").name
            return Outcome("could not run", f"the run's process ended without a result (see {log})")
        answer = json.loads(result.read_text())
        result.unlink()
        run_dir = Path(answer["run_dir"]) if answer.get("run_dir") else None
        if run_dir is None:
            return Outcome("could not run", answer.get("error", "no run folder"), seconds=trial.seconds)
        job.with_suffix(".out").replace(run_dir / "advise-run.log")
        try:
            entry = run_entry(run_dir)
        except RunSetError as err:
            return Outcome("could not run", str(err), run_dir, seconds=trial.seconds)
        if entry.summary is not None:  # learn what a run costs beside its load phase
            self.overhead_s = max(5.0, took - self.scenario.ramp_s - trial.seconds)
        status = entry.status
        if answer.get("interrupted"):
            raise KeyboardInterrupt
        return Outcome(status, entry.reason, run_dir, entry.summary, trial.seconds)


def _noted(variant: Scenario, trial: Trial) -> str:
    """The scenario's TOML as the run folder keeps it, headed by what caslab advise changed."""
    methods = ", ".join(f"{s}={p}" for s, p in trial.methods.items())
    what = "confirming run" if trial.candidate is None else f"{'+'.join(trial.group)} = {trial.candidate}"
    head = (
        f"# caslab advise ({what}) ran this scenario on {variant.balancer.driver} with a load phase of "
        f"{trial.seconds:g} s and these methods instead of the file's:\n# {methods}\n"
    )
    return head + variant.source_text
