"""The scheduling policies as pure functions: no database, no Optuna, no worker."""

from __future__ import annotations

import doctest
import math
import random
from types import SimpleNamespace

import pytest

from hpo.scheduling import full_grid, optuna_pruned, sync_halving
from hpo.scheduling.full_grid import FullGrid
from hpo.scheduling.optuna_pruned import OptunaPruned
from hpo.scheduling.policies import POLICIES, policy_for
from hpo.scheduling.policy import (COMPLETE, CONTINUE, PAUSE, PRUNE, RungMember,
                                   rungs_from_reports)
from hpo.scheduling.rungs import RungDecision, rung_sizes
from hpo.scheduling.spec import SCHEDULER_KINDS
from hpo.scheduling.sync_halving import SyncHalving


def halving(eta=2, rungs=5, min_epochs=1, schedule="cumulative", direction="maximize"):
    return SyncHalving("sync-halving", eta, rungs, min_epochs, schedule, direction)


def parked(values: dict[int, float], epoch: int) -> list[RungMember]:
    return [RungMember(n, v, epochs_done=epoch, paused=True) for n, v in values.items()]


def drive(policy: SyncHalving, table: list[list[float]]):
    """Run a whole synchronous-halving study in memory: every trial trains to its
    target, parks, and each rung is decided when its cohort is complete."""
    boundaries = policy.boundaries
    target = {n: policy.first_target() for n in range(len(table))}
    rung_of = {n: 0 for n in target}
    done = {n: 0 for n in target}
    spent, verdicts, finished = 0, [], []
    for rung in range(len(boundaries)):
        cohort = sorted(n for n in target if rung_of[n] == rung)
        for n in cohort:
            spent += target[n] - done[n]
            done[n] = target[n]
            assert policy.at_target() == PAUSE
        waiting = [RungMember(n, table[n][done[n] - 1], done[n], True) for n in cohort]
        assert policy.decide_rung(rung, waiting[:-1] + [
            RungMember(cohort[-1], None, done[cohort[-1]] - 1, False)]) is None  # one still training
        verdict = policy.decide_rung(rung, waiting)
        verdicts.append(verdict)
        for n in verdict.prune:
            del target[n]
        for n in verdict.promote:
            rung_of[n], target[n] = verdict.next_rung, verdict.next_target
        finished += verdict.complete
    return verdicts, spent, finished


# ---- synchronous halving: one rung ----------------------------------------------------------
def test_ties_break_by_trial_number_and_nan_ranks_last():
    values = {0: 0.5, 1: 0.9, 2: 0.5, 3: 0.1, 4: 0.5, 5: float("nan")}
    verdict = halving().decide_rung(0, parked(values, 1))
    assert verdict.promote == (1, 0, 2) and verdict.prune == (3, 4, 5) and verdict.complete == ()
    assert (verdict.next_rung, verdict.next_target) == (1, 3)
    assert verdict.decision.values == values and not verdict.decision.last


def test_minimize_keeps_the_lowest():
    values = {0: 0.5, 1: 0.9, 2: 0.5, 3: 0.1, 4: 0.5, 5: float("nan")}
    verdict = halving(direction="minimize").decide_rung(0, parked(values, 1))
    assert verdict.promote == (3, 0, 2)
    assert 5 in verdict.prune  # NaN is worst either way


def test_eta_3_keeps_a_third_and_sends_them_to_the_next_boundary():
    policy = halving(eta=3, rungs=3, min_epochs=2)
    assert policy.boundaries == (2, 8, 26)
    values = {n: 0.1 * n for n in range(9)}
    verdict = policy.decide_rung(0, parked(values, 2))
    assert verdict.promote == (8, 7, 6) and verdict.prune == tuple(range(6))
    assert (verdict.next_rung, verdict.next_target) == (1, 8)


def test_the_last_rung_completes_everyone():
    policy = halving(rungs=3)
    verdict = policy.decide_rung(2, parked({7: 0.3, 2: 0.4}, 7))
    assert verdict.complete == (2, 7) and verdict.promote == () and verdict.prune == ()
    assert verdict.next_rung is None and verdict.decision.last


