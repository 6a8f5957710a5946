"""Shared pytest fixtures.

Storage fixtures (this block) come first; add other fixtures below the marked line.

PostgreSQL comes from ``.ci/pg.sh`` (CI starts it in ``.ci/run``; locally run
``eval "$(.ci/pg.sh start)"``), which exports:

- ``SAAN_HPO_TEST_PG_URL``:  ``postgresql+psycopg://user:pass@127.0.0.1:PORT/saan_hpo_test``;
  the role may create databases.
- ``SAAN_HPO_TEST_PG_DATA``: the server's data dir.
- ``SAAN_HPO_TEST_PG_CTL``:  command prefix taking ``start|stop|restart`` (reads the data dir
  from ``SAAN_HPO_TEST_PG_DATA``).

Without ``SAAN_HPO_TEST_PG_URL`` the PostgreSQL tests skip, except under CI, where they fail:
no test may pass in CI by skipping. Tests using these fixtures get the ``postgres`` marker, so
``pytest -m "not postgres"`` leaves them out.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

# Progress bars garble pytest output; subprocesses (workers) inherit this too.
os.environ["SAAN_HPO_NO_PROGRESS"] = "1"

PG_FIXTURES = {"pg_server_url", "pg_url", "pg_restart"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require_env(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    message = f"{name} is not set: start a test server with `eval \"$(.ci/pg.sh start)\"`"
    if _in_ci():
        pytest.fail(f"CI=true but {message} (.ci/run should have done it)", pytrace=False)
    pytest.skip(message)


# The groups that take longest, longest first (measured: --durations on 2 cores, 2026-12-07).
# The test processes take groups in the order of the collection (setup.cfg turns off
# xdist's reordering by test count), so the long ones start first and the short ones fill
# in at the end, instead of one long group starting last while the other process idles.
SLOWEST_GROUPS = ("postgres", "test_readme.py", "test_demo_study.py", "test_bad_places.py",
                  "test_stops.py", "test_gang_training.py", "test_gpu_scripts.py",
                  "test_published_studies.py",
                  "test_fleet.py", "test_same_name_studies.py", "test_sync_halving.py",
                  "test_faults.py", "test_data_parallel.py", "test_checkpoint_damage.py",
                  "test_published.py", "test_cli_model.py")


def _group(item: pytest.Item) -> str:
    (marker,) = [m for m in item.iter_markers("xdist_group")][:1] or [None]
    return marker.args[0] if marker is not None else item.path.name


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # A test that asks for a server at run time (request.getfixturevalue) carries the
        # marker itself, since its fixture names do not show it.
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres)
            # One process for all of them: pg_restart restarts the server under every test.
            item.add_marker(pytest.mark.xdist_group("postgres"))
        else:
            # A file's tests in one process: its module-scoped fixtures are built once.
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    rank = {name: k for k, name in enumerate(SLOWEST_GROUPS)}
    order = {id(item): k for k, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(_group(item), len(rank)), order[id(item)]))


@pytest.fixture(scope="session")
def pg_server_url() -> sa.URL:
    """URL of the test server's own database (shared by all tests: create nothing in it)."""
    return sa.make_url(_require_env("SAAN_HPO_TEST_PG_URL"))


@pytest.fixture
def pg_url(pg_server_url: sa.URL) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    The URL string includes the password (SQLAlchemy's ``str(url)`` would mask it).
    """
    name = f"saan_hpo_t_{uuid.uuid4().hex}"
    # NullPool: keep no connection to the maintenance db open across a pg_restart.
    admin = sa.create_engine(
        pg_server_url.set(database="postgres"), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections a test (or a worker process it started) left open.
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_restart(pg_server_url: sa.URL) -> Callable[[], None]:
    """Call to restart the PostgreSQL server (fast shutdown: open connections are cut)."""
    command = [*shlex.split(_require_env("SAAN_HPO_TEST_PG_CTL")), "restart"]

    def restart() -> None:
        subprocess.run(command, check=True, timeout=120, stdout=subprocess.DEVNULL)

    return restart


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a new SQLite database file in the test's temp dir."""
    return f"sqlite:///{tmp_path / 'study.db'}"


# ---- fixtures from other modules' tests go below this line -------------------------------------


@pytest.fixture
def baid(source: Path, tmp_path: Path) -> Path:
    """A private copy of the module's synthetic BAID folder (``source``, defined per module)."""
    root = tmp_path / "baid"
    shutil.copytree(source, root)
    return root


@pytest.fixture
def fresh_resident_data() -> Iterator[None]:
    """No device-resident split left over from another test (model/device_data.py keeps
    them per process); use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from model.device_data import release_resident

    release_resident()
    yield
    release_resident()
