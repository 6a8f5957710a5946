"""Evaluation metrics of the SAAN paper, on the 0-10 score scale.

- accuracy: binary agreement of ``score > 5`` (strict) between prediction and truth.
- constant_accuracy: the accuracy a constant "<= 5" predictor gets, i.e. the
  fraction of true scores <= 5. On BAID's test split this is already 76.2%
  against SAAN's 76.8%, so accuracy alone says little; reports show both.
- plcc / srcc: Pearson and Spearman correlation (scipy.stats), the paper's main metrics.
- mse: mean squared error of the scores.

A constant prediction (a collapsed network, common early in training at tiny
learning rates) has no defined correlation: scipy returns NaN and warns. We
report 0.0 instead, "no linear/rank association", which is what such a model
has, and which keeps NaN out of the halving decisions (NaN compares false with
everything, so one NaN would otherwise decide a rung by accident).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

THRESHOLD = 5.0


def _arrays(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.size} predictions for {true.size} true scores")
    return pred, true


def accuracy(pred, true) -> float:
    pred, true = _arrays(pred, true)
    return float(np.mean((pred > THRESHOLD) == (true > THRESHOLD))) if true.size else 0.0


def constant_accuracy(true) -> float:
    """Accuracy of always predicting "<= 5": the fraction of true scores <= 5."""
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    return float(np.mean(true <= THRESHOLD)) if true.size else 0.0


def _correlation(fn, pred: np.ndarray, true: np.ndarray) -> float:
    # Undefined (fewer than two points or either side constant): 0.0, see module docstring.
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(pred, true)[0])
    return value if np.isfinite(value) else 0.0


def plcc(pred, true) -> float:
    return _correlation(stats.pearsonr, *_arrays(pred, true))


def srcc(pred, true) -> float:
    return _correlation(stats.spearmanr, *_arrays(pred, true))


def mse(pred, true) -> float:
    pred, true = _arrays(pred, true)
    return float(np.mean((pred - true) ** 2)) if true.size else 0.0


def compute_metrics(pred_scores, true_scores) -> dict[str, float]:
    """All metrics for predictions and truths on the 0-10 scale."""
    pred, true = _arrays(pred_scores, true_scores)
    return {
        "accuracy": accuracy(pred, true),
        "constant_accuracy": constant_accuracy(true),
        "plcc": plcc(pred, true),
        "srcc": srcc(pred, true),
        "mse": mse(pred, true),
    }
