"""The backend contract (lab/backends/__init__.py): both backends keep it, call for call, and what lab.run
makes is a `Lab`."""

from __future__ import annotations

import inspect

import pytest

from lab.backends import Lab
from lab.backends.docker import DockerLab
from lab.backends.local import LocalLab
from lab.backends.state import LabRecord
from lab.balancers.presets import resolve
from lab.model import BalancerSpec, Vip, local_farm
from lab.run import make_lab

CALLS = ["start", "fault", "run_load", "collect_ledgers", "lost_servers", "server_stats", "counters", "stop"]


def test_the_contract_names_every_call_lab_run_makes():
    members = {name for name, _ in inspect.getmembers(Lab) if not name.startswith("_")}
    assert members == {*CALLS, "servers"}
    assert set(inspect.get_annotations(Lab)) == {"spec", "run_dir", "run_id", "balancer"}


@pytest.mark.parametrize("backend", [LocalLab, DockerLab])
@pytest.mark.parametrize("call", CALLS)
def test_each_backend_takes_each_call_as_the_contract_states_it(backend, call):
    expected = inspect.signature(getattr(Lab, call))
    assert inspect.signature(getattr(backend, call)) == expected, f"{backend.__name__}.{call}"


@pytest.mark.parametrize("backend", [LocalLab, DockerLab])
def test_each_backend_has_the_servers_property(backend):
    assert isinstance(inspect.getattr_static(backend, "servers"), property)


def test_the_local_lab_made_for_a_run_is_a_lab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checkout whose .caslab/ holds the lab's state file
    spec = BalancerSpec("haproxy", resolve("none-all"), local_farm(2), Vip(), preset="none-all")
    record = LabRecord.create(tmp_path / "run-1", "run", "local")
    lab = make_lab(spec, tmp_path, None, record)  # makes no process until start()
    assert isinstance(lab, LocalLab) and isinstance(lab, Lab)
    assert (lab.spec, lab.run_dir, lab.servers) == (spec, tmp_path, spec.servers)
    assert lab.balancer.name == "haproxy"
    assert lab.run_id == record.run_id and record.run_id.startswith("run-1-")
