"""Evaluation metrics of the SAAN paper, on the 0-10 score scale.

- accuracy: binary agreement of ``score > 5`` (strict) between prediction and truth.
- constant_accuracy: the accuracy a constant "<= 5" predictor gets, i.e. the
  fraction of true scores <= 5. On BAID's test split this is already 76.2%
  against SAAN's 76.8%, so accuracy alone says little; reports show both.
- plcc / srcc: Pearson and Spearman correlation, the paper's main metrics (computed here with
  numpy as scipy.stats.pearsonr / spearmanr define them, ties averaged; tests/test_metrics.py
  compares them with scipy: importing scipy.stats costs every training process 0.6 s).
- mse: mean squared error of the scores.

A constant prediction (a collapsed network, common early in training at tiny
learning rates) has no defined correlation (scipy returns NaN and warns). We
report 0.0 instead, "no linear/rank association", which is what such a model
has, and which keeps NaN out of the halving decisions (NaN compares false with
everything, so one NaN would otherwise decide a rung by accident).
"""

from __future__ import annotations

import numpy as np

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


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    # Undefined (fewer than two points or either side constant): 0.0, see module docstring.
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xm, ym = x - x.mean(), y - y.mean()
    value = float(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)))
    return float(np.clip(value, -1.0, 1.0)) if np.isfinite(value) else 0.0


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, a.size])
    group_rank = starts + (counts + 1) / 2.0  # mean of ranks start+1 ... start+count
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, counts)
    return ranks


def plcc(pred, true) -> float:
    return _pearson(*_arrays(pred, true))


def srcc(pred, true) -> float:
    pred, true = _arrays(pred, true)
    return _pearson(_average_ranks(pred), _average_ranks(true))


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
