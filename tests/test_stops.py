"""Stops are never failures: real ``launch`` / ``worker`` processes stopped by signals at
several moments, then relaunched; the result must equal an uninterrupted run's, value for value.

The chains of stops (which moment, which signal, whom) are about claims, leases and checkpoints,
not training: their workers replay curves (``--replay-curves``, 0.4 s epochs, checkpoints written
and resumed as in training) on SQLite and PostgreSQL. Where the trainer and its DataLoader worker
processes (``num_workers = 2``) are what a stop must reach, a tiny SAAN trains for real: a
worker's process group interrupted, a launch SIGKILLed, and loader workers changing nothing.

Every launch or worker that is signalled or killed is a real process. What only computes values
-- the replayed baseline, a replayed chain's final relaunch, creating a study with
``--workers 0`` -- runs ``hpo.cli.main`` in this process, and the trained study's final relaunch
is one process (``--workers 1``): each process costs about a CPU-second of start-up, or several
where it imports torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from hpo.service import db
from hpo.service.stops import HARD_STOP_EXIT
from studyfiles import in_process, live_processes_naming, write_curves

PLANNED = 8  # 4 configurations, eta 2, rungs at epochs 1 and 3: 4*1 + 2*2
# The replayed chains' grid: 8 configurations, 8*1 + 4*2 = 16 epochs, so that every moment of a
# chain still comes after the stops before it (each graceful stop finishes the epochs in flight).
REPLAY_LR = [1e-3, 1e-4, 1e-5, 1e-6]
REPLAY_PLANNED = 16

STUDY = """
[study]
name = "stops"
metric = "srcc"
lease_seconds = 60
storage = "{storage}"
artifacts = "{artifacts}"

[grid]
lr = {lr}
batch_size = [8, 4]

[scheduler]
kind = "sync-halving"
eta = 2
rungs = 2
min_epochs = 1
schedule = "cumulative"

[data]
root = "{data}"
synthetic = true
synthetic_n = 40
synthetic_size = 32
image_size = 32
num_workers = {num_workers}

[model]
backbone = "resnet18"
pretrained = "none"
head_hidden = 32

[trainer]
schedule = "constant"
seed = 0
deterministic = true
"""


def write_study(folder: Path, data: Path, storage: str | None = None, num_workers: int = 2,
                lr: list[float] = (1e-3, 1e-4)) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{folder / 'study.db'}"
    path = folder / "stops.toml"
    path.write_text(STUDY.format(storage=storage, artifacts=folder / "artifacts", data=data,
                                 num_workers=num_workers, lr=list(lr)))
    return path, storage


REPLAY_EPOCH_SECONDS = 0.4  # long enough to stop "inside" an epoch, 0.2 s after it began


def write_replay_curves(path: Path) -> Path:
    """A curve per configuration of the replayed grid, for epochs 1-3; rung margins of 0.1."""
    table = [[0.1 * (i + 1) + 0.01 * epoch for epoch in (1, 2, 3)] for i in range(2 * len(REPLAY_LR))]
    return write_curves(path, table, grid={"lr": REPLAY_LR, "batch_size": [8, 4]})


def start(command: str, study: Path, *args: str) -> subprocess.Popen:
    """``saan-hpo <command>`` in its own session, so the test can signal its process group."""
    log = open(study.parent / f"{command}-{time.monotonic_ns()}.log", "w")
    # One thread everywhere: float sums are only bitwise reproducible at a fixed thread count
    # (launch --workers 2 would otherwise give its workers fewer threads than the baseline).
    env = {**os.environ, "SAAN_HPO_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", command, str(study), *args],
                            cwd=study.parent, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def rows(storage: str, table: sa.Table) -> list:
    engine = db.create_service_engine(storage)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(table).where(table.c.study == "stops")).all()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # tables not created yet
        return []
    finally:
        engine.dispose()


def wait_for(what, storage: str, condition, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition(storage)
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def processes_of(study: Path) -> list[int]:
    """Live processes started for this study: workers and their loader workers."""
    return live_processes_naming(str(study))


def check_stopped_cleanly(storage: str, study: Path) -> None:
    """After a stop: nothing FAILED, nothing running or leased, no process left behind."""
    trials = rows(storage, db.trials)
    assert not [t.number for t in trials if t.state == "failed"]
    assert not [t.number for t in trials if t.state == "running" or t.lease_owner]
    assert processes_of(study) == []
    assert all(w.state == "exited" for w in rows(storage, db.workers))


def outcome(storage: str) -> dict:
    """Every trial's reported values and the winner: what an interrupted study must reproduce."""
    study = optuna.load_study(study_name="stops", storage=storage)
    best = study.best_trial
    return {"values": {t.number: dict(t.intermediate_values) for t in study.trials},
            "states": {t.number: t.state.name for t in study.trials},
            "winner": (best.number, best.value)}


