"""The balancer container's start in the ready lab (lab/balancers/container.py): when the balancer
follows a CAS to a new address. The whole of it runs in tests/test_swarm.py (a swarm replaces a CAS
task; the workers' requests reach the new one through the balancer)."""

from __future__ import annotations

import pytest

from lab.balancers import container

FARM = {"cas01": "10.213.0.11", "cas02": "10.213.0.12"}


@pytest.mark.parametrize(
    "answers, up, expected",
    [
        ({"cas02": ["10.213.0.12"]}, {"10.213.0.12"}, None),  # nothing moved
        ({"cas02": ["10.213.0.20"]}, {"10.213.0.20"}, {**FARM, "cas02": "10.213.0.20"}),  # replaced, up
        ({"cas02": ["10.213.0.20"]}, set(), None),  # the new task is not up yet: keep the old address
        ({"cas02": []}, set(), None),  # the name does not resolve for a moment
        ({"cas02": ["10.213.0.12", "10.213.0.20"]}, {"10.213.0.12", "10.213.0.20"}, None),  # old still there
        ({"cas01": ["10.213.0.30"], "cas02": ["10.213.0.20", "10.213.0.21"]}, {"10.213.0.30", "10.213.0.21"},
         {"cas01": "10.213.0.30", "cas02": "10.213.0.21"}),  # both moved; the first new one that is up
    ],
)  # fmt: skip
def test_a_cas_moved_when_its_name_no_longer_answers_with_its_address_and_a_new_one_is_up(
    monkeypatch, answers, up, expected
):
    monkeypatch.setattr(container, "addresses_of", lambda host: answers.get(host, [FARM[host]]))
    monkeypatch.setattr(container, "is_up", lambda address: address in up or address in FARM.values())
    assert container.moved(dict(FARM)) == expected
