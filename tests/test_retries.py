"""Runs that raise are retried from their checkpoint, then FAILED; stops are never failures;
non-finite objectives are pruned at their rung. Real SQLite files and Optuna studies; the
worker runs in this process with replayed curves whose runs raise on cue."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from hpo.readers.status import render_status
from hpo.report.collect import collect
from hpo.report.page import failures_section
from hpo.scheduling.spec import load_spec
from hpo.service import db
from hpo.service.learning_curves import LearningCurves
from hpo.service.stops import HARD_STOP_EXIT, StopRequests
from hpo.service.study import open_or_create
from hpo.service.worker import Worker
from studyfiles import ClaimLimitedWorker, epoch_rows, hooked_replays, oracle, stored_rungs, study_rows, write_curves, write_study

GRID = {"lr": [1e-3, 1e-4, 1e-5, 1e-6], "batch_size": [16, 8]}  # 8 trials
BOUNDARIES = [1, 3, 7]  # eta 2, 3 cumulative rungs: 8*1 + 4*2 + 2*4 = 24 epochs
TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 8)] for i in range(8)]


def make_study(tmp: Path, table=TABLE, max_retries: int | None = None, kind="sync-halving"):
    storage = f"sqlite:///{tmp / 'study.db'}"
    path = write_study(tmp / "s.toml", grid=GRID, rungs=3, kind=kind, storage=storage,
                       extra="epochs = 7" if kind == "none" else "")
    if max_retries is not None:
        path.write_text(path.read_text().replace("[study]\n", f"[study]\nmax_retries = {max_retries}\n"))
    spec = load_spec(path)
    curves = LearningCurves.load(write_curves(tmp / "c.csv", table, GRID), spec)
    open_or_create(spec, storage)
    return spec, storage, curves


class Faults:
    """Which (trial params, epoch) raise what, and how often (None: every time)."""

    def __init__(self, *plans):
        self.plans = [dict(p) for p in plans]

    def check(self, params: dict, epoch: int) -> None:
        for plan in self.plans:
            if plan["params"] == params and plan["epoch"] == epoch and plan.get("times", 1) != 0:
                if plan.get("times") is not None:
                    plan["times"] -= 1
                raise plan.get("error", RuntimeError)(plan.get("message", "injected fault"))


def flaky_factory(spec, curves, faults: Faults, before_epoch=None):
    def hook(params, epoch):
        if before_epoch is not None:
            before_epoch(params, epoch)
        faults.check(params, epoch)

    return hooked_replays(spec, curves, hook)


def trial_row(storage, number):
    return next(r for r in study_rows(storage, db.trials, "blog") if r.number == number)


def params_of(number):
    from studyfiles import grid_points
    return grid_points(GRID)[number]


def winner_of_the_table():
    rungs, spent = oracle(TABLE, 2, BOUNDARIES)
    return rungs, spent


def test_a_run_that_raises_once_is_retried_from_its_checkpoint_as_if_nothing_happened(tmp_path):
    spec, storage, curves = make_study(tmp_path)
    expected, spent = winner_of_the_table()
    survivor = expected[0][2][0]  # goes on to rung 1, which trains its epochs 2 and 3
    faults = Faults({"params": params_of(survivor), "epoch": 2, "times": 1})
    first = ClaimLimitedWorker.attach(spec, storage, flaky_factory(spec, curves, faults),
                                      poll_seconds=0.0, claims=3)
    assert first.run() == 0
    assert Worker.attach(spec, storage, flaky_factory(spec, curves, faults), poll_seconds=0.0).run() == 0

    assert stored_rungs(storage, "blog") == expected
    kept = [r for r in epoch_rows(storage, "blog") if r.kept]
    assert len(kept) == spent == 24  # epoch 1 of the retried trial was not trained again
    assert sorted((r.number, r.epoch) for r in kept) == sorted({(r.number, r.epoch) for r in kept})
    row = trial_row(storage, survivor)
    error = json.loads(row.error_json)
    assert row.failures == 1 and row.state in ("complete", "pruned")
    assert error["type"] == "RuntimeError" and error["epoch"] == 2 and error["host"]
    assert error["final"] is False
    study = optuna.load_study(study_name="blog", storage=storage)
    assert study.best_trial.number == expected[-1][2][0]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert f"trial {survivor} recovered: RuntimeError in epoch 2" in render_status(spec, storage)


def test_a_run_that_always_raises_fails_after_max_retries_and_halving_goes_on(tmp_path):
    spec, storage, curves = make_study(tmp_path, max_retries=1)
    expected, _ = winner_of_the_table()
    victim = expected[0][2][0]  # the best of rung 0: rung 1 must be decided without it
    faults = Faults({"params": params_of(victim), "epoch": 2, "times": None, "message": "disk on fire"})
    assert Worker.attach(spec, storage, flaky_factory(spec, curves, faults), poll_seconds=0.0).run() == 0

    row = trial_row(storage, victim)
    assert row.state == "failed" and row.failures == 2  # one run, one retry
    error = json.loads(row.error_json)
    assert error == {**error, "type": "RuntimeError", "message": "disk on fire", "epoch": 2,
                     "final": True, "failures": 2}
    rungs = stored_rungs(storage, "blog")
    assert len(rungs) == 3
    assert victim not in rungs[1][1]  # compared without the failed trial
    others = [n for n in expected[1][1] if n != victim]
    assert rungs[1][1] == sorted(others)
    assert rungs[1][2] == sorted(others, key=lambda n: (-TABLE[n][2], n))[:len(others) // 2]
    study = optuna.load_study(study_name="blog", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states[victim] == optuna.trial.TrialState.FAIL
    assert study.best_trial.number == rungs[-1][2][0]

    status = render_status(spec, storage)
    assert f"trial {victim} FAILED: RuntimeError in epoch 2" in status and "disk on fire" in status
    assert "2 runs failed, final" in status
    section = failures_section(collect("blog", storage))
    assert f"trial {victim}</b>" in section and "disk on fire" in section
    assert "rung 1 (epoch 3) was decided over the other trials" in section


def test_out_of_memory_fails_at_once_naming_the_batch_size(tmp_path):
    import torch

    spec, storage, curves = make_study(tmp_path, max_retries=2)
    faults = Faults({"params": params_of(1), "epoch": 1, "times": None,
                     "error": torch.cuda.OutOfMemoryError, "message": "CUDA out of memory. Tried"})
    assert Worker.attach(spec, storage, flaky_factory(spec, curves, faults), poll_seconds=0.0).run() == 0
    row = trial_row(storage, 1)
    error = json.loads(row.error_json)
    assert row.state == "failed" and row.failures == 1 and error["final"]
    assert f"batch size {params_of(1)['batch_size']}" in error["message"]
    assert "out of memory at batch size 8" in render_status(spec, storage)


def test_an_error_raised_because_of_a_stop_releases_the_trial(tmp_path):
    spec, storage, curves = make_study(tmp_path)
    stops = StopRequests()

    def loader_dies_with_the_signal(params, epoch):
        if epoch == 1 and params == params_of(2):
            stops.request()  # the signal ...
            raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Terminated")

    worker = Worker.attach(spec, storage, flaky_factory(spec, curves, Faults(), loader_dies_with_the_signal),
                    poll_seconds=0.0, stops=stops)
    assert worker.run() == 0
    row = trial_row(storage, 2)
    assert row.state == "waiting" and row.lease_owner is None and not row.failures
    assert row.error_json is None
    assert not [r for r in study_rows(storage, db.trials, "blog") if r.state in ("failed", "running")]


def test_a_second_stop_abandons_the_epoch_releases_and_exits_non_zero(tmp_path, caplog):
    spec, storage, curves = make_study(tmp_path)
    expected, _ = winner_of_the_table()
    survivor = expected[0][2][0]
    stops = StopRequests()

    def two_signals_inside_epoch_3(params, epoch):
        if epoch == 3 and params == params_of(survivor):
            stops.request()
            stops.request()

    worker = Worker.attach(spec, storage, flaky_factory(spec, curves, Faults(), two_signals_inside_epoch_3),
                    poll_seconds=0.0, stops=stops)
    assert worker.run() == HARD_STOP_EXIT
    row = trial_row(storage, survivor)
    assert row.state == "waiting" and row.lease_owner is None and row.epochs_done == 2
    assert not row.failures
    line = f"hard stop: trial {survivor} its epoch in flight abandoned, released; it is " \
           "resumable from its last durable checkpoint (epoch 2)"
    assert any(line in r.getMessage() for r in caplog.records)
    # ... and it is: another worker finishes the study exactly as planned.
    assert Worker.attach(spec, storage, flaky_factory(spec, curves, Faults()), poll_seconds=0.0).run() == 0
    assert stored_rungs(storage, "blog") == expected
    assert len([r for r in epoch_rows(storage, "blog") if r.kept]) == 24


@pytest.mark.parametrize("kind", ["sync-halving", "asha", "none"])
def test_a_non_finite_objective_is_pruned_at_its_rung_and_never_wins(tmp_path, kind):
    table = [list(curve) for curve in TABLE]
    expected, _ = winner_of_the_table()
    best = expected[-1][2][0]
    for e in range(len(table[best])):
        table[best][e] = math.nan  # the table's winner diverges from its first epoch
    other = expected[0][2][1]
    table[other] = [math.inf] * len(table[other])  # +inf would win a maximized rung
    spec, storage, curves = make_study(tmp_path, table=table, kind=kind)
    assert Worker.attach(spec, storage, flaky_factory(spec, curves, Faults()), poll_seconds=0.0).run() == 0

    rows = {r.number: r for r in study_rows(storage, db.trials, "blog")}
    assert rows[best].state == "pruned" and rows[other].state == "pruned"
    assert rows[best].last_value is None  # stored as NULL, never as NaN
    if kind != "none":  # pruned at its first rung
        assert rows[best].epochs_done == 1 and rows[other].epochs_done == 1
    study = optuna.load_study(study_name="blog", storage=storage)
    winner = study.best_trial
    assert math.isfinite(winner.value) and winner.number not in (best, other)
    assert "non-finite srcc" in render_status(spec, storage)
    values = [r.value for r in epoch_rows(storage, "blog") if r.number == best]
    assert values and all(v is None for v in values)


def test_a_study_started_before_the_new_columns_resumes_after_them(tmp_path):
    spec, storage, curves = make_study(tmp_path)
    assert ClaimLimitedWorker.attach(spec, storage, flaky_factory(spec, curves, Faults()),
                                     poll_seconds=0.0, claims=5).run() == 0
    path = tmp_path / "study.db"
    with sqlite3.connect(path) as conn:  # the table as the release before this one made it
        conn.execute("ALTER TABLE saan_trials DROP COLUMN failures")
        conn.execute("ALTER TABLE saan_trials DROP COLUMN error_json")
    assert "complete: 0  failed: 0" in render_status(spec, storage)  # a reader adds them ...
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(saan_trials)")}
    assert {"failures", "error_json"} <= columns
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE saan_trials DROP COLUMN failures")
        conn.execute("ALTER TABLE saan_trials DROP COLUMN error_json")
    open_or_create(spec, storage)  # ... and so does what launch and worker do first
    assert db.add_missing_columns(sa.create_engine(storage)) == []  # idempotent
    assert Worker.attach(spec, storage, flaky_factory(spec, curves, Faults()), poll_seconds=0.0).run() == 0
    expected, spent = winner_of_the_table()
    assert stored_rungs(storage, "blog") == expected
    assert len([r for r in epoch_rows(storage, "blog") if r.kept]) == spent
