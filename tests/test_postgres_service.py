"""The study service on a real PostgreSQL server: many workers, a kill, a restart."""

from __future__ import annotations

import os
import time

import optuna

from studyfiles import blog_boundaries, cli, epoch_rows, oracle, stored_rungs, write_curves, write_study
from test_faults import TABLE, check_outcome, holder_of_a_trial_mid_rung, kill_one_worker_mid_rung, start_worker


def test_four_workers_on_postgres_reach_the_oracles_decisions(tmp_path, pg_url):
    study = write_study(tmp_path / "blog.toml")
    curves = write_curves(tmp_path / "c.csv", TABLE)
    done = cli("launch", str(study), "--storage", pg_url, "--workers", "4",
               "--replay-curves", str(curves), "--replay-epoch-seconds", "0.05", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    expected, spent = oracle(TABLE, 2, blog_boundaries())
    assert stored_rungs(pg_url, "blog") == expected
    rows = epoch_rows(pg_url, "blog")
    assert len(rows) == spent == 80
    assert len({(r.number, r.epoch) for r in rows}) == 80
    assert len({r.worker for r in rows}) == 4
    password = pg_url.split(":")[2].split("@")[0]
    logs = "".join(p.read_text() for p in tmp_path.glob("**/logs/*.log"))
    status = cli("status", "--study", "blog", "--storage", pg_url)
    exported = cli("export", "--study", "blog", "--storage", pg_url, "-o", str(tmp_path / "best.toml"))
    assert status.returncode == 0 and exported.returncode == 0, status.stderr + exported.stderr
    everything = logs + done.stdout + done.stderr + status.stdout + exported.stdout
    everything += (tmp_path / "best.toml").read_text()
    assert password not in everything
    # The password may come from PGPASSWORD or a file instead of the URL.
    bare = pg_url.replace(f":{password}@", "@")
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    secret = tmp_path / "pgpass"
    secret.write_text(password + "\n")
    for extra in ({"PGPASSWORD": password}, {"SAAN_HPO_PGPASSWORD_FILE": str(secret)}):
        shown = cli("status", "--study", "blog", "--storage", bare, env={**env, **extra})
        assert shown.returncode == 0 and "epochs spent 80" in shown.stdout, shown.stderr
    assert "saan_hpo:***@" in status.stdout and "saan_hpo:***@" in (tmp_path / "best.toml").read_text()
    assert optuna.load_study(study_name="blog", storage=pg_url).best_trial.number == expected[-1][2][0]


def test_sigkilled_worker_on_postgres(tmp_path, pg_url):
    study = write_study(tmp_path / "blog.toml", lease_seconds=2)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    trace = tmp_path / "trace.jsonl"
    kill_one_worker_mid_rung(study, pg_url, curves, trace, tmp_path, 4, 0.1)
    check_outcome(pg_url, trace, max_lost=1)


def test_server_restart_mid_study_is_survived(tmp_path, pg_url, pg_restart):
    study = write_study(tmp_path / "blog.toml", lease_seconds=20)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    trace = tmp_path / "trace.jsonl"
    workers = [start_worker(study, pg_url, curves, trace, tmp_path, 0.1) for _ in range(2)]
    try:
        holder_of_a_trial_mid_rung(pg_url, 1, time.monotonic() + 120)
        pg_restart()
        for w in workers:
            assert w.wait(timeout=240) == 0
    finally:
        for w in workers:
            w.kill()
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "retrying" in logs, "the restart went unnoticed: it happened too late to test anything"
    check_outcome(pg_url, trace, max_lost=2)
