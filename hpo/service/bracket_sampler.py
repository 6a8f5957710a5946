"""A bracket's configurations, drawn by Optuna's own sampler from the results before it.

BOHB's idea (Falkner et al., ICML 2018) with Optuna's samplers instead of a
hand-written density model: when bracket ``j`` of a ``hyperband-sync`` study
opens, the trials of the brackets before it are what the model may learn from.
Each is handed to a fresh in-memory Optuna study as a finished trial whose value
is its reported value at one budget -- the largest budget level at which at
least ``len(space) + 2`` trials reported a finite value (BOHB fits its model at
the largest budget with enough points; hpo.scheduling.hyperband_sync.budget_for_model)
-- and the sampler is asked for the bracket's ``n`` configurations.

Deterministic, so that a study replays: the sampler is seeded with
``(seed, j)`` and the results are added in trial-number order, so the same
stored results give the same configurations on any machine, whichever worker
opens the bracket, and a crashed opener's successor draws the same again. With
``sampler = "random"`` no result is used (``RandomSampler``, seeded the same
way), so every bracket can open at launch. Only memory is touched here: the
study's storage is written by hpo/service/brackets.py.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.trial import TrialState

from hpo.scheduling.hyperband_sync import Bracket, budget_for_model
from hpo.scheduling.space import Dimension, Space

# a finished trial of an earlier bracket: its params and its reported value by epoch
Result = tuple[Mapping[str, Any], Mapping[int, float]]


def optuna_distribution(dim: Dimension) -> BaseDistribution:
    """What Optuna's tools and the dashboard see of one [space] entry."""
    if dim.kind == "choice":
        return CategoricalDistribution(list(dim.choices))
    if dim.kind == "int":
        return IntDistribution(int(dim.low), int(dim.high), step=dim.step or 1)
    return FloatDistribution(dim.low, dim.high, log=dim.kind == "log_uniform")


def optuna_distributions(space: Space) -> dict[str, BaseDistribution]:
    return {key: optuna_distribution(dim) for key, dim in space.items()}


def min_points(space: Space) -> int:
    """Results needed at one budget before the model is fitted there (BOHB: dimensions + 1;
    one more, as TPE splits them into good and bad)."""
    return len(space) + 2


def sampler_seed(seed: int, bracket: int) -> int:
    """One seed per (study seed, bracket): brackets draw independently, studies replay."""
    return (seed * 1_000_003 + bracket) % (2**32)


def make_sampler(name: str, seed: int, space: Space) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # multivariate: one joint density over the space, as BOHB's KDE; the
            # model is used as soon as there are enough results at one budget;
            # constant_liar: a bracket's n draws are asked together, and each one
            # already drawn counts as a bad result, so the next looks elsewhere
            # instead of n near-copies of the same best guess.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                              n_startup_trials=min_points(space))
    raise ValueError(f"unknown sampler {name!r}")


def sample_bracket(space: Space, sampler: str, seed: int, direction: str, bracket: Bracket,
                   levels: Sequence[int], results: Mapping[int, Result]) -> list[dict[str, Any]]:
    """The ``bracket.n`` configurations of ``bracket``, params by space key, in trial order.

    ``results``: trial number -> (params, value by epoch) of the trials before the
    bracket; ``levels``: the study's budget levels (epochs).
    """
    distributions = optuna_distributions(space)
    study = optuna.create_study(direction=direction, sampler=make_sampler(
        sampler, sampler_seed(seed, bracket.index), space))
    if sampler != "random":
        _add_results(study, distributions, levels, results, min_points(space))
    drawn = []
    for _ in range(bracket.n):
        trial = study.ask(distributions)
        drawn.append({key: _plain(trial.params[key]) for key in space})
    return drawn


def _add_results(study: optuna.Study, distributions: dict[str, BaseDistribution],
                 levels: Sequence[int], results: Mapping[int, Result], needed: int) -> None:
    curves = {n: dict(curve) for n, (_, curve) in results.items()}
    budget = budget_for_model(curves, levels, needed)
    if budget is None:
        budget = max((level for level in levels
                      if any(level in c and math.isfinite(c[level]) for c in curves.values())),
                     default=None)
    if budget is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for number in sorted(results):
            params, curve = results[number]
            value = curve.get(budget)
            if value is None or not math.isfinite(value):
                continue  # did not reach the budget, or diverged: nothing to learn there
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=value, params=dict(params),
                distributions=distributions))


def _plain(value: Any) -> Any:
    """Python scalars (JSON and TOML write them as they are)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value

