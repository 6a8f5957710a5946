"""The Optuna side of a study: what Optuna's own tools will read.

One Optuna trial per grid point for its whole life. Trials are created WAITING
with their params at launch (so dashboards show the whole grid at once), turned
RUNNING by the worker that first claims them, reported to after every epoch,
and told PRUNED or COMPLETE once. A paused trial stays RUNNING in Optuna;
reopening it from any process with ``optuna.trial.Trial(study, trial_id)`` is
enough to report to it again (checked on Optuna 5; docs/design.md).

Only public Optuna API is used, with one exception kept in this module:
:func:`store_finished_trial_attrs` (Optuna has no public way to annotate a
finished trial).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import optuna
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution
from optuna.storages._rdb import models as optuna_rdb_models  # private: store_finished_trial_attrs
from optuna.trial import TrialState

from hpo.scheduling.spec import StudySpec
from hpo.service.db import create_service_engine, is_sqlite, optuna_engine_kwargs, resolve_url

log = logging.getLogger(__name__)


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(resolve_url(url), engine_kwargs=optuna_engine_kwargs(url))


def storage_and_engine(url: str, storage: optuna.storages.RDBStorage | None = None
                       ) -> tuple[optuna.storages.RDBStorage, sa.Engine]:
    """Optuna's storage of ``url`` and the engine for the service's tables: one pool on PostgreSQL.

    A worker with two pools (ours and Optuna's) can hold idle connections in
    one while it waits for a slot in the other; several such workers on a
    server at its connection limit wait for each other for ever. With one pool,
    a worker holding any connection goes on with it (docs/design.md, "Claims and
    leases"). Optuna's engine (``RDBStorage.engine``) is built with the service
    engine's options (db.optuna_engine_kwargs); SQLite keeps the service's own,
    which begins every transaction IMMEDIATE, and has no connection limit.
    """
    storage = storage if storage is not None else optuna_storage(url)
    if is_sqlite(storage.engine):
        return storage, create_service_engine(url)
    return storage, storage.engine


def pruner_for(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Optuna's own pruner for the asynchronous kinds; the others prune nothing through Optuna."""
    name, kwargs = spec.policy.optuna_pruner()
    return getattr(optuna.pruners, name)(**kwargs)


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


def add_waiting_trials(study: optuna.Study, spec: StudySpec) -> None:
    """Create one WAITING trial per grid point, in grid order (trial number i is point i)."""
    dists = distributions(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params in spec.grid_points():
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=params,
                                                      distributions=dists))


def stored_trials(study: optuna.Study,
                  storage: optuna.storages.BaseStorage) -> list[tuple[int, int, dict]]:
    """(number, storage trial id, params) of every trial of ``study``, by number."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return [(t.number, storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
             dict(t.params)) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` (what Optuna's storage methods take)."""
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number)


def start_trial(study: optuna.Study, storage: optuna.storages.BaseStorage,
                trial_id: int) -> optuna.trial.Trial:
    """WAITING -> RUNNING on first claim; a trial already RUNNING is just reopened.

    ``storage`` is the study's own storage (the one it was opened with).
    """
    storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    return optuna.trial.Trial(study, trial_id)


@dataclass(frozen=True)
class OptunaStudy:
    """A study and the storage it was opened with: what a worker needs of Optuna."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage

    @classmethod
    def open(cls, spec: StudySpec, storage_url: str,
             storage: optuna.storages.BaseStorage | None = None) -> "OptunaStudy":
        """``storage``: an open storage of ``storage_url`` to share (a fleet worker's one for
        every study it serves: one connection pool, not one per study)."""
        storage = storage if storage is not None else optuna_storage(storage_url)
        return cls(open_study(spec, storage), storage)

    def start_trial(self, trial_id: int) -> optuna.trial.Trial:
        return start_trial(self.study, self.storage, trial_id)

    def finish_trial(self, number: int, state: str, value: float | None) -> None:
        finish_trial(self.study, number, state, value)


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


def store_finished_trial_attrs(storage: optuna.storages.RDBStorage, trial_id: int,
                               attrs: Mapping[str, Any]) -> None:
    """Write user attributes on a *finished* trial (the test scores of ``saan-hpo table``).

    Optuna's public API refuses any change to a finished trial, and the test
    scores only exist once it has finished; so the rows are written through
    Optuna's own ORM model of its ``trial_user_attributes`` table (the same rows
    ``set_trial_user_attr`` writes). This is the only use of Optuna's private
    modules: there is no public equivalent. Two tables scoring the same trial
    at once write the same values: the loser of the unique (trial, key) row skips.
    """
    model = optuna_rdb_models.TrialUserAttributeModel
    for key, value in attrs.items():
        session = storage.scoped_session()
        try:
            row = session.query(model).filter(model.trial_id == trial_id, model.key == key).one_or_none()
            if row is None:
                session.add(model(trial_id=trial_id, key=key, value_json=json.dumps(value)))
            else:
                row.value_json = json.dumps(value)
            session.commit()
        except sa.exc.IntegrityError:
            session.rollback()
        finally:
            session.close()
