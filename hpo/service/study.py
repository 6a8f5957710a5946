"""Create a study, or resume / attach to one stored with the same spec.

Only ``launch`` creates (``open_or_create``); a worker only attaches
(``attach``), so a mistyped storage URL or a forgotten ``--data synthetic``
never leaves a stray study behind. Creation happens once, whoever gets there
first: the study row's primary key decides, the others wait until it is marked
ready. A study file whose grid, scheduler or settings differ from the stored
study is refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import time

import sqlalchemy as sa

from model.errors import SaanError
from hpo.service import db, optuna_link
from hpo.service.coordination import Coordinator
from hpo.service.preflight import check_storage, sqlite_folder_to_create
from hpo.scheduling.spec import StudySpec

log = logging.getLogger(__name__)


def connect(storage_url: str, study_name: str) -> sa.engine.Engine:
    """Engine with the service tables in place; an unreachable URL is one clear error.

    A SQLite folder is created only for the default layout (runs/<study>/).
    """
    check_storage(study_name, storage_url)
    folder = sqlite_folder_to_create(storage_url, study_name)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    engine = db.create_service_engine(storage_url)
    try:
        db.connect_admitted(engine, log).close()  # a server with no slot left: wait (one line)
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
        lasting = db.lasting_fault(err)
        reason = f"{lasting}: " if lasting else ""
        raise db.StorageError(f"storage {db.mask_url(storage_url)}: cannot open the database "
                              f"({reason}{db.first_line(err)})") from None
    return engine


def open_or_create(spec: StudySpec, storage_url: str, wait_seconds: float = 120.0) -> bool:
    """Make sure the study exists with this spec. True when this call created it."""
    engine = connect(storage_url, spec.name)
    coord = Coordinator(engine, spec)
    stored = coord.stored_study()
    if stored is not None:
        coord.check_spec(stored)
        _wait_ready(coord, wait_seconds)
        if _settings_changed(stored, spec):
            coord.store_settings()
        return False
    if not coord.register_study():
        coord.check_spec(coord.stored_study())
        _wait_ready(coord, wait_seconds)
        return False
    storage = optuna_link.optuna_storage(storage_url)
    study = optuna_link.create_study(spec, storage)
    if spec.sampled:
        # No grid to create: the brackets the plan allows now are drawn and added.
        from hpo.service.brackets import open_ready_brackets  # Optuna's samplers: space studies only

        open_ready_brackets(spec, coord, study, storage, owner="launch")
        created = optuna_link.stored_trials(study, storage)
        coord.add_trials([])  # marks the study ready
    else:
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


def _settings_changed(stored: dict, spec: StudySpec) -> bool:
    """The file's unhashed settings differ from the stored ones (or were never stored)."""
    return (stored.get("settings_json") is None
            or json.loads(stored["settings_json"]) != spec.settings()
            or stored.get("priority") != spec.priority)


class UnknownStudy(SaanError):
    """A worker named a study that no launch has created in this storage."""


def attach(spec: StudySpec, storage_url: str, wait_seconds: float = 120.0) -> None:
    """Check that the study exists in this storage with this spec; write nothing.

    What a worker does instead of creating: an unknown study or one whose
    spec differs is one clear error (exit 2), and the storage is left as it
    was -- not even an empty database file or table is created.
    """
    try:
        with db.reading(storage_url) as conn:
            row = conn.execute(sa.select(db.studies).where(db.studies.c.name == spec.name)).first()
    except db.StorageError as err:
        if "cannot open" in str(err):
            raise
        row = None  # no database file, or one without saan-hpo's tables
    if row is None:
        raise UnknownStudy(f"{spec.source}: study {spec.name!r} not found in {db.mask_url(storage_url)}; "
                           "a worker only attaches: create the study with `saan-hpo launch` first")
    engine = db.create_service_engine(storage_url)
    try:
        coord = Coordinator(engine, spec)
        coord.check_spec(row._asdict())
        _wait_ready(coord, wait_seconds)
    finally:
        engine.dispose()


def _wait_ready(coord: Coordinator, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while not (db.retrying(coord.stored_study, log=log) or {}).get("ready"):
        if time.monotonic() > deadline:
            raise db.StorageError(f"study {coord.study!r}: still being created by another "
                                  f"launcher after {wait_seconds:.0f}s")
        time.sleep(0.2)