def check_finished_like(baseline: dict, storage: str, planned: int = PLANNED) -> None:
    kept = [r for r in rows(storage, db.epochs) if r.kept]
    assert len(kept) == planned and len({(r.number, r.epoch) for r in kept}) == planned
    assert outcome(storage) == baseline


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stops-data") / "synthetic"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, data) -> dict:
    """The uninterrupted study, computed once (one in-process worker, loader workers on)."""
    study, storage = write_study(tmp_path_factory.mktemp("baseline"), data)
    done = start("launch", study)
    assert done.wait(timeout=300) == 0
    return outcome(storage)


def new_epoch(since: int, epoch: int | None = None):
    def condition(storage):
        fresh = [r for r in rows(storage, db.epochs) if r.id > since and epoch in (None, r.epoch)]
        return fresh[0] if fresh else None
    return condition


def last_epoch_id(storage: str) -> int:
    return max((r.id for r in rows(storage, db.epochs)), default=0)


def signal_launch(launch: subprocess.Popen, sig: int, whom: str) -> None:
    if whom == "group":  # what Ctrl-C, timeout, systemd, SLURM and docker stop do
        os.killpg(launch.pid, sig)
    else:  # kill <launch pid>
        launch.send_signal(sig)


def stop_at(study: Path, storage: str, moment: str, signals: list[tuple[int, str]],
            replay: tuple[str, ...] = ()) -> int:
    """Launch two workers (``replay``: their replay options), wait for ``moment``, send
    ``signals``; the launch's exit code.

    before: as soon as a trial is claimed (its trainer is being built or in epoch 1);
    end: the instant an epoch 1 is recorded; inside: 0.2 s into the epoch 3 of a rung-1
    trial, which starts right after its epoch 2 (that trial must then have epoch 3 kept).
    """
    since = last_epoch_id(storage)
    launch = start("launch", study, "--workers", "2", *replay)
    if moment == "before":
        wait_for("a claimed trial", storage,
                 lambda s: [t for t in rows(s, db.trials) if t.state == "running"])
    elif moment == "end":
        wait_for("an epoch 1", storage, new_epoch(since, epoch=1))
    else:
        second = wait_for("an epoch 2", storage, new_epoch(since, epoch=2))
        time.sleep(0.2)
    for sig, whom in signals:
        signal_launch(launch, sig, whom)
        time.sleep(0.05)
    code = launch.wait(timeout=120)
    check_stopped_cleanly(storage, study)
    if moment == "inside" and len(signals) == 1:
        held = next(t for t in rows(storage, db.trials) if t.number == second.number)
        assert held.epochs_done == 3, "the epoch in flight was not kept"
    return code


TERM, INT = signal.SIGTERM, signal.SIGINT
CHAINS = {
    # SQLite; SIGTERM to the process group at each moment, and to launch alone once.
    "sigterm-sqlite": [("before", [(TERM, "group")]), ("before", [(TERM, "launch")]),
                       ("end", [(TERM, "group")]), ("inside", [(TERM, "group")])],
    # PostgreSQL; SIGINT to the process group at each moment, and twice once: a hard stop
    # (sent while a trainer is being built or in its first epoch, so there is work to abandon).
    "sigint-postgres": [("before", [(INT, "group")]), ("before", [(INT, "group"), (INT, "group")]),
                        ("end", [(INT, "group")]), ("inside", [(INT, "group")])],
}


@pytest.fixture(scope="module")
def curves(tmp_path_factory) -> Path:
    return write_replay_curves(tmp_path_factory.mktemp("stops-curves") / "curves.csv")


