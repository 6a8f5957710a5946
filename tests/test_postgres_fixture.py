"""The PostgreSQL fixtures talk to a real server, and a restart does not lose data."""

from __future__ import annotations

import sqlalchemy as sa


def test_pg_url_is_a_fresh_database_on_a_real_server_that_survives_a_restart(pg_url, pg_restart):
    engine = sa.create_engine(pg_url, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT version()")).scalar_one().startswith("PostgreSQL ")
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            assert database == sa.make_url(pg_url).database
            assert database.startswith("saan_hpo_t_")
            tables = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert tables == 0, "the database should be fresh"
            conn.execute(sa.text("CREATE TABLE lease (trial int PRIMARY KEY, worker text)"))
            conn.execute(sa.text("INSERT INTO lease VALUES (1, 'w1'), (2, 'w2')"))

        pg_restart()  # the pooled connection is now dead; pool_pre_ping must replace it

        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT trial, worker FROM lease ORDER BY trial")).all()
        assert [tuple(r) for r in rows] == [(1, "w1"), (2, "w2")]
    finally:
        engine.dispose()


def test_each_test_gets_its_own_database(pg_url, pg_server_url):
    assert sa.make_url(pg_url).database != pg_server_url.database
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('lease')")).scalar_one() is None
    finally:
        engine.dispose()


def test_sqlite_url_is_a_writable_file_in_tmp_path(sqlite_url, tmp_path):
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
    finally:
        engine.dispose()
    assert (tmp_path / "study.db").exists()
