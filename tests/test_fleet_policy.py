"""The claim rule across studies (hpo/scheduling/fleet.py), without a database."""

from __future__ import annotations

import heapq

from hpo.scheduling.fleet import StudyLoad, claim_order


def load(name, priority=0, planned=100, committed=0, next_trial=0):
    return StudyLoad(name, priority, planned, committed, next_trial)


def test_higher_priority_first_even_when_far_ahead_of_its_share():
    order = claim_order([load("low", committed=0), load("high", priority=2, committed=90)])
    assert order == ["high", "low"]


def test_among_equal_priorities_the_study_furthest_behind_its_share_first():
    # 10 of 20 planned is further along than 30 of 100: shares are proportional to plans.
    order = claim_order([load("small", planned=20, committed=10),
                         load("big", planned=100, committed=30),
                         load("fresh", planned=50, committed=0)])
    assert order == ["fresh", "big", "small"]


def test_studies_with_nothing_claimable_are_left_out():
    order = claim_order([load("busy", next_trial=None), load("ready", committed=99)])
    assert order == ["ready"]
    assert claim_order([load("busy", next_trial=None)]) == []


def test_ties_break_by_lowest_trial_number_then_name():
    order = claim_order([load("b", next_trial=5), load("c", next_trial=2), load("a", next_trial=5)])
    assert order == ["c", "a", "b"]


def test_negative_priority_comes_after_the_default():
    assert claim_order([load("later", priority=-1), load("default")]) == ["default", "later"]


# ---- the rule driving a simulated fleet: epoch slots, no database -------------------------
SHAPES = {  # study -> rungs as (trials, epochs per stint); a rung waits for its whole cohort
    "blog-grid": [(16, 1), (8, 2), (4, 4), (2, 8), (1, 16)],
    "variants": [(12, 44)],
    "ablation": [(3, 44)],
}


def simulate(workers: int, shapes: dict) -> tuple[int, dict[str, list[int]]]:
    """Makespan in epoch slots and, per study, the slot each rung finished."""
    planned = {k: sum(n * e for n, e in r) for k, r in shapes.items()}
    state = {k: {"rung": 0, "waiting": list(range(r[0][0])), "done": 0, "committed": 0,
                 "finished": []} for k, r in shapes.items()}
    now, free, events = 0, workers, []
    while True:
        while free:
            loads = [StudyLoad(k, 0, planned[k], s["committed"],
                               min(s["waiting"]) if s["waiting"] else None)
                     for k, s in state.items()]
            order = claim_order(loads)
            if not order:
                break
            s = state[order[0]]
            number, stint = s["waiting"].pop(0), shapes[order[0]][s["rung"]][1]
            s["committed"] += stint
            free -= 1
            heapq.heappush(events, (now + stint, order[0], number))
        if not events:
            return now, {k: s["finished"] for k, s in state.items()}
        now, name, _ = heapq.heappop(events)
        free += 1
        s = state[name]
        s["done"] += 1
        if s["done"] == shapes[name][s["rung"]][0]:
            s["finished"].append(now)
            if s["rung"] + 1 < len(shapes[name]):
                s["rung"] += 1
                s["done"] = 0
                s["waiting"] = list(range(shapes[name][s["rung"]][0]))


def test_a_shared_pool_never_idles_while_another_study_has_work():
    total = sum(n * e for r in SHAPES.values() for n, e in r)
    alone = {w: sum(simulate(w, {k: v})[0] for k, v in SHAPES.items()) for w in (1, 4, 8)}
    for workers in (1, 4, 8):
        together, _ = simulate(workers, SHAPES)
        assert together >= total / workers  # never better than perfect packing
        if workers == 1:
            assert together == total == alone[1]
        else:  # one pool finishes sooner than the studies one after another
            assert together < alone[workers]