@pytest.fixture(scope="module")
def replay(curves) -> tuple[str, ...]:
    return ("--replay-curves", str(curves), "--replay-epoch-seconds", str(REPLAY_EPOCH_SECONDS))


def launch_replay_here(study: Path, curves: Path) -> int:
    """``saan-hpo launch STUDY`` with one in-process worker, in this process, replaying without
    sleeping: a replay's values are the curves', whatever the epochs' duration or workers."""
    return in_process("launch", study, "--workers", "1", "--replay-curves", curves,
                      "--replay-epoch-seconds", "0")


@pytest.fixture(scope="module")
def replay_baseline(tmp_path_factory, data, curves) -> dict:
    """The uninterrupted replayed study."""
    study, storage = write_study(tmp_path_factory.mktemp("replay-baseline"), data, lr=REPLAY_LR)
    assert launch_replay_here(study, curves) == 0
    return outcome(storage)


@pytest.fixture
def chain_storage(request, tmp_path):
    if request.param == "sigint-postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.mark.parametrize("chain_storage,chain",
                         [pytest.param(name, name, marks=[pytest.mark.postgres] if "postgres" in name else [])
                          for name in CHAINS],
                         indirect=["chain_storage"], ids=list(CHAINS))
def test_launch_stopped_before_inside_and_at_the_end_of_epochs_loses_nothing(
        tmp_path, data, curves, replay, replay_baseline, chain_storage, chain):
    study, storage = write_study(tmp_path, data, storage=chain_storage, lr=REPLAY_LR)
    for moment, signals in CHAINS[chain]:
        code = stop_at(study, storage, moment, signals, replay)
        if len(signals) == 1:
            assert code == 0, (moment, signals)
        else:  # a hard stop: non-zero, and each worker said in one line where its trial stands
            assert code == HARD_STOP_EXIT
            logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
            assert "hard stop: " in logs
    assert launch_replay_here(study, curves) == 0  # relaunched: finishes what the stops left
    check_finished_like(replay_baseline, storage, REPLAY_PLANNED)


def test_worker_group_sigint_reaches_loader_workers_and_sigkilled_launch_orphans_nothing(
        tmp_path, data, baseline):
    study, storage = write_study(tmp_path, data)

    # Only launch creates a study; --workers 0 creates it without training anything.
    assert in_process("launch", study, "--workers", "0") == 0
    assert rows(storage, db.epochs) == []

    # A worker and its loader workers get SIGINT together (a terminal's Ctrl-C): released, exit 0.
    worker = start("worker", study)
    wait_for("an epoch", storage, new_epoch(0))
    time.sleep(0.2)  # inside the next epoch (or the next trial's first)
    os.killpg(worker.pid, signal.SIGINT)
    assert worker.wait(timeout=120) == 0
    check_stopped_cleanly(storage, study)

    # SIGKILL of launch: its workers stop by themselves (parent death), release, exit.
    since = last_epoch_id(storage)
    launch = start("launch", study, "--workers", "2")
    wait_for("an epoch", storage, new_epoch(since))
    launch.kill()
    launch.wait(timeout=30)
    wait_for("the workers to exit", storage,
             lambda s: not processes_of(study) and all(w.state == "exited" for w in rows(s, db.workers)),
             timeout=120)
    check_stopped_cleanly(storage, study)

    # One process trains what is left (its in-process worker: SAAN_HPO_THREADS=1 as the others).
    finish = start("launch", study, "--workers", "1")
    assert finish.wait(timeout=300) == 0
    check_finished_like(baseline, storage)


def test_deterministic_cpu_training_is_identical_with_0_and_2_loader_workers(tmp_path, data):
    from model.config import RunConfig
    from model.train import Trainer
    from hpo.scheduling.spec import load_spec

    histories = []
    for workers in (0, 2):
        study, _ = write_study(tmp_path / f"w{workers}", data, num_workers=workers)
        spec = load_spec(study)
        cfg: RunConfig = spec.run_config({"lr": 1e-3, "batch_size": 4})
        assert cfg.data.num_workers == workers and cfg.trainer.deterministic
        trainer = Trainer(cfg, device="cpu")
        trainer.fit(2)
        histories.append([{k: v for k, v in m.items() if k not in ("epoch_seconds", "images_per_s")}
                          for m in trainer.history])
    assert histories[0] == histories[1]
