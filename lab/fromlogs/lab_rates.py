"""What the lab's client kinds make: requests per client per hour of Exchange time, as their CAS's IIS
logs show them (LoadGen's medium profile, the lab's only one). A scenario cannot set request rates, so
these are the synthesized side of the fit's rates.

Measured with `python bench/bench_fromlogs.py --lab-rates` (a caslab run of every client kind, its IIS
logs read back by from-logs); the round-trip test (tests/test_fromlogs_roundtrip.py) checks that a run
still makes them, within a factor of LAB_RATES_TOLERANCE, so a change of the kinds' habits shows here.
"""

from __future__ import annotations

# Measured 2026-12-04: 12 clients of each kind, 120 s at time_scale 120 (4 Exchange hours).
LAB_RATES: dict[str, float] = {
    "browser": 16.8,
    "outlook2010-rpchttp": 4.9,
    "outlook2007-rpchttp": 4.3,
    "outlook-mapi": 3.8,
    "eas-device": 18.8,
    "ews-app": 14.8,
}
LAB_RATES_TOLERANCE = (
    2.0  # a short run's rates lie within this factor of these (start-up requests weigh more)
)
