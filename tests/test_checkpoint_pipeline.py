"""The worker writes each epoch's checkpoint while the next epoch trains, yet records an
epoch only once its checkpoint is durable; a stint never ends with a write in flight.
Real SQLite file and Optuna study, the worker in this process, replayed curves, and an
artifact store whose writes are slow (what a network filesystem or a 225 MB SAAN
checkpoint is to a fast GPU epoch)."""

from __future__ import annotations

import threading
import time

from optuna.artifacts import FileSystemArtifactStore

from hpo.scheduling.spec import load_spec
from hpo.service import db, optuna_link
from hpo.service.checkpoints import CheckpointStore
from hpo.service.coordination import Coordinator
from hpo.service.learning_curves import LearningCurves
from hpo.service.stops import HARD_STOP_EXIT, StopRequests
from hpo.service.study import open_or_create
from hpo.service.worker import Worker
from studyfiles import epoch_rows, grid_points, hooked_replays, oracle, stored_rungs, study_rows, write_curves, write_study

GRID = {"lr": [1e-3, 1e-4], "batch_size": [16, 8]}  # 4 trials
BOUNDARIES = [1, 3, 7]  # eta 2, 3 cumulative rungs: 4*1 + 2*2 + 1*4 = 16 epochs
TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 8)] for i in range(4)]
WRITE_SECONDS = 0.15
EPOCH_SECONDS = 0.05


class SlowStore(FileSystemArtifactStore):
    """A folder store whose writes take WRITE_SECONDS; remembers when each one was complete."""

    def __init__(self, root):
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(str(root))
        self.written: dict[str, float] = {}
        self.lock = threading.Lock()

    def write(self, artifact_id, content_body):
        time.sleep(WRITE_SECONDS)
        super().write(artifact_id, content_body)
        with self.lock:
            self.written[artifact_id] = time.monotonic()


class CheckingCoordinator(Coordinator):
    """Records, for every epoch it is asked to store, whether its checkpoint was complete."""

    def __init__(self, engine, spec, store: SlowStore):
        super().__init__(engine, spec)
        self.store = store
        self.recorded: list[tuple[int, int, bool, float]] = []  # number, epoch, durable, when

    def record_epoch(self, worker_id, number, epoch, value, metrics, started_at, checkpoint_id):
        with self.store.lock:
            durable = checkpoint_id in self.store.written
        self.recorded.append((number, epoch, durable, time.monotonic()))
        return super().record_epoch(worker_id, number, epoch, value, metrics, started_at, checkpoint_id)


def timed_factory(spec, curves, began: dict, before_epoch=None):
    """Replays that note when each of their epochs begins."""
    def hook(params, epoch):
        if before_epoch is not None:
            before_epoch(params, epoch)
        began[(tuple(sorted(params.items())), epoch)] = time.monotonic()

    return hooked_replays(spec, curves, hook, EPOCH_SECONDS)


def slow_worker(tmp_path, before_epoch=None, stops=None):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    spec = load_spec(write_study(tmp_path / "s.toml", grid=GRID, rungs=3, storage=storage))
    curves = LearningCurves.load(write_curves(tmp_path / "c.csv", TABLE, GRID), spec)
    open_or_create(spec, storage)
    store = SlowStore(tmp_path / "artifacts")
    coordinator = CheckingCoordinator(db.create_service_engine(storage), spec, store)
    began: dict = {}
    worker = Worker(spec, coordinator, CheckpointStore(store, spec.name),
                    optuna_link.OptunaStudy.open(spec, storage),
                    timed_factory(spec, curves, began, before_epoch), poll_seconds=0.0,
                    stops=stops)
    return worker, storage, coordinator, store, began


def key(number: int, epoch: int):
    return tuple(sorted(grid_points(GRID)[number].items())), epoch


def test_the_next_epoch_trains_while_the_checkpoint_is_written_and_values_wait_for_it(tmp_path):
    worker, storage, coordinator, store, began = slow_worker(tmp_path)
    try:
        assert worker.run() == 0
    finally:
        worker.close()

    # Every epoch was recorded, and only once its checkpoint was complete.
    assert coordinator.recorded and all(durable for _, _, durable, _ in coordinator.recorded)
    # Within a stint, the next epoch began before the previous epoch was recorded: its
    # checkpoint was being written meanwhile (a rung-1 stint trains epochs 2 and 3).
    overlapped = [(n, e) for n, e, _, when in coordinator.recorded
                  if key(n, e + 1) in began and began[key(n, e + 1)] < when]
    assert overlapped, coordinator.recorded
    # ... and nothing else changed: the oracle's decisions, the planned epochs, one file per trial.
    expected, spent = oracle(TABLE, 2, BOUNDARIES)
    assert stored_rungs(storage, "blog") == expected
    kept = [(r.number, r.epoch) for r in epoch_rows(storage, "blog") if r.kept]
    assert len(kept) == len(set(kept)) == spent
    trials = study_rows(storage, db.trials, "blog")
    referenced = {t.checkpoint_id for t in trials if t.checkpoint_id}
    assert {p.name for p in (tmp_path / "artifacts").iterdir()} == referenced


def test_a_hard_stop_while_a_checkpoint_is_written_records_it_before_releasing(tmp_path):
    stops = StopRequests()
    expected, _ = oracle(TABLE, 2, BOUNDARIES)
    survivor = expected[0][2][0]  # trains epochs 2 and 3 in its rung-1 stint

    def two_signals_as_epoch_3_begins(params, epoch):
        # Epoch 2's checkpoint is still being written (WRITE_SECONDS) when these land.
        if epoch == 3 and params == grid_points(GRID)[survivor]:
            stops.request()
            stops.request()

    worker, storage, coordinator, store, _ = slow_worker(tmp_path, two_signals_as_epoch_3_begins, stops)
    try:
        assert worker.run() == HARD_STOP_EXIT
    finally:
        worker.close()
    row = next(t for t in study_rows(storage, db.trials, "blog") if t.number == survivor)
    assert row.state == "waiting" and row.lease_owner is None
    assert row.epochs_done == 2, "epoch 2, written in the background, was lost"
    assert row.checkpoint_id in store.written and "-e2-" in row.checkpoint_id
