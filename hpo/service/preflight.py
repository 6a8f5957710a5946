"""Checks before a study is created or a trial is claimed: a failed one leaves nothing behind.

``launch`` and ``worker`` call :func:`check_before_creating` after the study
file is parsed (which already refused a study name that is not a safe single
path component) and before they open the database: the storage URL (a backend
the service runs on, its driver installed, a SQLite file -- not an in-memory
database, which no second process sees -- whose folder exists), that a study
already stored under this name has this spec and that its database takes
writes (a read-only file or server is one line before any worker starts), and
the data every configuration of the grid trains on. Bad input found later,
after the study was created and a trial claimed, would leave a study, a lease
and files behind for nothing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import sqlalchemy as sa

from hpo.service import db
from hpo.scheduling.spec import StudySpec, default_storage


def check_before_creating(spec: StudySpec, storage_url: str, trains_here: bool) -> None:
    """Raise the one-line SaanError of the first problem; nothing is created (see module doc).

    ``trains_here`` False (replayed curves, or ``launch --workers 0`` for a fleet whose
    workers bring their own data roots): no data to check on this machine.
    """
    check_storage(spec.name, storage_url)
    check_stored_spec(spec, storage_url)
    if trains_here:
        check_data(spec)


def check_storage(study_name: str, storage_url: str) -> None:
    """URL, backend, driver; for SQLite a file whose folder exists or will be the default one."""
    url = db.resolve_url(storage_url)
    path = db.sqlite_path(url)
    if path is None and sa.make_url(url).get_backend_name() == "sqlite":
        raise db.StorageError(f"storage {db.mask_url(storage_url)}: an in-memory SQLite database "
                              "lives in one connection, so no worker would see the study "
                              f"(expected a file, e.g. {default_storage(study_name)})")
    if path is None:
        check_reachable(storage_url)
        return
    if path.is_dir():
        raise db.StorageError(f"storage {db.mask_url(storage_url)}: {path} is a folder, "
                              "expected a database file")
    if not path.parent.is_dir() and sqlite_folder_to_create(storage_url, study_name) is None:
        raise db.StorageError(f"storage {db.mask_url(storage_url)}: folder {path.parent} does not "
                              "exist (create it first: only the default runs/<study>/ folder is "
                              "made for you)")


def sqlite_folder_to_create(storage_url: str, study_name: str) -> Path | None:
    """The folder of the runs/ layout (runs/<study>/, or any runs/<name>/ beside it) when it
    is missing, else None.

    Any other missing folder is a typo far more often than a wish: a study
    created there would be lost from sight, so it is never created.
    """
    path = db.sqlite_path(db.resolve_url(storage_url))
    if path is None or path.parent.is_dir():
        return None
    runs = db.sqlite_path(default_storage(study_name)).absolute().parent.parent
    if path.absolute().parent.parent == runs:
        return path.parent
    return None


def check_data(spec: StudySpec, generate: bool = True) -> None:
    """The data of every distinct [data] section the grid trains on (check_dataset).

    ``generate=False`` checks only what is on disk and skips a synthetic folder
    not generated yet: a worker checks the data before it looks the study up
    (bad data is the user's to fix first) and generates only once attached.
    """
    from model.dataset_index import check_dataset

    seen = set()
    for params in spec.grid_points():
        data = spec.run_config(params).data
        key = json.dumps(dataclasses.asdict(data), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            if not generate and data.synthetic and data.root and not Path(data.root).expanduser().exists():
                continue
            check_dataset(data)


def check_reachable(storage_url: str) -> None:
    """A database server answers (connecting creates nothing; SQLite files are not opened here)."""
    engine = db.create_service_engine(storage_url)
    try:
        with db.connect_admitted(engine):  # a server with no slot left: wait (one line)
            pass
    except sa.exc.SQLAlchemyError as err:
        raise db.StorageError(f"storage {db.mask_url(storage_url)}: cannot open the database "
                              f"({db.first_line(err)})") from None
    finally:
        engine.dispose()


def check_stored_spec(spec: StudySpec, storage_url: str) -> None:
    """A stored study of this name must have this spec: read only, a new database stays uncreated.

    Errors reaching the database are left to open_or_create, which reports them.
    """
    from hpo.service.coordination import Coordinator

    path = db.sqlite_path(db.resolve_url(storage_url))
    if path is not None and not path.is_file():
        return
    engine = db.create_service_engine(storage_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(db.studies.name):
                return
        coord = Coordinator(engine, spec)
        stored = coord.stored_study()
        if stored is not None:
            coord.check_spec(stored)
            check_writable(engine, spec.name, storage_url)
    except sa.exc.SQLAlchemyError:
        return
    finally:
        engine.dispose()


def check_writable(engine: sa.Engine, study_name: str, storage_url: str) -> None:
    """The stored study's database takes writes: a no-op update of its row, rolled back.

    Resuming a study writes nothing before the workers claim trials, so a read-only
    database (an immutable or read-only-mounted SQLite file, a PostgreSQL standby or
    ``default_transaction_read_only``) would otherwise be found by each worker after it
    started. Only lasting faults are refused here; a locked database passes (workers wait).
    """
    try:
        with engine.connect() as conn:
            tx = conn.begin()
            try:
                conn.execute(sa.update(db.studies).where(db.studies.c.name == study_name)
                             .values(name=db.studies.c.name))
            finally:
                tx.rollback()
    except sa.exc.SQLAlchemyError as err:
        meaning = db.lasting_fault(err)
        if meaning is None:
            return
        raise db.ReadOnlyStorage(f"storage {db.mask_url(storage_url)}: {meaning} "
                                 f"({db.first_line(err)}); fix it and run again") from None
