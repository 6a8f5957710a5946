"""The service's own tables, beside Optuna's in the same database.

Optuna's RDBStorage holds the study as Optuna sees it (params, reported values,
states). What Optuna has no notion of lives here: which trial is paused at
which rung, who holds a lease on it, which rung decisions were taken, which
worker trained which epoch when. Everything is SQLAlchemy 2 Core, so the same
code runs on SQLite and PostgreSQL.

Concurrency: every write that decides something runs in one transaction.
SQLite gets WAL (readers never block the writer), a long busy timeout and
``BEGIN IMMEDIATE`` (take the write lock up front, so two transactions never
deadlock upgrading read locks -- the cause of "database is locked").
PostgreSQL gets a pooled, pre-pinged engine; claims use ``FOR UPDATE SKIP
LOCKED`` there and a compare-and-set update everywhere.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from optuna.exceptions import StorageInternalError
from sqlalchemy.engine import Engine, make_url

from model.errors import SaanError
from hpo.service.refusals import note_refusal, refused_connection, refused_where

SQLITE_BUSY_SECONDS = 60.0

_log = logging.getLogger(__name__)

metadata = sa.MetaData()

studies = sa.Table(
    "saan_studies", metadata,
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False),  # the identity that is hashed
    sa.Column("run_json", sa.Text, nullable=False),  # the full run config, for export
    sa.Column("artifacts", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ready", sa.Boolean, nullable=False, default=False),
    # Added for fleets of workers that serve a storage, not a file: the
    # [study] settings that are not identity (lease_seconds, description) as
    # JSON, and the study's claim priority. Nullable: add_missing_columns()
    # puts them into databases created before; None reads as the defaults.
    sa.Column("settings_json", sa.Text),
    sa.Column("priority", sa.Integer, default=0),
)

trials = sa.Table(
    "saan_trials", metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("optuna_trial_id", sa.Integer, nullable=False),
    sa.Column("params_json", sa.Text, nullable=False),
    # waiting (claimable) | running | paused (at an undecided rung) | pruned | complete | failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rung", sa.Integer, nullable=False, default=0),
    sa.Column("target_epoch", sa.Integer, nullable=False),
    sa.Column("epochs_done", sa.Integer, nullable=False, default=0),
    sa.Column("last_value", sa.Float),
    sa.Column("checkpoint_id", sa.String(256)),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires", sa.Float),
    # Optuna has been told the final state (pruned/complete/failed) and
    # pruned checkpoints are deleted; until then any worker finishes the job.
    sa.Column("finalized", sa.Boolean, nullable=False, default=False),
    sa.Column("claims", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.Float),
    # Runs that raised so far, and the last error as JSON {type, message, host,
    # epoch, final}; a trial is retried from its checkpoint until failures
    # exceed [study] max_retries. Added after the first release: nullable, and
    # add_missing_columns() puts them into databases created before.
    sa.Column("failures", sa.Integer, default=0),
    sa.Column("error_json", sa.Text),
)

rungs = sa.Table(
    "saan_rungs", metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    # The primary key makes a rung decidable exactly once.
    sa.Column("rung", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("values_json", sa.Text, nullable=False),
    sa.Column("survivors_json", sa.Text, nullable=False),
    sa.Column("pruned_json", sa.Text, nullable=False),
    sa.Column("decided_at", sa.Float, nullable=False),
    sa.Column("decided_by", sa.String(64)),
)

workers = sa.Table(
    "saan_workers", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("study", sa.String(512), nullable=False, index=True),
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer),
    sa.Column("device", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False),  # active | exited
    sa.Column("current_trial", sa.Integer),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    # Gangs (hpo/service/gang_offers.py), added for issue 20; nullable, so
    # add_missing_columns() puts them into older databases. gang_offer: the
    # device kind of a worker that found nothing to claim and offers itself (an
    # offer lives while heartbeat_at is fresh); gang_trial / gang_holder /
    # gang_rank / gang_epoch: the running trial whose holder took it, from which
    # epoch, at which rank. Written only by conditional updates (one holder per offer).
    # gang_addr / gang_world: where the holder's process group waits (host:port) and
    # its size, published once the gang is complete (training runs only;
    # hpo/service/rendezvous.py); a member joins when it sees an address it has not joined.
    # gang_ready: 1 once the member has built its trainer for gang_trial; the holder
    # forms its process group only with ready members, so it never waits on a build.
    sa.Column("gang_offer", sa.String(16)),
    sa.Column("gang_trial", sa.Integer),
    sa.Column("gang_holder", sa.String(64)),
    sa.Column("gang_rank", sa.Integer),
    sa.Column("gang_epoch", sa.Integer),
    sa.Column("gang_addr", sa.String(128)),
    sa.Column("gang_world", sa.Integer),
    sa.Column("gang_ready", sa.Integer),
)

epochs = sa.Table(
    "saan_epochs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(512), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(64)),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("metrics_json", sa.Text),
    # False when the epoch was trained but its trial had lost its lease: the
    # work was done (and is counted as spent) but never reported.
    sa.Column("kept", sa.Boolean, nullable=False, default=True),
    # The gang that trained it besides its holder (JSON list of worker ids);
    # NULL or [] when the holder trained it alone. Added for issue 20: nullable.
    sa.Column("gang_json", sa.Text),
)

# kind hyperband-sync: one row per bracket whose configurations are being drawn
# (or were). The primary key makes one worker the opener; a row older than the
# study's lease whose trials are not all created is taken over (the opener died),
# and the successor draws the same configurations (hpo/service/bracket_sampler.py).
brackets = sa.Table(
    "saan_brackets", metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("bracket", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64)),
    sa.Column("taken_at", sa.Float, nullable=False),
    sa.Column("params_json", sa.Text, nullable=False),  # the drawn configurations, in trial order
    sa.Column("opened", sa.Boolean, nullable=False, default=False),
)


class StorageError(SaanError):
    """The storage URL is malformed or the database cannot be reached."""


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs, tables and reports."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: still never print what may be a secret
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


BACKENDS = ("sqlite", "postgresql")
URL_EXAMPLES = "sqlite:///runs/NAME/study.db or postgresql+psycopg://user@host/db"


def resolve_url(url: str) -> str:
    """Fill a PostgreSQL password from PGPASSWORD or SAAN_HPO_PGPASSWORD_FILE when the URL has none.

    The URL is checked first (a backend the service runs on, its driver
    installed), so a typo is one StorageError before anything is created.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(f"storage URL {mask_url(url)!r}: expected a SQLAlchemy URL such as "
                           f"{URL_EXAMPLES}") from None
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise StorageError(f"storage URL {mask_url(url)!r}: unknown scheme {parsed.drivername!r} "
                           f"(expected {URL_EXAMPLES})")
    try:
        parsed.get_dialect()
    except Exception as err:  # NoSuchModuleError, or ImportError of a driver not installed
        raise StorageError(f"storage URL {mask_url(url)!r}: driver {parsed.drivername!r} is not "
                           f"available ({first_line(err)})") from None
    if parsed.get_backend_name() == "postgresql" and parsed.password is None:
        password = os.environ.get("PGPASSWORD")
        secret_file = os.environ.get("SAAN_HPO_PGPASSWORD_FILE")
        if password is None and secret_file:
            password = Path(secret_file).read_text().strip()
        if password is not None:
            parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_service_engine(url: str) -> Engine:
    """Engine for the service's tables, tuned per backend (see module docstring)."""
    url = resolve_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2,
                            pool_recycle=1800, pool_timeout=60)


