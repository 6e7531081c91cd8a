"""What bounds the end of a lab: teardown is not to be stopped half-way, and not to last for ever.

`signals_held` keeps a second Ctrl-C from cutting a teardown short. `Deadline` makes the process exit
within EXIT_BOUND_S of a Ctrl-C or SIGTERM, whatever state the run is in: Locust stopping a million
users (its stop is linear in them), a CAS that does not answer, a Docker call that does not return.
When the lab's own teardown has not finished TEARDOWN_S after the signal, the deadline removes what is
left without asking it anything (lab.backends.janitor.remove_lab: kill the recorded processes, remove
the containers) and ends the process. `end_process` ends it at once after the verdict: the interpreter's
own teardown of a large run's objects (its users' greenlets) took 18 s after 390,000 users.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from lab.backends.state import LabRecord

log = logging.getLogger("caslab.lab")

TEARDOWN_S = 45.0  # the lab's own teardown gets this long after Ctrl-C or SIGTERM
KILL_S = 10.0  # then removing what is left gets this long (kill and wait; docker calls time out)
EXIT_BOUND_S = 60  # the stated bound (README, caslab run --help): TEARDOWN_S + KILL_S and some margin


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored inside: a second Ctrl-C must not stop a teardown half-way and leave
    containers or processes behind. (Signal handlers belong to the main thread; elsewhere this does
    nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class Deadline:
    """A clock for the lab's teardown: TEARDOWN_S after `arm()`, unless the clock was stopped, what is left
    of the lab is removed and the process ends with `code`, whatever its main thread is doing then."""

    def __init__(self, record: LabRecord, code: int) -> None:
        self.record = record
        self.code = code
        self.clocks = 0
        self.stopped: set[int] = set()

    def arm(self) -> int:
        """Start a clock; its number, for `stop`."""
        self.clocks += 1
        _start_native_thread(self._expire, (self.clocks,))
        return self.clocks

    def stop(self, clock: int) -> None:
        self.stopped.add(clock)

    @contextlib.contextmanager
    def bounding(self) -> Iterator[None]:
        """A clock for the block: the block is done in TEARDOWN_S or the process ends."""
        clock = self.arm()
        try:
            yield
        finally:
            self.stop(clock)

    def _expire(self, clock: int) -> None:
        _native_sleep(TEARDOWN_S)
        if clock in self.stopped:
            return
        _start_native_thread(_end_after, (KILL_S, self.code))  # even if removing hangs
        log.warning("the lab's teardown took more than %g s; removing what is left of it", TEARDOWN_S)
        print(f"caslab: teardown took more than {TEARDOWN_S:g} s; removing what is left", file=sys.stderr)
        try:
            from lab.backends.janitor import remove_lab

            log.warning("removed: %s", remove_lab(self.record, timeout=KILL_S))
        finally:
            end_process(self.code)


def _end_after(seconds: float, code: int) -> None:
    _native_sleep(seconds)
    end_process(code)


def _start_native_thread(function: Callable[..., None], args: tuple) -> None:
    """Run `function(*args)` in an OS thread, whether or not Locust has patched the process with gevent by
    then: a greenlet would wait for the very greenlets that hold things up."""
    from gevent.monkey import get_original  # imported here: most commands never need it

    get_original("_thread", "start_new_thread")(function, args)


def _native_sleep(seconds: float) -> None:
    """Block this OS thread (gevent's sleep would run the thread's own hub instead)."""
    from gevent.monkey import get_original

    get_original("time", "sleep")(seconds)


def end_process(code: int) -> NoReturn:
    """Exit now with `code`, after flushing the output and the logs, without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)
