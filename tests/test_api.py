"""The Python API (``hpo.launch`` ...), ``[study] time_budget`` and the trackers (TensorBoard).

Studies replay recorded curves through the real worker on temporary SQLite files.
The time budget runs on a replayed clock: 60 seconds per recorded epoch, so
when the budget runs out is decided by the work done, never by this machine's speed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

import hpo
from model.config import ConfigError
from hpo.scheduling.spec import load_spec
from hpo.scheduling.time_budget import may_claim, parse_duration
from hpo.service import db
from hpo.service.learning_curves import LearningCurves
from hpo.service.study import open_or_create
from hpo.service.trackers import TensorBoardTracker, Tracker, tracker_for
from hpo.service.trial_runs import run_factory
from hpo.service.worker import Worker
from studyfiles import cli, epoch_rows, stored_rungs, study_rows, write_curves

REPO = Path(__file__).resolve().parent.parent
SMALL_GRID = {"lr": [1e-3, 1e-4], "batch_size": [64, 32]}


def study_file(tmp: Path, extra: str = "", grid: dict | None = None, rungs: int = 5) -> Path:
    grid = grid or {"lr": [1e-3, 1e-4, 1e-5, 1e-6], "batch_size": [64, 32, 16, 8]}
    path = tmp / "study.toml"
    path.write_text("\n".join([
        "[study]", 'name = "api"', 'metric = "srcc"', f'storage = "sqlite:///{tmp / "study.db"}"',
        f'artifacts = "{tmp / "artifacts"}"', extra, "", "[grid]",
        *[f"{k} = {v!r}" for k, v in grid.items()], "", "[scheduler]", 'kind = "sync-halving"',
        "eta = 2", f"rungs = {rungs}", 'schedule = "cumulative"']) + "\n")
    return path


def curves_for(tmp: Path, grid: dict | None = None) -> Path:
    table = [[round(0.1 * (i + 1) + 0.01 * e, 4) for e in range(1, 32)] for i in range(16)]
    return write_curves(tmp / "curves.csv", table, grid)


# ---- the README's example ---------------------------------------------------------------------
def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README: the Python API example (after <!-- api-example -->)"
    return match.group(1)


def test_readme_api_example_runs_as_written(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "bench").mkdir()
    shutil.copy(REPO / "studies" / "demo.toml", tmp_path / "studies" / "demo.toml")
    shutil.copy(REPO / "bench" / "demo-curves.csv", tmp_path / "bench" / "demo-curves.csv")
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'runs' / 'demo-replay' / 'study.db'}"
    best = optuna.load_study(study_name="demo", storage=storage).best_trial
    # What the example prints is the stored study: the winner, the report, the exported file.
    assert f"80 of 80 epochs; winner: trial {best.number} " in done.stdout
    assert "{'pruned': 15, 'complete': 1}" in done.stdout
    assert (tmp_path / "reports" / "demo-replay.html").stat().st_size > 100_000
    exported = (tmp_path / "runs" / "demo-replay" / "best.toml").read_text()
    assert f"trial {best.number}," in exported
    assert len(epoch_rows(storage, "demo")) == 80  # the plan, no more


def test_status_and_reading_by_name(tmp_path):
    path = study_file(tmp_path, grid=SMALL_GRID, rungs=2)
    result = hpo.launch(path, replay_curves=curves_for(tmp_path, SMALL_GRID))
    spec = load_spec(path)
    assert result.finished and result.epochs_spent == result.epochs_planned == spec.planned_epochs()
    assert result.trials == {"pruned": 2, "complete": 2} and result.rungs_decided == 2
    by_name = hpo.status("api", storage=spec.storage)
    assert by_name == result
    best = optuna.load_study(study_name="api", storage=spec.storage).best_trial
    assert result.winner["trial"] == best.number and result.winner["value"] == best.value
    with pytest.raises(ValueError, match="storage="):
        hpo.status("api")


# ---- time budget ------------------------------------------------------------------------------
def test_durations_and_the_claim_decision():
    assert [parse_duration(v, "s.toml") for v in (90, 2.5, "90s", "45m", "2h", "1h30m", "1d")] == \
        [90, 2.5, 90, 2700, 7200, 5400, 86400]
    for bad in ("2 hours", "h", "-3s", 0, True, [1]):
        with pytest.raises(ConfigError, match="study.time_budget"):
            parse_duration(bad, "s.toml")
    assert may_claim(1000.0, 1000.0 + 10**9, None)
    assert may_claim(1000.0, 1599.0, 600) and not may_claim(1000.0, 1600.0, 600)


def test_a_bad_time_budget_is_one_line_exit_2(tmp_path):
    path = study_file(tmp_path, 'time_budget = "soon"')
    done = cli("worker", str(path), "--replay-curves", str(curves_for(tmp_path)))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert str(path) in done.stderr and "study.time_budget" in done.stderr
    assert not (tmp_path / "study.db").exists()


def replayed_clock_worker(path: Path, curves: Path, seconds_per_epoch: float = 60.0) -> Worker:
    spec = load_spec(path)
    open_or_create(spec, spec.storage)
    engine = db.create_service_engine(spec.storage)
    with engine.connect() as conn:
        created = conn.execute(sa.select(db.studies.c.created_at)).scalar_one()
    engine.dispose()

    def clock() -> float:  # 60 s per epoch recorded so far
        return created + seconds_per_epoch * len(epoch_rows(spec.storage, spec.name))

    make_run = run_factory(spec, curves=LearningCurves.load(curves, spec))
    return Worker.attach(spec, spec.storage, make_run, poll_seconds=0.01, clock=clock)


def test_time_budget_stops_claiming_and_finishes_the_stint_in_flight(tmp_path):
    # 1000 s = rung 0's 16 epochs (960 s), then one claim of rung 1: epochs 2 and 3. The
    # budget runs out during epoch 2; the stint still trains epoch 3, its rung boundary.
    path = study_file(tmp_path, "time_budget = 1000")
    curves = curves_for(tmp_path)
    worker = replayed_clock_worker(path, curves)
    assert worker.run() == 0
    worker.close()
    storage = load_spec(path).storage
    rows = {r.number: r for r in study_rows(storage, db.trials, "api")}
    assert len(epoch_rows(storage, "api")) == 18
    assert [(r.epochs_done, r.state) for r in rows.values() if r.epochs_done == 3] == [(3, "paused")]
    assert sum(r.state == "waiting" and r.epochs_done == 1 for r in rows.values()) == 7  # promoted, unclaimed
    assert sum(r.state == "pruned" for r in rows.values()) == 8
    assert len(stored_rungs(storage, "api")) == 1  # rung 1 is waiting for its other trials

    # Not part of the study's identity: the same study, with more time, goes on to the end.
    path.write_text(path.read_text().replace("time_budget = 1000", 'time_budget = "3h"'))
    worker = replayed_clock_worker(path, curves)
    assert worker.run() == 0
    worker.close()
    assert len(epoch_rows(storage, "api")) == 80 and len(stored_rungs(storage, "api")) == 5


def test_a_spent_budget_claims_nothing(tmp_path):
    path = study_file(tmp_path, 'time_budget = "1s"')
    worker = replayed_clock_worker(path, curves_for(tmp_path), seconds_per_epoch=0)
    worker.clock = lambda: 10.0**12  # long after the study was created
    assert worker.run() == 0
    worker.close()
    storage = load_spec(path).storage
    assert epoch_rows(storage, "api") == []
    assert {r.state for r in study_rows(storage, db.trials, "api")} == {"waiting"}


# ---- trackers ---------------------------------------------------------------------------------
def test_tensorboard_event_files_hold_every_reported_scalar(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tb"
    path = study_file(tmp_path, f'tensorboard = "{board}"', grid=SMALL_GRID, rungs=2)
    spec = load_spec(path)
    assert isinstance(tracker_for(spec).trackers[0], TensorBoardTracker)
    done = cli("launch", str(path), "--replay-curves", str(curves_for(tmp_path, SMALL_GRID)))
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="api", storage=spec.storage).trials
    assert sorted(p.name for p in board.iterdir()) == [f"trial-{t.number:03d}" for t in trials]
    for t in trials:
        events = EventAccumulator(str(board / f"trial-{t.number:03d}"))
        events.Reload()
        scalars = {e.step: e.value for e in events.Scalars("val/srcc")}
        assert scalars == pytest.approx(t.intermediate_values)


def test_trackers_are_no_ops_when_off_or_not_installed(tmp_path, monkeypatch, caplog):
    off = load_spec(study_file(tmp_path))
    assert type(tracker_for(off)) is Tracker
    on = dataclasses.replace(off, tensorboard=str(tmp_path / "tb"), mlflow=True)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    tracker = tracker_for(on)
    assert type(tracker) is Tracker
    tracker.log_epoch(0, {"lr": 1e-3}, 1, {"srcc": 0.5})  # nothing to do, nothing raised
    assert "tensorboard package is not installed" in caplog.text and "mlflow is not installed" in caplog.text
    assert not (tmp_path / "tb").exists()
