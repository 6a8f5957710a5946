"""Workers that serve a storage, not a file: several studies, one pool, real processes.

Replayed curves, short simulated epochs: what is tested is who trains what and
what each study decides, not training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hpo.scheduling.spec import load_spec
from hpo.service import db
from hpo.service.stored_studies import spec_from_row
from studyfiles import (blog_boundaries, cli, holder_of_a_trial_mid_rung, kill_the_holder_mid_rung,
                        live_processes_naming,
                        oracle, stored_rungs, study_rows, write_curves, write_study)

TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 32)] for i in range(16)]
SMALL = {"lr": [1e-3, 1e-4], "batch_size": [64, 32, 16, 8]}  # 8 points of the same curve table


def three_studies(tmp: Path) -> list[Path]:
    """blog (16 points, eta 2), small (8 points, eta 2, 3 rungs), plain (4 points, no halving)."""
    return [write_study(tmp / "blog.toml", name="blog", lease_seconds=3),
            write_study(tmp / "small.toml", name="small", grid=SMALL, rungs=3, lease_seconds=3),
            write_study(tmp / "plain.toml", name="plain", kind="none",
                        grid={"lr": [1e-5, 1e-6], "batch_size": [64, 32]}, extra="epochs = 6",
                        lease_seconds=3)]


def small_oracle():
    rows = [TABLE[i] for i in range(16) if i < 8]  # SMALL's points are BLOG_GRID's first 8
    return oracle(rows, 2, [1, 3, 7])


def expected_rungs():
    return {"blog": oracle(TABLE, 2, blog_boundaries())[0], "small": small_oracle()[0]}


def kept_pairs(storage: str, study: str) -> list[tuple[int, int]]:
    return [(r.number, r.epoch) for r in study_rows(storage, db.epochs, study) if r.kept]


def check_studies(storage: str, studies: dict[str, int]) -> None:
    """Every study finished with the decisions it makes alone and no epoch kept twice."""
    for name, rungs in expected_rungs().items():
        if name in studies:
            assert stored_rungs(storage, name) == rungs, name
    for name, planned in studies.items():
        pairs = kept_pairs(storage, name)
        assert len(pairs) == len(set(pairs)), f"{name}: an epoch kept twice"
        assert len(pairs) == planned, name
        states = {r.state for r in study_rows(storage, db.trials, name)}
        assert states <= {"complete", "pruned"}, (name, states)


def start_fleet_worker(storage: str, curves: Path, cwd: Path, seconds: float, *extra: str):
    log = open(cwd / f"worker-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", "--storage", storage,
                             "--replay-curves", str(curves), "--replay-epoch-seconds", str(seconds),
                             *extra], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


# ---- one pool, three studies: each decides as it would alone ----------------------------
@pytest.mark.parametrize("workers", [1, 4])
def test_three_studies_on_one_pool_decide_as_alone(tmp_path, workers):
    storage = f"sqlite:///{tmp_path / 'fleet.db'}"
    files = three_studies(tmp_path)
    curves = write_curves(tmp_path / "curves.csv", TABLE)
    done = cli("launch", *map(str, files), "--storage", storage, "--workers", str(workers),
               "--replay-curves", str(curves), "--replay-epoch-seconds", "0.01", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    check_studies(storage, {"blog": 80, "small": 8 + 4 * 2 + 2 * 4, "plain": 4 * 6})
    plain = {r.number: r.last_value for r in study_rows(storage, db.trials, "plain")}
    # plain's points are lr 1e-5, 1e-6 x batch 64, 32: rows 8, 9, 12, 13 of the table
    assert plain == {n: TABLE[row][5] for n, row in enumerate((8, 9, 12, 13))}
    if workers > 1:
        by_worker = {}
        for name in ("blog", "small", "plain"):
            for r in study_rows(storage, db.epochs, name):
                by_worker.setdefault(r.worker, set()).add(name)
        assert any(len(names) > 1 for names in by_worker.values()), "no worker served two studies"
    status = cli("status", "--storage", storage, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    for name in ("blog", "small", "plain"):
        assert any(line.split()[:2] == [name, "finished"] for line in status.stdout.splitlines())
    assert status.stdout.count(" exited ") == workers


# ---- acceptance: SIGKILL one of several workers serving two studies ---------------------
def kill_one_of_three(tmp_path: Path, storage: str) -> None:
    files = three_studies(tmp_path)[:2]
    curves = write_curves(tmp_path / "curves.csv", TABLE)
    made = cli("launch", *map(str, files), "--storage", storage, "--workers", "0", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    workers = [start_fleet_worker(storage, curves, tmp_path, 0.1) for _ in range(3)]
    victim = kill_the_holder_mid_rung(workers, storage)
    check_studies(storage, {"blog": 80, "small": 24})
    rows = study_rows(storage, db.epochs, victim.study)
    redone = [r.epoch for r in rows if r.number == victim.number and r.kept]
    assert len(redone) == len(set(redone))


def test_sigkill_mid_epoch_the_others_finish_both_studies_sqlite(tmp_path):
    kill_one_of_three(tmp_path, f"sqlite:///{tmp_path / 'fleet.db'}")


def test_sigkill_mid_epoch_the_others_finish_both_studies_postgres(tmp_path, pg_url):
    kill_one_of_three(tmp_path, pg_url)


def test_a_pool_of_several_studies_is_supervised_like_one_study(tmp_path):
    """SIGTERM to the process group of ``launch A B --workers 2``, then to launch alone:
    each time every worker releases its trial and exits, launch exits 0, nothing is left
    running; a relaunch finishes both studies as they would alone."""
    storage = f"sqlite:///{tmp_path / 'fleet.db'}"
    files = three_studies(tmp_path)[:2]
    curves = write_curves(tmp_path / "curves.csv", TABLE)
    command = [sys.executable, "-m", "hpo.cli", "launch", *map(str, files), "--storage", storage,
               "--workers", "2", "--replay-curves", str(curves), "--replay-epoch-seconds", "0.05"]
    for whom in ("group", "launch"):
        since = len(study_rows(storage, db.epochs, "blog")) if whom == "launch" else 0
        launch = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if len(study_rows(storage, db.epochs, "blog")) > since + 3:
                    break
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                pass  # tables not created yet
            time.sleep(0.05)
        if whom == "group":
            os.killpg(launch.pid, signal.SIGTERM)
        else:
            launch.send_signal(signal.SIGTERM)
        out, _ = launch.communicate(timeout=120)
        assert launch.returncode == 0, out[-2000:]
        assert "stopped by a signal" in out
        assert live_processes_naming(storage) == [], whom  # no orphaned worker
        for name in ("blog", "small"):
            trials = study_rows(storage, db.trials, name)
            assert not [t.number for t in trials if t.state in ("running", "failed") or t.lease_owner]
        engine = db.create_service_engine(storage)
        with engine.connect() as conn:
            states = conn.execute(sa.select(db.workers.c.state)).scalars().all()
        engine.dispose()
        assert states and set(states) == {"exited"}
    finish = cli("launch", *map(str, files), "--storage", storage, "--workers", "2",
                 "--replay-curves", str(curves), "--replay-epoch-seconds", "0.01", cwd=tmp_path)
    assert finish.returncode == 0, finish.stderr[-2000:]
    check_studies(storage, {"blog": 80, "small": 24})


# ---- what a worker without a study file refuses ------------------------------------------
def test_a_worker_lacking_the_data_root_says_so_and_claims_nothing(tmp_path):
    storage = f"sqlite:///{tmp_path / 'fleet.db'}"
    study = write_study(tmp_path / "real.toml", name="real")
    study.write_text(study.read_text() + '\n[data]\nroot = "/on/the/launcher/BAID"\n')
    assert cli("launch", str(study), "--storage", storage, "--workers", "0",
               cwd=tmp_path).returncode == 0
    before = [tuple(r) for r in study_rows(storage, db.trials, "real")]
    env = {k: "" for k in ("SAAN_HPO_DATA_ROOT",)}
    refused = cli("worker", "--storage", storage, cwd=tmp_path, env=env)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "'real'" in lines[0] and "--data-root" in lines[0], refused.stderr
    assert [tuple(r) for r in study_rows(storage, db.trials, "real")] == before
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.workers)).scalar_one() == 0
    engine.dispose()
    missing = cli("worker", "--storage", storage, "--data-root", str(tmp_path / "nowhere"),
                  cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere" in missing.stderr
    unknown = cli("worker", "--storage", storage, "--study", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr


# ---- the stored study is enough to serve it -------------------------------------------------
def test_the_stored_row_rebuilds_the_spec_and_priority_is_not_hashed(tmp_path):
    storage = f"sqlite:///{tmp_path / 'fleet.db'}"
    path = write_study(tmp_path / "blog.toml", name="blog", lease_seconds=7)
    tensorboard = tmp_path / "tb"
    path.write_text(path.read_text().replace(
        'metric = "srcc"', f'metric = "srcc"\npriority = 3\ndescription = "d"\ntime_budget = "1h30m"\n'
        f'max_retries = 5\nmlflow = true\ntensorboard = "{tensorboard}"'))
    assert cli("launch", str(path), "--storage", storage, "--workers", "0").returncode == 0
    spec = load_spec(path)
    row = study_rows_by_name(storage)["blog"]
    rebuilt = spec_from_row(row, storage)
    assert rebuilt.spec_hash() == spec.spec_hash()
    assert (rebuilt.priority, rebuilt.lease_seconds, rebuilt.description) == (3, 7.0, "d")
    # What a fleet worker with no study file needs to serve the study as its author meant.
    assert (rebuilt.time_budget, rebuilt.max_retries, rebuilt.mlflow, rebuilt.tensorboard) == \
        (5400.0, 5, True, str(tensorboard))
    # A new priority is a new order of work, not a new study: accepted and stored.
    path.write_text(path.read_text().replace("priority = 3", "priority = -1"))
    assert cli("launch", str(path), "--storage", storage, "--workers", "0").returncode == 0
    assert study_rows_by_name(storage)["blog"].priority == -1
    # A new grid still is refused, with a study file as before.
    path.write_text(path.read_text().replace("lr = [", "lr = [0.5, "))
    refused = cli("worker", str(path), "--storage", storage)
    assert refused.returncode == 2 and "grid" in refused.stderr


def study_rows_by_name(storage: str) -> dict:
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.studies)).all()
    engine.dispose()
    return {r.name: r for r in rows}


def test_a_study_started_before_the_new_columns_resumes_under_a_fleet_worker(tmp_path):
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    study = write_study(tmp_path / "blog.toml", name="blog", lease_seconds=3)
    curves = write_curves(tmp_path / "curves.csv", TABLE)
    assert cli("launch", str(study), "--storage", storage, "--workers", "0",
               cwd=tmp_path).returncode == 0  # only launch creates a study
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(study), "--storage",
                              storage, "--replay-curves", str(curves), "--replay-epoch-seconds",
                              "0.05"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        holder_of_a_trial_mid_rung(storage, 2, time.monotonic() + 120)  # well into the study
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
    assert 0 < len(kept_pairs(storage, "blog")) < 80
    # What the release before this one left: the studies table without the new columns.
    engine = sa.create_engine(storage)
    with engine.begin() as conn:
        for column in ("settings_json", "priority"):
            conn.exec_driver_sql(f"ALTER TABLE saan_studies DROP COLUMN {column}")
    engine.dispose()
    served = cli("worker", "--storage", storage, "--replay-curves", str(curves), cwd=tmp_path)
    assert served.returncode == 0, served.stderr[-2000:]
    check_studies(storage, {"blog": 80})
    row = study_rows_by_name(storage)["blog"]
    assert row.priority is None and row.settings_json is None  # read as the defaults


def test_long_trials_are_trained_in_stints_and_end_where_they_would_in_one(tmp_path):
    storage = f"sqlite:///{tmp_path / 'fleet.db'}"
    plain = three_studies(tmp_path)[2]  # 4 points, kind none, 6 epochs each
    curves = write_curves(tmp_path / "curves.csv", TABLE)
    assert cli("launch", str(plain), "--storage", storage, "--workers", "0").returncode == 0
    served = cli("worker", "--storage", storage, "--replay-curves", str(curves),
                 "--stint-epochs", "2", cwd=tmp_path)
    assert served.returncode == 0, served.stderr[-2000:]
    trials = study_rows(storage, db.trials, "plain")
    assert {r.number: r.claims for r in trials} == {n: 3 for n in range(4)}  # 6 epochs / 2
    assert {r.number: r.last_value for r in trials} == {
        n: TABLE[row][5] for n, row in enumerate((8, 9, 12, 13))}
    assert {r.state for r in trials} == {"complete"}
    pairs = kept_pairs(storage, "plain")
    assert sorted(pairs) == [(n, e) for n in range(4) for e in range(1, 7)]
