"""Workers killed or stopped mid-study, on a real SQLite file with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import sqlalchemy as sa

from hpo.service import db
from hpo.service.stops import HARD_STOP_EXIT
from studyfiles import (blog_boundaries, create_study, epoch_rows, holder_of_a_trial_mid_rung,
                        kill_the_holder_mid_rung, oracle, stored_rungs, write_curves, write_study)

TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 32)] for i in range(16)]


def start_worker(study: Path, storage: str, curves: Path, trace: Path, cwd: Path, seconds: float):
    create_study(study, storage)  # only launch creates; workers attach
    env = {**os.environ, "SAAN_HPO_REPLAY_TRACE": str(trace)}
    log = open(cwd / f"worker-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(study), "--storage", storage,
                             "--replay-curves", str(curves), "--replay-epoch-seconds", str(seconds)],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def check_outcome(storage: str, trace: Path, max_lost: int) -> None:
    expected, spent = oracle(TABLE, 2, blog_boundaries())
    assert stored_rungs(storage, "blog") == expected
    kept = [r for r in epoch_rows(storage, "blog") if r.kept]
    assert sorted((r.number, r.epoch) for r in kept) == sorted(set((r.number, r.epoch) for r in kept))
    assert len(kept) == spent == 80
    begun = [json.loads(line) for line in trace.read_text().splitlines()]
    assert 80 <= len(begun) <= 80 + max_lost, f"{len(begun) - 80} epochs of work lost"
    study = optuna.load_study(study_name="blog", storage=storage)
    winner = expected[-1][2][0]
    assert study.best_trial.number == winner
    for t in study.trials:  # nothing reported lost or duplicated: one value per epoch, the table's
        last = max(t.intermediate_values)
        assert t.intermediate_values == {e: TABLE[t.number][e - 1] for e in range(1, last + 1)}


def kill_one_worker_mid_rung(study: Path, storage: str, curves: Path, trace: Path, cwd: Path,
                             n_workers: int, seconds: float):
    """Start workers, SIGKILL one while it holds a trial in the middle of rung 2, let the rest finish."""
    workers = [start_worker(study, storage, curves, trace, cwd, seconds) for _ in range(n_workers)]
    victim = kill_the_holder_mid_rung(workers, storage)
    return victim


def test_sigkilled_worker_is_taken_over_from_its_last_checkpoint(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, lease_seconds=3)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    trace = tmp_path / "trace.jsonl"
    victim = kill_one_worker_mid_rung(study, storage, curves, trace, tmp_path, 2, 0.15)
    rows = epoch_rows(storage, "blog")
    victim_epochs = sorted(r.epoch for r in rows if r.number == victim.number)
    assert victim_epochs == sorted(set(victim_epochs)), "an epoch of the victim's trial was redone"
    check_outcome(storage, trace, max_lost=1)


def test_one_sigusr1_is_a_hard_stop(tmp_path):
    """What launch forwards as a hard stop: one signal, never merged with the SIGTERM before it."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, lease_seconds=60)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    worker = start_worker(study, storage, curves, tmp_path / "trace.jsonl", tmp_path, 0.2)
    try:
        held = holder_of_a_trial_mid_rung(storage, 2, time.monotonic() + 120)
        worker.send_signal(signal.SIGUSR1)
        assert worker.wait(timeout=30) == HARD_STOP_EXIT
    finally:
        worker.kill()
    log = next(tmp_path.glob("worker-*.log")).read_text()
    assert f"hard stop: trial {held.number} its epoch in flight abandoned, released" in log
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.trials).where(db.trials.c.number == held.number)).one()
    engine.dispose()
    assert row.state == "waiting" and row.lease_owner is None
    assert row.epochs_done == held.epochs_done  # the epoch in flight was abandoned


def test_sigterm_finishes_the_epoch_releases_the_trial_and_exits_0(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, lease_seconds=60)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    trace = tmp_path / "trace.jsonl"
    first = start_worker(study, storage, curves, trace, tmp_path, 0.1)
    try:
        held = holder_of_a_trial_mid_rung(storage, 2, time.monotonic() + 120)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.trials)).all()
    engine.dispose()
    # Released, not left to its 60 s lease: the next worker can take it at once.
    assert not [r for r in rows if r.state == "running" or r.lease_owner]
    row = next(r for r in rows if r.number == held.number)
    assert row.epochs_done > held.epochs_done  # the epoch in flight was finished and kept
    assert row.state in ("waiting", "paused")
    second = start_worker(study, storage, curves, trace, tmp_path, 0.0)
    assert second.wait(timeout=120) == 0
    check_outcome(storage, trace, max_lost=0)