@pytest.mark.parametrize("cohort", [
    [],
    [RungMember(0, 0.5, 1, True), RungMember(1, None, 0, False)],  # one still training
    [RungMember(0, 0.5, 1, True), RungMember(1, 0.4, 0, True)],  # parked at another epoch
    [RungMember(0, 0.5, 1, True), RungMember(1, 0.4, 1, False)],  # there, not yet parked
])
def test_an_incomplete_cohort_is_not_decided(cohort):
    assert halving().decide_rung(0, cohort) is None


# ---- synchronous halving: a whole study in memory -------------------------------------------
@pytest.mark.parametrize("n, eta, rungs, schedule", [
    (16, 2, 5, "cumulative"),   # the blog grid: 80 epochs
    (10, 2, 4, "cumulative"),   # not a power of eta: 10, 5, 2, 1
    (7, 3, 3, "geometric"),     # 7, 2, 1
    (27, 3, 3, "cumulative"),
    (4, 2, 5, "cumulative"),    # more rungs than the grid can halve: 4, 2, 1, 1, 1
    (1, 2, 3, "geometric"),     # a grid of one
])
def test_a_whole_study_spends_the_plan_and_halves_as_planned(n, eta, rungs, schedule):
    policy = halving(eta=eta, rungs=rungs, schedule=schedule)
    rng = random.Random(n * 100 + eta)
    table = [[rng.choice([0.1, 0.2, rng.random()]) for _ in range(policy.final_epoch)]
             for _ in range(n)]
    verdicts, spent, finished = drive(policy, table)
    assert [len(v.decision.values) for v in verdicts] == rung_sizes(n, eta, rungs)
    assert spent == policy.planned_epochs(n) and policy.plan_is_exact
    # Everyone in the last rung completes; they are the best of the rung before.
    assert sorted(finished) == sorted(verdicts[-1].decision.values)
    assert len(finished) == rung_sizes(n, eta, rungs)[-1]
    if rungs > 1:
        before = verdicts[-2].decision
        ranked = sorted(before.values, key=lambda k: (-before.values[k], k))
        assert sorted(finished) == sorted(ranked[:len(finished)])


def test_more_rungs_than_the_grid_can_halve_carry_the_single_survivor_to_the_end():
    policy = halving(eta=2, rungs=5)
    table = [[0.1 * n] * 31 for n in range(4)]
    verdicts, spent, finished = drive(policy, table)
    assert [v.promote for v in verdicts[:4]] == [(3, 2), (3,), (3,), (3,)]
    assert verdicts[-1].complete == (3,) and finished == [3]
    assert spent == 4 * 1 + 2 * 2 + 1 * 4 + 1 * 8 + 1 * 16 == 36


def test_blog_grid_is_80_epochs_and_geometric_48():
    assert halving().planned_epochs(16) == 80
    assert halving(schedule="geometric").planned_epochs(16) == 48


# ---- the kinds that never pause ----------------------------------------------------------------
def test_optuna_pruned_asks_the_pruner_except_at_the_final_epoch():
    asha = OptunaPruned.asha(eta=2, rungs=5, min_epochs=1, schedule="geometric")
    asked = []

    def pruner():
        asked.append(True)
        return True

    assert asha.first_target() == asha.final_epoch == 16
    assert asha.after_epoch(4, pruner) == PRUNE and asked
    asked.clear()
    assert asha.after_epoch(16, pruner) == CONTINUE and not asked  # a full trial completes
    assert asha.after_epoch(3, lambda: False) == CONTINUE
    assert asha.at_target() == COMPLETE and not asha.pauses_at_rungs
    assert asha.decide_rung(0, parked({0: 1.0}, 1)) is None
    assert asha.planned_epochs(16) == 16 * 16 and not asha.plan_is_exact  # an upper bound


def test_optuna_pruner_settings():
    asha = OptunaPruned.asha(eta=3, rungs=4, min_epochs=2, schedule="cumulative")
    assert asha.optuna_pruner() == ("SuccessiveHalvingPruner", {
        "min_resource": 2, "reduction_factor": 3, "min_early_stopping_rate": 0})
    band = OptunaPruned.hyperband(eta=2, rungs=5, min_epochs=1, schedule="cumulative")
    assert band.optuna_pruner() == ("HyperbandPruner", {
        "min_resource": 1, "max_resource": 31, "reduction_factor": 2})
    assert halving().optuna_pruner() == FullGrid(5).optuna_pruner() == ("NopPruner", {})


