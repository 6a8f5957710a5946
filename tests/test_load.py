"""PostgreSQL under load: connection slots running out, and bench/load.py's fleet at 16 workers.

Real PostgreSQL, real worker processes replaying curves. A refused connection
(the server's max_connections or a database's CONNECTION LIMIT reached) is
waited out with backoff and said in one line per worker; the study goes on as
if nothing happened. Timing goals are bench/load.py's, never asserted here.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hpo.service import db, refusals
from studyfiles import blog_boundaries, cli, oracle, stored_rungs, study_rows, write_curves, write_study

TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 32)] for i in range(16)]
REFUSED = "PostgreSQL refused a connection"
TRACEBACK = "Traceback (most recent call last)"


def test_a_refused_connection_is_told_apart_from_other_faults():
    server = 'connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
    refusals = {
        server + "sorry, too many clients already": "sorry, too many clients already",
        server + 'too many connections for database "hpo"': 'too many connections for database "hpo"',
        server + 'too many connections for role "saan"': 'too many connections for role "saan"',
        server + "remaining connection slots are reserved for roles with the SUPERUSER attribute":
            "remaining connection slots are reserved for roles with the SUPERUSER attribute",
    }
    others = [server + "Connection refused", "FATAL: the database system is starting up",
              "cannot execute INSERT in a read-only transaction", "database is locked"]
    for message, reason in refusals.items():
        assert db.refused_connection(sa.exc.OperationalError("connect", {}, Exception(message))) == reason
    for message in others:
        assert db.refused_connection(sa.exc.OperationalError("connect", {}, Exception(message))) is None


def test_a_refusal_that_outlasts_the_deadline_is_one_storage_error(caplog):
    message = 'connection to server at "10.0.0.5", port 5432 failed: FATAL:  sorry, too many clients already'

    def refused():
        raise sa.exc.OperationalError("connect", {}, Exception(message))

    refusals.REFUSED.last = None  # a new outage in this process
    for _ in range(2):  # two waits, several retries each, one outage: one line
        with pytest.raises(db.StorageError, match="refused connections for .*raise max_connections"):
            db.retrying(refused, first_wait=0.01, deadline=0.05, log=logging.getLogger("test"))
    lines = [r.getMessage() for r in caplog.records if REFUSED in r.getMessage()]
    assert len(lines) == 1, lines
    assert "sorry, too many clients already" in lines[0] and "retrying with backoff" in lines[0]


def test_workers_refused_by_the_connection_limit_say_so_once_and_finish_the_study(tmp_path, pg_url):
    """Three workers (two serving the storage, one given the study file) on a database that
    admits a few connections: the refused ones each log one line and wait; the study ends
    with the decisions it makes alone, nothing FAILED, no traceback."""
    study = write_study(tmp_path / "blog.toml", lease_seconds=3)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    made = cli("launch", str(study), "--storage", pg_url, "--workers", "0", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    name = sa.make_url(pg_url).database
    with_limit(pg_url, name, 5)  # one worker holds 2 to 5 (two pools): the others wait their turn
    replay = ["--replay-curves", str(curves), "--replay-epoch-seconds", "0.02"]
    commands = [["worker", "--storage", pg_url, *replay]] * 2
    commands.append(["worker", str(study), "--storage", pg_url, *replay])
    logs = [tmp_path / f"worker-{i}.log" for i in range(len(commands))]
    workers = []
    for command, log in zip(commands, logs):
        with open(log, "w") as out:
            workers.append(subprocess.Popen([sys.executable, "-m", "hpo.cli", *command],
                                            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT))
    try:
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0, 0], "\n====\n".join(t[-3000:] for t in texts)
    assert not any(TRACEBACK in t for t in texts)
    refused = [t.count(REFUSED) for t in texts]
    assert sum(refused) >= 1, "no worker was refused: the limit tested nothing"
    assert max(refused) == 1, refused  # one line per worker per outage, not one per retry
    line = next(line for t in texts for line in t.splitlines() if REFUSED in line)
    assert f'too many connections for database "{name}"' in line and "retrying with backoff" in line
    assert f"/{name}:" in line and "max_connections" in line
    assert stored_rungs(pg_url, "blog") == oracle(TABLE, 2, blog_boundaries())[0]
    trials = study_rows(pg_url, db.trials, "blog")
    assert {t.state for t in trials} <= {"complete", "pruned"}
    kept = [(r.number, r.epoch) for r in study_rows(pg_url, db.epochs, "blog") if r.kept]
    assert len(kept) == len(set(kept)) == 80


def with_limit(url: str, name: str, limit: int) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" CONNECTION LIMIT {limit}'))
    engine.dispose()


@pytest.mark.slow
def test_sixteen_workers_two_killed_keep_every_epoch_once_and_decide_as_alone(pg_server_url):
    """bench/load.py's run at 16 workers (the benchmark itself runs 64): the three published
    studies, two workers SIGKILLed while holding a trial and replaced."""
    from bench.load import run_load

    started = time.monotonic()
    figures = run_load(pg_server_url.render_as_string(hide_password=False), workers=16,
                       epoch_seconds=0.05, kills=2, say=lambda line: None)
    report = "\n".join(figures.lines()) + f"\n({time.monotonic() - started:.0f} s)"
    assert figures.duplicate_epochs == 0, report
    assert figures.kept_epochs == figures.planned_epochs == 740, report
    assert figures.failed_trials == 0 and figures.open_trials == 0, report
    assert figures.tracebacks == 0 and not figures.bad_exits, report
    assert figures.kills == 2, report
    assert figures.same_as_alone, report
    print(report)
