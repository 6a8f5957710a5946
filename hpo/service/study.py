"""Create a study, or resume / attach to one stored with the same spec.

Creation happens once, whoever gets there first: the study row's primary key
decides, the others wait until it is marked ready. A study file whose grid,
scheduler or settings differ from the stored study is refused before anything
is written.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from hpo.service import db, optuna_link
from hpo.service.coordination import Coordinator
from hpo.scheduling.spec import StudySpec

log = logging.getLogger(__name__)


def connect(storage_url: str) -> sa.engine.Engine:
    """Engine with the service tables in place; an unreachable URL is one clear error."""
    path = db.sqlite_path(db.resolve_url(storage_url))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = db.create_service_engine(storage_url)
    try:
        for attempt in range(5):
            try:
                db.create_tables(engine)
                break
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                # Two workers creating the tables at once on PostgreSQL: the
                # loser sees a duplicate; the tables exist, so look again.
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except sa.exc.SQLAlchemyError as err:
        raise db.StorageError(f"storage {db.mask_url(storage_url)}: cannot open the database "
                              f"({db.first_line(err)})") from None
    return engine


def open_or_create(spec: StudySpec, storage_url: str, wait_seconds: float = 120.0) -> bool:
    """Make sure the study exists with this spec. True when this call created it."""
    engine = connect(storage_url)
    coord = Coordinator(engine, spec)
    stored = coord.stored_study()
    if stored is not None:
        coord.check_spec(stored)
        _wait_ready(coord, wait_seconds)
        return False
    if not coord.register_study():
        coord.check_spec(coord.stored_study())
        _wait_ready(coord, wait_seconds)
        return False
    storage = optuna_link.optuna_storage(storage_url)
    study = optuna_link.create_study(spec, storage)
    # Trials already there: an earlier launcher died between Optuna's trials and ours.
    if not study.get_trials(deepcopy=False):
        optuna_link.add_waiting_trials(study, spec)
    created = optuna_link.stored_trials(study, storage)
    coord.add_trials(created)
    log.debug("created study %r: %d configurations, %s, boundaries %s, %d epochs planned "
             "(full grid %d)", spec.name, len(created), spec.scheduler.kind, spec.boundaries,
             spec.planned_epochs(), spec.full_grid_epochs())
    engine.dispose()
    return True


def _wait_ready(coord: Coordinator, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while not (coord.stored_study() or {}).get("ready"):
        if time.monotonic() > deadline:
            raise db.StorageError(f"study {coord.study!r}: still being created by another "
                                  f"launcher after {wait_seconds:.0f}s")
        time.sleep(0.2)