def optuna_engine_kwargs(url: str) -> dict:
    """Engine options for Optuna's RDBStorage on the same database."""
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    # The service engine's options: a worker on PostgreSQL runs both on this one
    # pool (optuna_link.storage_and_engine).
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "pool_recycle": 1800,
            "pool_timeout": 60}


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine)
    add_missing_columns(engine)


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the nullable columns newer releases defined to tables created by older ones.

    Idempotent, so every command that opens a study may run it: a study started
    before an upgrade resumes after it. Returns the columns added ("table.column").
    """
    added = []
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                added.append(f"{table.name}.{column.name}")
    return added


@contextmanager
def reading(storage_url: str) -> Iterator[sa.Connection]:
    """A connection for reading an existing study's tables; nothing is created.

    Reading commands (status, report, export, table) must not leave an empty
    database behind when a URL has a typo, so a missing SQLite file, an
    unreachable server or absent service tables are one clear StorageError.
    """
    path = sqlite_path(resolve_url(storage_url))
    if path is not None and not path.exists():
        raise StorageError(f"storage {mask_url(storage_url)}: no database file at {path}")
    engine = create_service_engine(storage_url)
    try:
        try:
            # A server with no slot left makes this wait (one line), as a worker's queries do.
            connect_admitted(engine).close()
            _add_missing_columns_if_writable(engine)  # before our connection holds any lock
            conn = connect_admitted(engine)
        except sa.exc.SQLAlchemyError as err:
            raise StorageError(f"storage {mask_url(storage_url)}: cannot open the database "
                               f"({first_line(err)})") from None
        with conn:
            if not sa.inspect(conn).has_table(studies.name):
                raise StorageError(f"storage {mask_url(storage_url)}: holds no saan-hpo study")
            yield conn
    finally:
        engine.dispose()


def _add_missing_columns_if_writable(engine: Engine) -> None:
    # A reading command on a database from an older release: add the new
    # columns so the readers' queries work; a read-only database stays as it is.
    try:
        add_missing_columns(engine)
    except sa.exc.SQLAlchemyError:
        pass


def first_line(err: BaseException) -> str:
    """The driver's own message, first line only: enough to say why, no traceback."""
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# Optuna's RDBStorage wraps the driver's errors in its own StorageInternalError.
TRANSIENT_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError,
                    StorageInternalError)

