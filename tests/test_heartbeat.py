"""An ActiveSync device's heartbeat adapts as Microsoft's Direct Push algorithm does (loadgen.heartbeat)."""

from __future__ import annotations

from loadgen.heartbeat import CAP_S, FLOOR_S, START_S, STEP_S, Heartbeat


def asked(heartbeat: Heartbeat, endings: str) -> list[int]:
    """The heartbeat of each Ping, each ending as the letter says: a(nswered), d(ied), or a number
    (Status 5 with that limit)."""
    out = []
    for ending in endings.split():
        out.append(heartbeat.seconds)
        if ending == "a":
            heartbeat.answered()
        elif ending == "d":
            heartbeat.died()
        else:
            heartbeat.limited(int(ending))
    return out


def test_the_defaults_are_the_chosen_figures():
    assert (START_S, STEP_S, CAP_S, FLOOR_S) == (540, 300, 1680, 60)


def test_it_starts_near_nine_minutes_and_grows_a_step_per_answer_up_to_the_cap():
    assert asked(Heartbeat(), "a a a a a a") == [540, 840, 1140, 1440, 1680, 1680]


def test_a_ping_cut_at_a_raised_heartbeat_goes_back_to_the_one_before_and_stays():
    # Behind a 20-minute idle timeout: 1440 s dies, 1140 s worked, so the device keeps 1140 s.
    assert asked(Heartbeat(), "a a a d a a a") == [540, 840, 1140, 1440, 1140, 1140, 1140]


def test_a_ping_cut_at_a_heartbeat_that_worked_before_drops_to_the_floor_and_searches_up_again():
    # Behind a 5-minute idle timeout: 540 s dies at once; from the floor, 360 s dies, 60 s stays, until
    # a Ping at 60 s dies too: then the search starts again from the floor.
    assert asked(Heartbeat(), "d a d a a d a a") == [540, 60, 360, 60, 60, 60, 60, 360]


def test_status_5_sets_the_servers_limit_as_the_new_cap_or_floor():
    capped = Heartbeat()
    assert asked(capped, "a a a 1200 a a") == [540, 840, 1140, 1440, 1200, 1200]
    floored = Heartbeat(start_s=120)
    assert asked(floored, "300 d a") == [120, 300, 300]  # the server's minimum is the device's floor now
