"""hpo/scheduling/gangs.py: who joins which trial, as a pure function (no database)."""

from __future__ import annotations

import doctest

from hpo.scheduling import gangs
from hpo.scheduling.gangs import GangLimits, Idle, Running, plan_gangs

LIMITS = GangLimits(min_rank_batch=8, max_gang=4)


def idle(*names: str, kind: str = "cuda") -> list[Idle]:
    return [Idle(n, kind) for n in names]


def test_the_module_examples_run():
    assert doctest.testmod(gangs).failed == 0


def test_idle_workers_balance_the_narrow_rungs_trials_by_rank_count_then_number():
    running = [Running(5, "a", "cuda", 64), Running(2, "b", "cuda", 64)]
    plan = plan_gangs(running, idle("c", "d", "e"), 0, LIMITS)
    assert plan == {2: ("b", "c", "e"), 5: ("a", "d")}


def test_limits_max_gang_and_min_rank_batch():
    plan = plan_gangs([Running(0, "a", "cuda", 64)], idle(*"bcdefg"), 0, LIMITS)
    assert plan == {0: ("a", "b", "c", "d")}  # max_gang 4
    plan = plan_gangs([Running(0, "a", "cuda", 16)], idle(*"bcd"), 0, LIMITS)
    assert plan == {0: ("a", "b")}  # 16 / 8 = 2 ranks
    plan = plan_gangs([Running(0, "a", "cuda", 12)], idle("b"), 0, LIMITS)
    assert plan == {0: ("a",)}  # 12 images: one rank of at least 8
    assert GangLimits(16, 8).ranks_for(8) == 1 and GangLimits(8, 8).ranks_for(64) == 8


def test_no_gang_across_device_kinds():
    running = [Running(0, "gpu0", "cuda", 64), Running(1, "cpu0", "cpu", 64)]
    plan = plan_gangs(running, idle("gpu1") + idle("cpu1", "cpu2", kind="cpu"), 0, LIMITS)
    assert plan == {0: ("gpu0", "gpu1"), 1: ("cpu0", "cpu1", "cpu2")}
    assert plan_gangs([Running(0, "gpu0", "cuda", 64)], idle("cpu1", kind="cpu"), 0, LIMITS) == {0: ("gpu0",)}


def test_work_that_could_start_shrinks_gangs_and_joins_nothing():
    running = [Running(0, "a", "cuda", 64, ("a", "b", "c")), Running(1, "d", "cuda", 64, ("d", "e"))]
    # three trials to hand out and one idle worker to claim one: the widest gang gives back
    # its latest joiner first, then a tie between two 2-rank gangs goes to the lower number
    assert plan_gangs(running, idle("f"), 3, LIMITS) == {0: ("a",), 1: ("d", "e")}
    # two: the idle worker claims one, the widest gang gives back one member for the other
    assert plan_gangs(running, idle("f"), 2, LIMITS) == {0: ("a", "b"), 1: ("d", "e")}
    # one, and an idle worker for it: nobody is given back, nobody joins
    assert plan_gangs(running, idle("f"), 1, LIMITS) == {0: ("a", "b", "c"), 1: ("d", "e")}
    # more claimable trials than members: every gang down to its holder, nothing else
    assert plan_gangs(running, idle("f"), 9, LIMITS) == {0: ("a",), 1: ("d",)}
    # nothing claimable: the gangs stay and the idle worker joins the smaller one
    assert plan_gangs(running, idle("f"), 0, LIMITS) == {0: ("a", "b", "c"), 1: ("d", "e", "f")}


def test_the_plan_depends_only_on_its_inputs_not_their_order():
    running = [Running(n, f"h{n}", "cuda", 32) for n in range(3)]
    offers = idle("x", "y", "z", "w")
    assert plan_gangs(running, offers, 0, LIMITS) == plan_gangs(running[::-1], offers[::-1], 0, LIMITS)


def test_idle_workers_beyond_the_claimable_trials_join_leaving_those_trials_their_share():
    # A rung of four trials starts on eight workers: the first claimer regroups while three
    # trials still wait and six others are idle. Three stay free to claim them; of the three
    # beyond, the claimer gets one and the waiting trials' share (one each) stays free.
    limits = GangLimits(min_rank_batch=1, max_gang=8)
    first = [Running(6, "a", "cuda", 16)]
    assert plan_gangs(first, idle(*"bcdefg"), 3, limits) == {6: ("a", "b")}
    # The last claimer, with the others at two ranks, takes the two left for it.
    running = [Running(6, "a", "cuda", 16, ("a", "b")), Running(8, "c", "cuda", 16, ("c", "d")),
               Running(12, "e", "cuda", 16, ("e", "f")), Running(14, "g", "cuda", 16)]
    assert plan_gangs(running, idle("h"), 0, limits)[14] == ("g", "h")
    # A final rung of two trials: half of the seven idle workers' spare goes to the first.
    assert plan_gangs(first, idle(*"bcdefgh"), 1, limits) == {6: ("a", "b", "d", "f")}
    # Spare workers of another device kind stay free; the claimable trials' share is
    # bounded by max_gang.
    assert plan_gangs(first, idle("b", "c", kind="cpu"), 1, limits) == {6: ("a",)}
    narrow = GangLimits(min_rank_batch=1, max_gang=2)
    assert plan_gangs(first, idle(*"bcdef"), 1, narrow) == {6: ("a", "b")}
