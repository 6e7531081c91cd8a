"""What the lab's client kinds make: requests per client per hour of Exchange time, as their CAS's IIS
logs show them (LoadGen's medium profile, the lab's only one). A scenario cannot set request rates, so
these are the synthesized side of the fit's rates.

Measured with `python bench/bench_fromlogs.py --lab-rates` (a caslab run of every client kind, its IIS
logs read back by from-logs); the round-trip test (tests/test_fromlogs_roundtrip.py) checks that a run
still makes them, within a factor of LAB_RATES_TOLERANCE, so a change of the kinds' habits shows here.
"""

from __future__ import annotations

# Measured 2026-12-05: 12 clients of each kind, 240 s at time_scale 120 (8 Exchange hours). The kinds'
# habits changed since the first measurement (2026-12-04, 4 hours): the Outlook kinds' keep-alives and
# cut checks, the phones' heartbeats; eas-device went from 18.8 to 12.4 and outlook2007-rpchttp from 4.3
# to 5.3. (A 4-hour run now gives 13.0 and 6.0: its start-up requests weigh more.)
LAB_RATES: dict[str, float] = {
    "browser": 15.9,
    "outlook2010-rpchttp": 5.5,
    "outlook2007-rpchttp": 5.3,
    "outlook-mapi": 4.6,
    "eas-device": 12.4,
    "ews-app": 14.7,
}
LAB_RATES_TOLERANCE = (
    2.0  # a short run's rates lie within this factor of these (start-up requests weigh more)
)
