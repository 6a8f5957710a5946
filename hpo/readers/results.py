"""Reading a stored study back: its spec, its trials, its winner."""

from __future__ import annotations

import optuna
import sqlalchemy as sa

from model.errors import SaanError
from hpo.service import db, optuna_link
from hpo.scheduling.spec import StudySpec, check_study_name
from hpo.service.stored_studies import spec_from_row


class StudyNotFound(SaanError):
    pass


def stored_spec(name: str, storage_url: str) -> StudySpec:
    """The spec a study was created with, rebuilt from its stored identity."""
    check_study_name(name, "command line", "--study")
    with db.reading(storage_url) as conn:
        row = conn.execute(sa.select(db.studies).where(db.studies.c.name == name)).first()
    if row is None:
        raise StudyNotFound(f"storage {db.mask_url(storage_url)}: study {name!r}: not found")
    return spec_from_row(row, storage_url)


def best_trial(name: str, storage_url: str) -> optuna.trial.FrozenTrial | None:
    """Optuna's best COMPLETE trial, or None when none has completed."""
    study = optuna.load_study(study_name=name, storage=optuna_link.optuna_storage(storage_url))
    try:
        return study.best_trial
    except ValueError:
        return None


def checkpoint_ids(name: str, storage_url: str) -> dict[int, str | None]:
    """Trial number -> its latest checkpoint's artifact id (None once deleted)."""
    with db.reading(storage_url) as conn:
        rows = conn.execute(sa.select(db.trials.c.number, db.trials.c.checkpoint_id)
                            .where(db.trials.c.study == name)).all()
    return {row.number: row.checkpoint_id for row in rows}