# Driver messages of faults that waiting does not cure: the operator must act.
# Everything else a transient type carries (connection refused, server
# restarting or shutting down, database locked, connection reset) may pass.
LASTING_FAULTS = (
    ("readonly database", "the database is read-only"),            # SQLite
    ("read-only transaction", "the database is read-only"),        # PostgreSQL hot standby, default_transaction_read_only
    ("read-only file system", "the database is on a read-only file system"),
    ("unable to open database file", "the database file cannot be opened for writing"),
    ("database or disk is full", "the disk holding the database is full"),
    ("could not extend file", "the disk holding the database is full"),
    ("no space left on device", "the disk holding the database is full"),
    ("permission denied", "permission denied"),
)


class ReadOnlyStorage(StorageError):
    """The database refuses writes for a reason that does not pass by waiting."""


def lasting_fault(err: BaseException) -> str | None:
    """Why ``err`` will not pass by retrying (e.g. "the database is read-only"), or None.

    Looks through the chain of causes: Optuna wraps SQLAlchemy's error, which
    wraps the driver's.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(getattr(err, "orig", None) or err).lower()
        for needle, meaning in LASTING_FAULTS:
            if needle in text:
                return meaning
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


def lasting_fault_error(err: BaseException) -> ReadOnlyStorage | None:
    """The one-line StorageError for a lasting fault, or None when ``err`` may pass."""
    meaning = lasting_fault(err)
    if meaning is None:
        return None
    cause = err
    while getattr(cause, "orig", None) is None and cause.__cause__ is not None:
        cause = cause.__cause__  # Optuna's wrapper says nothing useful; the driver does
    return ReadOnlyStorage(f"storage: {meaning} ({first_line(cause)}); fix it and run again")


@contextmanager
def naming(url: str) -> Iterator[None]:
    """Storage errors raised inside name the (masked) URL; retrying() does not know it."""
    try:
        yield
    except StorageError as err:
        text = str(err)
        if text.startswith("storage: "):
            raise type(err)(f"storage {mask_url(url)}: {text[len('storage: '):]}") from None
        raise


def refusal_error(err: BaseException, waited: float) -> StorageError:
    return StorageError(f"storage {refused_where(err)}: PostgreSQL refused connections for "
                        f"{waited:.0f}s ({refused_connection(err)}); raise max_connections or the "
                        "database's connection limit, or run fewer workers (README, \"PostgreSQL "
                        "for a large fleet\")")


def retrying(fn, *args, attempts: int = 0, first_wait: float = 0.5, max_wait: float = 10.0,
             deadline: float = 600.0, log=None, refusals_only: bool = False, **kwargs):
    """Call ``fn`` until it succeeds, backing off on transient database errors.

    A worker whose database restarts or briefly disappears waits and carries on
    instead of losing its trial; after ``deadline`` seconds the error stands.
    A lasting fault (read-only, disk full, permission: see LASTING_FAULTS) is
    raised at once as one StorageError (wrap the caller in ``naming(url)`` to name the storage).
    A connection refused for want of a slot (REFUSALS) is logged in one line
    per outage, not per retry, and after ``deadline`` is one StorageError, not
    a traceback. ``refusals_only``: retry nothing else (start-up, where an
    unreachable server is a wrong URL far more often than a passing fault).
    """
    wait, start = first_wait, time.monotonic()
    tries = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except (*TRANSIENT_ERRORS, sa.exc.DBAPIError) as err:
            lasting = lasting_fault_error(err)
            if lasting is not None:
                raise lasting from None  # a read-only database stays read-only: say so, do not wait
            refused = refused_connection(err)
            if not isinstance(err, TRANSIENT_ERRORS) or (refusals_only and refused is None):
                raise
            tries += 1
            waited = time.monotonic() - start
            if waited > deadline or (attempts and tries >= attempts):
                if refused is not None:
                    raise refusal_error(err, waited) from None
                raise
            if log is not None and not note_refusal(err, log):
                cause = getattr(err, "orig", None) or err.__cause__ or err
                log.warning("database unavailable (%s); retrying in %.1fs",
                            type(cause).__name__, wait)
            time.sleep(wait)
            wait = min(max_wait, wait * 2)


def connect_admitted(engine: Engine, log=None) -> sa.Connection:
    """``engine.connect()``, waiting with backoff while PostgreSQL has no slot for it.

    For start-up paths: any other error is raised at once for the caller to name.
    """
    return retrying(engine.connect, refusals_only=True, log=log or _log)
