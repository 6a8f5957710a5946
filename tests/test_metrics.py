"""model/metrics.py against scipy and hand computation on fixed arrays."""

import math

import numpy as np
from scipy import stats

from model.metrics import accuracy, compute_metrics, constant_accuracy, mse, plcc, srcc

PRED = np.array([4.0, 6.0, 5.0, 7.5, 2.0, 5.01])
TRUE = np.array([3.0, 5.5, 6.0, 8.0, 5.0, 4.0])


def test_accuracy_is_strict_greater_than_five_agreement():
    # pred > 5: F T F T F T ; true > 5: F T T T F F -> agree on 0,1,3,4 = 4/6
    assert accuracy(PRED, TRUE) == 4 / 6
    # a score of exactly 5 counts as "not > 5" on both sides
    assert accuracy([5.0], [5.0]) == 1.0
    assert accuracy([5.0], [5.0001]) == 0.0


def test_constant_accuracy_is_fraction_of_truths_at_most_five():
    assert constant_accuracy(TRUE) == 3 / 6
    # and equals the accuracy of a constant "<= 5" predictor
    assert constant_accuracy(TRUE) == accuracy(np.full_like(TRUE, 3.0), TRUE)


def test_correlations_and_mse_match_scipy_and_hand():
    assert math.isclose(plcc(PRED, TRUE), stats.pearsonr(PRED, TRUE)[0], rel_tol=1e-12)
    assert math.isclose(srcc(PRED, TRUE), stats.spearmanr(PRED, TRUE)[0], rel_tol=1e-12)
    assert math.isclose(mse(PRED, TRUE), float(np.mean((PRED - TRUE) ** 2)), rel_tol=1e-12)
    # hand: ranks of PRED 2,5,3,6,1,4 vs TRUE 1,4,5,6,3,2 -> d^2 = 1+1+4+0+4+4 = 14
    assert math.isclose(srcc(PRED, TRUE), 1 - 6 * 14 / (6 * 35), rel_tol=1e-12)


def test_correlations_equal_scipy_on_random_scores_with_ties():
    """numpy's plcc/srcc (no scipy import in training processes) against scipy's definitions,
    on scores rounded so that ties occur on both sides, as in BAID's and a collapsing net's."""
    rng = np.random.default_rng(7)
    for size in (2, 3, 17, 500):
        for decimals in (0, 1, 6):
            pred = np.round(rng.normal(5, 2, size), decimals)
            true = np.round(0.5 * pred + rng.normal(5, 1, size), decimals)
            if np.ptp(pred) == 0 or np.ptp(true) == 0:
                continue
            assert math.isclose(plcc(pred, true), stats.pearsonr(pred, true)[0], rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(srcc(pred, true), stats.spearmanr(pred, true)[0], rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(srcc([1, 2, 3], [3, 2, 1]), -1.0) and math.isclose(plcc([1, 2, 3], [2, 4, 6]), 1.0)


def test_compute_metrics_keys_and_values():
    m = compute_metrics(PRED, TRUE)
    assert set(m) == {"accuracy", "constant_accuracy", "plcc", "srcc", "mse"}
    assert m["accuracy"] == accuracy(PRED, TRUE)
    assert all(isinstance(v, float) for v in m.values())


def test_constant_prediction_gives_zero_correlation_not_nan():
    m = compute_metrics(np.full(5, 4.2), [1, 2, 3, 4, 9])
    assert m["plcc"] == 0.0 and m["srcc"] == 0.0
    assert m["accuracy"] == 0.8 and m["constant_accuracy"] == 0.8
    assert compute_metrics([3.0], [4.0])["srcc"] == 0.0
