"""The local farm's account of its CAS: one that ended without the lab stopping it is lost (the run is
then invalid, lab/run.py), one that a fault stopped is not."""

from __future__ import annotations

import secrets

import psutil

from lab.farm import LocalFarm
from lab.model import local_farm


def test_a_cas_that_exits_on_its_own_is_lost_and_one_a_fault_stops_is_not(tmp_path):
    farm = LocalFarm(local_farm(3, "127.0.47"), farm_key=secrets.token_bytes(32), run_dir=tmp_path)
    farm.start()
    try:
        farm.collect_ledger()
        assert farm.lost == []
        farm.kill("CAS01")  # the scenario's `stop` fault
        psutil.Process(farm.processes["CAS02"].pid).kill()  # a crash of the lab's own
        farm.processes["CAS02"].wait()
        farm.collect_ledger()
        assert farm.lost == ["CAS02 exited with code -9 without the lab stopping it (its log: CAS02.log)"]
        farm.collect_ledger()
        assert len(farm.lost) == 1, "said once"
    finally:
        farm.stop()
