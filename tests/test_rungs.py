"""The pure halving arithmetic against hand computations."""

import math

from hpo.scheduling.rungs import decide_rung, planned_epochs, rung_epochs, rung_sizes


def test_cumulative_boundaries_are_the_blogs():
    assert rung_epochs("cumulative", 2, 5, 1) == [1, 3, 7, 15, 31]
    assert rung_epochs("cumulative", 3, 3, 2) == [2, 8, 26]  # 2*(3^k+1 - 1)/2


def test_geometric_boundaries_are_optunas():
    assert rung_epochs("geometric", 2, 5, 1) == [1, 2, 4, 8, 16]
    assert rung_epochs("geometric", 3, 3, 2) == [2, 6, 18]


def test_blog_grid_budget_is_80_of_496():
    epochs = rung_epochs("cumulative", 2, 5, 1)
    assert rung_sizes(16, 2, 5) == [16, 8, 4, 2, 1]
    assert planned_epochs(16, 2, epochs) == 16 + 8 * 2 + 4 * 4 + 2 * 8 + 1 * 16 == 80
    assert 16 * epochs[-1] == 496
    # geometric: 16*1 + 8*1 + 4*2 + 2*4 + 1*8
    assert planned_epochs(16, 2, rung_epochs("geometric", 2, 5, 1)) == 48


def test_decision_keeps_best_half_and_breaks_ties_by_trial_number():
    values = {0: 0.5, 1: 0.9, 2: 0.5, 3: 0.1, 4: 0.5, 5: float("nan")}
    d = decide_rung(0, 1, values, eta=2, direction="maximize", last=False)
    assert d.survivors == (1, 0, 2)
    assert d.pruned == (3, 4, 5)
    d = decide_rung(0, 1, values, eta=2, direction="minimize", last=False)
    assert d.survivors == (3, 0, 2)  # NaN is worst either way
    assert 5 in d.pruned


def test_last_rung_completes_everyone_and_single_trials_go_on():
    d = decide_rung(4, 31, {7: 0.3, 2: 0.4}, eta=2, direction="maximize", last=True)
    assert d.survivors == (2, 7) and d.pruned == ()
    d = decide_rung(2, 7, {9: math.pi}, eta=4, direction="maximize", last=False)
    assert d.survivors == (9,)
