"""hyperband-sync's bracket arithmetic as pure functions: no database, no Optuna, no worker."""

from __future__ import annotations

import doctest
import math
import random

import pytest

from hpo.scheduling import hyperband_sync
from hpo.scheduling.hyperband_sync import HyperbandSync, bracket_size, budget_for_model
from hpo.scheduling.rungs import planned_epochs
from hpo.scheduling.policy import PAUSE, RungMember


def policy(eta=3, rungs=5, schedule="geometric", brackets=0, direction="maximize"):
    return HyperbandSync("hyperband-sync", eta, rungs, 1, schedule, direction, brackets)


def test_doctests():
    assert doctest.testmod(hyperband_sync).failed == 0


def test_brackets_are_li_et_al_table_for_r81_eta3():
    """Hyperband's paper, Table 1: R = 81, eta = 3: n = 81, 34, 15, 8, 5 at r = 1, 3, 9, 27, 81."""
    p = policy()
    plan = p.brackets()
    assert [b.s for b in plan] == [4, 3, 2, 1, 0]
    assert [b.n for b in plan] == [81, 34, 15, 8, 5]
    assert [b.levels[0] for b in plan] == [1, 3, 9, 27, 81]
    assert [b.sizes(3) for b in plan] == [[81, 27, 9, 3, 1], [34, 11, 3, 1], [15, 5, 1], [8, 2], [5]]
    # n_i = floor(n * eta**-i) of the paper is the same as halving floor(n / eta) each rung
    for b in plan:
        assert b.sizes(3) == [max(1, b.n // 3**i) for i in range(len(b.levels))]


def test_bracket_size_is_exact_integer_ceiling():
    for s_max in range(6):
        for eta in (2, 3, 4):
            for s in range(s_max + 1):
                assert bracket_size(s, s_max, eta) == math.ceil((s_max + 1) * eta**s / (s + 1) - 1e-12)


def test_numbering_is_contiguous_and_rounds_repeat():
    p = policy(eta=2, rungs=3, brackets=7)
    plan = p.brackets()
    assert [b.s for b in plan] == [2, 1, 0, 2, 1, 0, 2]
    trials = [n for b in plan for n in b.trials]
    rungs = [r for b in plan for r in b.rungs]
    assert trials == list(range(p.trial_count())) and rungs == list(range(len(rungs)))
    for b in plan:
        for n in b.trials:
            assert p.bracket_of_trial(n) == b and p.entry(n) == (b.first_rung, b.levels[0])
        for k, r in enumerate(b.rungs):
            assert p.bracket_of_rung(r) == b and p.level_of_rung(r) == 3 - len(b.levels) + k
    with pytest.raises(ValueError):
        p.bracket_of_trial(p.trial_count())


def by_hand(n, eta, levels):
    total, previous, alive = 0, 0, n
    for i, level in enumerate(levels):
        total += alive * (level - previous)
        previous, alive = level, max(1, alive // eta)
    return total


@pytest.mark.parametrize("eta, rungs, schedule, brackets", [
    (2, 5, "geometric", 0), (3, 5, "geometric", 0), (2, 5, "cumulative", 0), (2, 4, "geometric", 9)])
def test_planned_epochs_is_the_sum_of_the_brackets_halving(eta, rungs, schedule, brackets):
    p = policy(eta, rungs, schedule, brackets)
    assert p.planned_epochs() == sum(by_hand(b.n, eta, b.levels) for b in p.brackets())
    assert all(p.bracket_epochs(b) == planned_epochs(b.n, eta, b.levels) for b in p.brackets())


def test_planned_epochs_for_eta3_r81():
    # 81+27*2+9*6+3*18+1*54 = 297; 34*3+11*6+3*18+1*54 = 276; 15*9+5*18+1*54 = 279; 8*27+2*54 = 324; 5*81
    assert policy().planned_epochs() == 297 + 276 + 279 + 324 + 405


def drive(p: HyperbandSync, value):
    """A whole study in memory: every trial trains to its target and parks; each rung is
    decided when its cohort is complete. ``value(trial, epoch)``; returns verdicts and epochs."""
    target, rung_of, done = {}, {}, {}
    for n in range(p.trial_count()):
        rung_of[n], target[n] = p.entry(n)
        done[n] = 0
    spent, verdicts = 0, {}
    for b in p.brackets():
        for r in b.rungs:
            cohort = sorted(n for n in target if rung_of[n] == r)
            for n in cohort:
                spent += target[n] - done[n]
                done[n] = target[n]
                assert p.at_target() == PAUSE
            members = [RungMember(n, value(n, done[n]), done[n], True) for n in cohort]
            assert p.decide_rung(r, members[:-1] + [
                RungMember(cohort[-1], None, done[cohort[-1]] - 1, False)]) is None
            verdict = p.decide_rung(r, members)
            verdicts[r] = verdict
            for n in verdict.prune + verdict.complete:
                del target[n]
            for n in verdict.promote:
                rung_of[n], target[n] = verdict.next_rung, verdict.next_target
    assert not target
    return verdicts, spent


def test_driven_study_spends_exactly_the_plan_and_halves_by_value():
    rng = random.Random(3)
    p = policy(eta=2, rungs=4, brackets=6)
    table = {n: rng.random() for n in range(p.trial_count())}
    verdicts, spent = drive(p, lambda n, e: table[n] * e)
    assert spent == p.planned_epochs()
    for b in p.brackets():
        alive = list(b.trials)
        for k, r in enumerate(b.rungs):
            ordered = sorted(alive, key=lambda n: (-table[n], n))
            keep = len(ordered) if k == len(b.levels) - 1 else max(1, len(ordered) // 2)
            assert list(verdicts[r].decision.survivors) == ordered[:keep]
            assert verdicts[r].decision.epoch == b.levels[k]
            alive = ordered[:keep]
        assert verdicts[b.rungs[-1]].complete == tuple(alive)


def test_model_budget_is_the_largest_level_with_enough_results():
    results = {0: {1: .1, 2: .2, 4: .4}, 1: {1: .3, 2: .1}, 2: {1: .2, 2: float("nan")}, 3: {1: .5}}
    assert budget_for_model(results, (1, 2, 4), 1) == 4
    assert budget_for_model(results, (1, 2, 4), 2) == 2  # the NaN does not count
    assert budget_for_model(results, (1, 2, 4), 4) == 1
    assert budget_for_model(results, (1, 2, 4), 5) is None
