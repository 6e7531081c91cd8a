"""How an ActiveSync device chooses its Ping heartbeat: Microsoft's Direct Push heartbeat adjustment.

A device asks the server to hold each Ping for its heartbeat (seconds of Exchange time), and adapts it
to the network it is on (Microsoft, "Heartbeat Interval Adjustment", Windows Mobile documentation on
TechNet, cc182270): it begins at a default; each Ping that gets an answer (Status 1 or 2) raises the
heartbeat by a step, up to the device's cap; a Ping that dies on the network (cut: no answer) lowers it:
- back to the heartbeat before, if the dead Ping was the first at a raised heartbeat: that one worked,
  so the device keeps it (it has found the longest idle time the network allows) and stops raising;
- to the device's floor otherwise (a heartbeat that used to work no longer does), searching up again.
A Ping answered with Status 5 names the server's limit: the device takes it as its new floor (the
server's MinHeartbeatInterval was not met) or cap (MaxHeartbeatInterval was exceeded).

The figures chosen here, and why:
- start 540 s: the 9-minute default that Exchange 2010's event-1040 alert threshold is set at
  (research-timers.md); Windows Mobile's own default was 8 minutes.
- step 300 s: Windows Mobile's HeartbeatIncrement is a setting of the operator; 5 minutes is assumed.
- cap 1680 s (28 minutes): just under the 30 minutes Microsoft asks networks and firewalls to keep an
  idle HTTPS connection for (TechNet cc182255: idle timeouts on port 443 of 1800 s), as devices tuned
  for such networks use; below Exchange 2010's MaxHeartbeatInterval of 3540 s.
- floor 60 s: Exchange 2010's MinHeartbeatInterval, the shortest the server takes. A device behind a
  network that cuts idle connections after 5 minutes must get below 5 minutes to keep a Ping alive;
  Windows Mobile's own 8-minute floor would never get there.
Behind a 5-minute idle timeout this lands devices on short heartbeats (the mean under 540 s: Exchange's
event-1040 condition); behind a 30-minute one they grow to the cap (research-timers.md's known answers).
"""

from __future__ import annotations

START_S, STEP_S, CAP_S, FLOOR_S = 540, 300, 1680, 60


class Heartbeat:
    """One device's heartbeat: `seconds` is what its next Ping asks for; tell it how each Ping ended."""

    def __init__(
        self, start_s: int = START_S, step_s: int = STEP_S, cap_s: int = CAP_S, floor_s: int = FLOOR_S
    ) -> None:
        self.seconds = start_s
        self.step_s, self.cap_s, self.floor_s = step_s, cap_s, floor_s
        self._before: int | None = None  # the heartbeat before the last raise
        self._raised = False  # the next Ping is the first at a raised heartbeat
        self._settled = False  # a raise failed: this heartbeat is the longest the network allows

    def answered(self) -> None:
        """The Ping got an answer (its heartbeat ended, or mail came): raise the heartbeat a step."""
        if self._settled or self.seconds >= self.cap_s:
            self._raised = False
            return
        self._before, self.seconds = self.seconds, min(self.seconds + self.step_s, self.cap_s)
        self._raised = True

    def died(self) -> None:
        """The Ping was cut on the network before its answer: back off (see the module docstring)."""
        if self._raised and self._before is not None:
            self.seconds, self._settled = self._before, True
        else:
            self.seconds, self._settled = self.floor_s, False
        self._raised = False

    def limited(self, limit_s: int) -> None:
        """The server answered Status 5 with its limit: the heartbeat was out of its range."""
        if limit_s < self.seconds:
            self.cap_s = limit_s
        else:
            self.floor_s = limit_s
        self.seconds, self._raised = limit_s, False
