"""The Optuna side of a study: what Optuna's own tools will read.

One Optuna trial per grid point for its whole life. Trials are created WAITING
with their params at launch (so dashboards show the whole grid at once), turned
RUNNING by the worker that first claims them, reported to after every epoch,
and told PRUNED or COMPLETE once. A paused trial stays RUNNING in Optuna;
reopening it from any process with ``optuna.trial.Trial(study, trial_id)`` is
enough to report to it again (checked on Optuna 5, DESIGN.md).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Mapping

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hpo.service.db import optuna_engine_kwargs, resolve_url
from hpo.scheduling.spec import StudySpec

log = logging.getLogger(__name__)


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(resolve_url(url), engine_kwargs=optuna_engine_kwargs(url))


def pruner_for(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Optuna's own pruners for the asynchronous kinds; synchronous halving decides itself."""
    sched = spec.scheduler
    if sched.kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=sched.min_epochs, reduction_factor=sched.eta, min_early_stopping_rate=0)
    if sched.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=sched.min_epochs, max_resource=spec.final_epoch, reduction_factor=sched.eta)
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=storage, pruner=pruner_for(spec))


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                pruner=pruner_for(spec), load_if_exists=True)
    study.set_user_attr("saan_hpo_spec_hash", spec.spec_hash())
    study.set_user_attr("saan_hpo_metric", spec.metric)
    study.set_user_attr("saan_hpo_scheduler", spec.scheduler.kind)
    return study


def distributions(spec: StudySpec) -> dict[str, CategoricalDistribution]:
    return {axis: CategoricalDistribution(values) for axis, values in spec.grid.items()}


def add_waiting_trials(study: optuna.Study, spec: StudySpec) -> list[tuple[int, int, dict]]:
    """Create one WAITING trial per grid point, in grid order: (number, trial_id, params)."""
    dists = distributions(spec)
    created = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params in spec.grid_points():
            frozen = optuna.trial.create_trial(state=TrialState.WAITING, params=params,
                                               distributions=dists)
            study.add_trial(frozen)
    for trial in study.get_trials(deepcopy=False):
        created.append((trial.number, trial._trial_id, dict(trial.params)))
    return created


def start_trial(study: optuna.Study, trial_id: int) -> optuna.trial.Trial:
    """WAITING -> RUNNING on first claim; a trial already RUNNING is just reopened."""
    study._storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    return optuna.trial.Trial(study, trial_id)


def report(trial: optuna.trial.Trial, value: float, epoch: int, metrics: Mapping[str, Any]) -> None:
    """Report the objective at ``epoch``; re-reporting an epoch after a takeover is a no-op."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "step is already reported"
        trial.report(value, epoch)
    trial.set_user_attr("epochs", epoch)
    # Non-finite metrics are stored as null: the attribute stays strict JSON.
    trial.set_user_attr("last_metrics", {k: float(v) if math.isfinite(v) else None
                                         for k, v in metrics.items()
                                         if isinstance(v, (int, float)) and not isinstance(v, bool)})


def finish_trial(study: optuna.Study, number: int, state: str, value: float | None) -> None:
    """Tell Optuna the final state; idempotent, so any worker may finish the job."""
    try:
        _tell(study, number, state, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        # skip_if_finished checks, then writes: a worker finalizing the same
        # trial at the same moment can win between the two. It is finished.
        pass


def _tell(study: optuna.Study, number: int, state: str, value: float | None) -> None:
    if state == "complete":
        study.tell(number, values=[value], skip_if_finished=True)
    elif state == "pruned":
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