def test_full_grid_trains_everyone_to_the_end():
    grid = FullGrid(epochs=44)
    assert grid.boundaries == (44,) and grid.first_target() == 44
    assert grid.after_epoch(3, lambda: pytest.fail("the full grid never asks a pruner")) == CONTINUE
    assert grid.at_target() == COMPLETE
    assert grid.planned_epochs(12) == 528
    assert grid.describe() == "none (every configuration trains 44 epochs)"


def test_every_kind_has_a_policy_and_none_falls_back_to_the_trainer_epochs():
    assert set(POLICIES) == set(SCHEDULER_KINDS) == {"sync-halving", "asha", "hyperband", "none",
                                                  "hyperband-sync"}
    settings = SimpleNamespace(kind="none", eta=2, rungs=5, min_epochs=1, schedule="cumulative", epochs=0)
    assert policy_for(settings, trainer_epochs=12).boundaries == (12,)
    for kind in ("sync-halving", "asha", "hyperband"):
        policy = policy_for(SimpleNamespace(**{**vars(settings), "kind": kind}), 12, "minimize")
        assert policy.kind == kind and policy.boundaries == (1, 3, 7, 15, 31)
    assert policy_for(SimpleNamespace(**{**vars(settings), "kind": "sync-halving"}), 12,
                      "minimize").direction == "minimize"


def test_within_shrinks_a_study_to_a_few_epochs():
    table = {"kind": "sync-halving", "eta": 2, "rungs": 5, "min_epochs": 1,
             "schedule": "cumulative", "epochs": 0}
    assert halving().within(table, 3)["rungs"] == 2  # boundaries 1, 3
    assert halving().within(table, 1)["rungs"] == 1
    assert halving().within(table, 100)["rungs"] == 5
    assert FullGrid(44).within({**table, "kind": "none"}, 3) == {**table, "kind": "none", "epochs": 3}


# ---- reading a study back ------------------------------------------------------------------
def test_rungs_read_off_reported_values():
    reported = {0: {1: 0.1, 2: 0.2}, 1: {1: 0.3, 2: 0.4, 3: 0.5, 4: 0.6}, 2: {1: 0.2}}
    history = rungs_from_reports([1, 2, 4], reported)
    assert [(r.rung, r.epoch, sorted(r.values), r.survivors) for r in history] == [
        (0, 1, [0, 1, 2], (0, 1)), (1, 2, [0, 1], (1,)), (2, 4, [1], (1,))]
    asha = OptunaPruned.asha(eta=2, rungs=3, min_epochs=1, schedule="geometric")
    ladder = asha.ladder(history, reported, {0: "pruned", 1: "complete", 2: "running"})
    assert [(r.rung, r.decided, [(e.trial, e.outcome) for e in r.entries]) for r in ladder] == [
        (0, False, [(0, "survived"), (1, "survived"), (2, "pending")]),
        (1, True, [(0, "pruned"), (1, "survived")]),
        (2, True, [(1, "finished")])]


def test_sync_halving_reads_its_stored_verdicts_and_shows_cohorts_filling_up():
    policy = halving(rungs=3)
    stored = [RungDecision(0, 1, {0: 0.1, 1: 0.3}, survivors=(1,), pruned=(0,), last=False)]
    reported = {0: {1: 0.1}, 1: {1: 0.3, 2: 0.2, 3: 0.35}}
    assert policy.history(stored, reported) == stored  # never re-derived
    ladder = policy.ladder(stored, reported, {0: "pruned", 1: "running"})
    assert [(r.rung, r.epoch, r.decided, [(e.trial, e.outcome) for e in r.entries])
            for r in ladder] == [(0, 1, True, [(0, "pruned"), (1, "survived")]),
                                 (1, 3, False, [(1, "pending")])]


@pytest.mark.parametrize("module", [sync_halving, optuna_pruned, full_grid])
def test_the_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_nan_values_are_compared_not_dropped():
    verdict = halving().decide_rung(0, parked({0: math.nan, 1: math.nan}, 1))
    assert verdict.promote == (0,) and verdict.prune == (1,)
