"""Halving arithmetic: where the rungs sit and who survives them.

Pure functions, no storage: the policies (hpo/scheduling/sync_halving.py) use
them, the tests check them against a hand computation.

Algorithm (docs/design.md, "Successive halving, exactly"). ``n`` configurations
enter rung 0. Rung ``k`` (k = 0 ... rungs-1) compares every trial that entered
it after ``rung_epochs(...)[k]`` cumulative epochs of training:

* ``cumulative`` schedule: iteration k trains survivors ``min_epochs * eta**k``
  *more* epochs, so the boundaries are ``min_epochs * (eta**(k+1) - 1)/(eta - 1)``:
  1, 3, 7, 15, 31 for eta 2, 5 rungs, min 1 (the published reproduction).
* ``geometric`` schedule: boundaries ``min_epochs * eta**k``: 1, 2, 4, 8, 16
  (Optuna's / ASHA's convention).

At a rung that is not the last, the best ``max(1, n // eta)`` trials survive
(ties broken by the lower trial number, so the result depends only on the
reported values), the rest are pruned at that epoch. Trials in the last rung
have trained the full budget and all complete.

Non-finite objectives (NaN, +-inf, or None as stored: a diverged model's SRCC
is undefined) rank last at their rung whatever the direction, so they are
pruned first; at the last rung they are pruned rather than completed, so a
non-finite value never wins while a finite one exists. Trials that FAILED are
not in a rung's cohort: the rung is decided over the rest. For 16 trials, eta 2, 5
cumulative rungs: 16*1 + 8*2 + 4*4 + 2*8 + 1*16 = 80 epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

SCHEDULES = ("cumulative", "geometric")


def rung_epochs(schedule: str, eta: int, rungs: int, min_epochs: int) -> list[int]:
    """Cumulative epoch at which each rung compares its trials."""
    if schedule == "cumulative":
        if eta == 1:
            return [min_epochs * (k + 1) for k in range(rungs)]
        return [min_epochs * (eta ** (k + 1) - 1) // (eta - 1) for k in range(rungs)]
    if schedule == "geometric":
        return [min_epochs * eta**k for k in range(rungs)]
    raise ValueError(f"unknown schedule {schedule!r}")


def survivors_count(n: int, eta: int) -> int:
    """How many of ``n`` compared trials go on to the next rung."""
    return max(1, n // eta) if n else 0


def rung_sizes(n_trials: int, eta: int, rungs: int) -> list[int]:
    sizes = []
    n = n_trials
    for _ in range(rungs):
        sizes.append(n)
        n = survivors_count(n, eta)
    return sizes


def planned_epochs(n_trials: int, eta: int, epochs: Sequence[int]) -> int:
    """Epochs a synchronous-halving study spends in all (80 for the blog grid)."""
    total, previous = 0, 0
    for size, boundary in zip(rung_sizes(n_trials, eta, len(epochs)), epochs):
        total += size * (boundary - previous)
        previous = boundary
    return total


@dataclass(frozen=True)
class RungDecision:
    """The outcome of one rung: values compared and who goes on."""

    rung: int
    epoch: int
    values: dict[int, float]  # trial number -> value at ``epoch``
    survivors: tuple[int, ...]  # best first
    pruned: tuple[int, ...]
    last: bool  # survivors of the last rung complete rather than continue


def is_finite(value: float | None) -> bool:
    """A comparable objective: not None (stored non-finite), NaN or infinite."""
    return value is not None and math.isfinite(value)


def rank(values: Mapping[int, float | None], direction: str) -> list[int]:
    """Trial numbers best first; non-finite values last; ties by trial number."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(number: int) -> tuple[int, float, int]:
        value = values[number]
        if not is_finite(value):
            return (1, 0.0, number)
        return (0, sign * value, number)

    return sorted(values, key=key)


def decide_rung(rung: int, epoch: int, values: Mapping[int, float | None], eta: int,
                direction: str, last: bool) -> RungDecision:
    ordered = rank(values, direction)
    if last:
        keep = sum(is_finite(values[n]) for n in ordered)
    else:
        keep = survivors_count(len(ordered), eta)
    return RungDecision(
        rung=rung,
        epoch=epoch,
        values=dict(values),
        survivors=tuple(ordered[:keep]),
        pruned=tuple(sorted(ordered[keep:])),
        last=last,
    )


def rungs_within(schedule: str, eta: int, rungs: int, min_epochs: int, epochs: int) -> int:
    """How many of the first ``rungs`` rungs end by ``epochs`` (at least one)."""
    within = 1
    while within < rungs and rung_epochs(schedule, eta, within + 1, min_epochs)[-1] <= epochs:
        within += 1
    return within
