"""Opening a ``hyperband-sync`` study's brackets: draw, create in Optuna, make claimable.

A space study has no grid to create at launch. Its brackets open as the plan
allows (hpo/scheduling/hyperband_sync.py): with the random sampler all at once
(they run side by side on the fleet); with a model-based sampler bracket ``j``
opens when every trial before it is in a final state, so its configurations
are drawn from finished results only and a replay draws the same ones.

Exactly once, from any worker: the opener is whoever inserts the bracket's row
in ``saan_brackets`` (its primary key); it adds the drawn configurations to
Optuna as WAITING trials with their distributions (so Optuna's tools and the
dashboard show them like grid trials), then to the service's tables, then
marks the row opened. An opener that dies midway leaves a row older than the
lease: the next worker takes it over and adds only the trials still missing,
with the configurations the row holds.
"""

from __future__ import annotations

import logging
import warnings

import optuna
from optuna.trial import TrialState

from model.errors import SaanError
from hpo.scheduling.spec import StudySpec
from hpo.service.bracket_sampler import optuna_distributions, sample_bracket
from hpo.service.coordination import FINAL_STATES, Coordinator
from hpo.service.optuna_link import stored_trials

log = logging.getLogger(__name__)


def open_ready_brackets(spec: StudySpec, coordinator: Coordinator, study: optuna.Study,
                        storage: optuna.storages.BaseStorage, owner: str) -> list[int]:
    """Open every bracket the plan allows now; the indices opened by this call."""
    if not spec.sampled:
        return []
    policy = spec.policy
    opened = []
    states = coordinator.trial_states()
    for bracket in policy.brackets():
        if all(n in states for n in bracket.trials):
            continue
        if not policy.brackets_in_parallel() and any(
                states.get(n) not in FINAL_STATES for n in range(bracket.first_trial)):
            break  # its configurations wait for the results of the brackets before it
        results = ({} if policy.sampler == "random"
                   else coordinator.results(range(bracket.first_trial)))
        drawn = sample_bracket(spec.space, policy.sampler, policy.seed, spec.direction, bracket,
                               policy.boundaries, results)
        params = coordinator.take_bracket(bracket.index, owner, drawn)
        if params is None:
            break  # another worker is opening it
        _add_to_optuna(spec, study, bracket.first_trial, params)
        numbers = set(bracket.trials)
        coordinator.add_trials([t for t in stored_trials(study, storage) if t[0] in numbers])
        coordinator.bracket_opened(bracket.index)
        opened.append(bracket.index)
        log.info("bracket %d opened: %d configurations drawn by %s (trials %d-%d, first target "
                 "epoch %d)", bracket.index, bracket.n, policy.sampler, bracket.first_trial,
                 bracket.first_trial + bracket.n - 1, bracket.levels[0])
        states = coordinator.trial_states()
    return opened


def _add_to_optuna(spec: StudySpec, study: optuna.Study, first: int, params: list[dict]) -> None:
    """Add the trials of ``params`` still missing, so that trial ``first + k`` is ``params[k]``."""
    distributions = optuna_distributions(spec.space)
    existing = {t.number for t in study.get_trials(deepcopy=False)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for k, config in enumerate(params):
            if first + k in existing:
                continue
            if len(existing) != first + k:
                raise SaanError(f"study {spec.name!r}: Optuna has {len(existing)} trials where "
                                f"bracket trial {first + k} comes next (trials added by hand?)")
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=config,
                                                      distributions=distributions))
            existing.add(first + k)
