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
import pytest
import sqlalchemy as sa

from hpo.service import db
from hpo.service.stops import HARD_STOP_EXIT
from studyfiles import (blog_boundaries, create_study, epoch_rows, grid_points,
                        holder_of_a_trial_mid_rung, kill_the_holder_mid_rung, oracle, stored_rungs,
                        study_rows, worker_pid, write_curves, write_study)

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


# ---- launch killed, a worker of launch killed -------------------------------------------------
# Started by the test to run launch: a child subreaper (Linux), so that launch's workers,
# orphaned by its SIGKILL, are handed to it and it can tell their exit codes.
REAPER = """
import ctypes, json, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
with open(sys.argv[2], "wb") as out:
    launch = subprocess.Popen(sys.argv[3:], stdout=out, stderr=subprocess.STDOUT)
print(launch.pid, flush=True)
codes = {}
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    codes[pid] = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as fh:
    json.dump(codes, fh)
"""


def test_sigkilled_launch_lets_each_worker_finish_its_epoch_in_flight(tmp_path):
    """SIGKILL of launch mid-epoch: each worker hears of it once or more (the kernel's
    parent-death signal, again per thread of the dying launcher, and its own check), stops
    as on a first signal -- its epoch in flight trained, checkpointed and recorded, the
    trial released -- and exits 0."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_CHILD_SUBREAPER is Linux only")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, lease_seconds=60)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    trace = tmp_path / "trace.jsonl"  # every epoch a replay worker begins
    codes_file = tmp_path / "codes.json"
    reaper = subprocess.Popen(
        [sys.executable, "-c", REAPER, str(codes_file), str(tmp_path / "launch.out"),
         sys.executable, "-m", "hpo.cli", "launch", str(study), "--workers", "2",
         "--replay-curves", str(curves), "--replay-epoch-seconds", "0.5"],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "SAAN_HPO_REPLAY_TRACE": str(trace)})
    try:
        launch_pid = int(reaper.stdout.readline())
        deadline = time.monotonic() + 120
        while len(epoch_rows_or_none(storage)) < 3 or len(running(storage)) < 2:
            assert time.monotonic() < deadline, "the workers did not get going"
            time.sleep(0.05)
        time.sleep(0.2)  # inside both workers' next epoch (0.5 s each)
        os.kill(launch_pid, signal.SIGKILL)
        reaper.wait(timeout=120)
    finally:
        reaper.kill()
    codes = {int(pid): code for pid, code in json.loads(codes_file.read_text()).items()}
    assert codes.pop(launch_pid) == -signal.SIGKILL
    assert len(codes) == 2 and set(codes.values()) == {0}, codes  # both workers: exit 0
    logs = {pid: (tmp_path / "logs" / f"worker-{pid}.log").read_text() for pid in codes}
    for pid, text in logs.items():
        assert "the launcher that started this worker is gone" in text, text[-2000:]
        assert "hard stop" not in text and "again: abandoning" not in text, text[-2000:]
    # Every epoch begun was kept: the epochs in flight at the kill were finished and recorded.
    begun = [json.loads(line) for line in trace.read_text().splitlines()]
    numbers = {tuple(sorted(p.items())): i for i, p in enumerate(grid_points())}
    begun = sorted((numbers[tuple(sorted(b["params"].items()))], b["epoch"]) for b in begun)
    recorded = sorted((r.number, r.epoch) for r in epoch_rows(storage, "blog") if r.kept)
    assert begun == recorded, "an epoch in flight at the kill was lost"
    rows = study_rows(storage, db.trials, "blog")
    assert not [r for r in rows if r.state in ("running", "failed") or r.lease_owner]
    assert {w.state for w in study_rows(storage, db.workers, "blog")} == {"exited"}


# A launcher stand-in that starts a worker from a thread, as launch's children see it when
# launch has threads: the kernel sends the parent-death signal when the thread that forked
# the worker exits, and again when the process dies. The thread waits for a file, so that
# the worker has asked for the signal (PR_SET_PDEATHSIG) before it comes.
TWO_DEATHS = """
import os, subprocess, sys, threading, time
release = sys.argv[1]
env = dict(os.environ, SAAN_HPO_PARENT_PID=str(os.getpid()))

def start_and_wait():
    subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", *sys.argv[2:]], env=env)
    while not os.path.exists(release):
        time.sleep(0.02)

thread = threading.Thread(target=start_and_wait)
thread.start()
thread.join()
time.sleep(600)
"""


def test_a_worker_told_twice_that_its_launcher_died_stops_as_on_a_first_signal(tmp_path):
    """The parent-death signal twice, 0.2 s apart, in the middle of an epoch: the worker
    finishes that epoch, records it, releases its trial and exits 0 -- a repeat is not a
    second stop (which would abandon the epoch and exit 3)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG and PR_SET_CHILD_SUBREAPER are Linux only")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, lease_seconds=60)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    create_study(study, storage)
    trace, codes_file, release = tmp_path / "trace.jsonl", tmp_path / "codes.json", tmp_path / "go"
    reaper = subprocess.Popen(
        [sys.executable, "-c", REAPER, str(codes_file), str(tmp_path / "out.log"),
         sys.executable, "-c", TWO_DEATHS, str(release), str(study), "--replay-curves", str(curves),
         "--replay-epoch-seconds", "1.0"],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "SAAN_HPO_REPLAY_TRACE": str(trace)})
    try:
        stand_in = int(reaper.stdout.readline())
        deadline = time.monotonic() + 120
        while len(epoch_rows_or_none(storage)) < 1:
            assert time.monotonic() < deadline, "the worker did not get going"
            time.sleep(0.02)
        time.sleep(0.2)  # inside the next epoch (1 s)
        release.touch()  # the forking thread exits: the first parent-death signal
        time.sleep(0.2)
        os.kill(stand_in, signal.SIGKILL)  # the second
        reaper.wait(timeout=120)
    finally:
        reaper.kill()
    codes = {int(pid): code for pid, code in json.loads(codes_file.read_text()).items()}
    assert codes.pop(stand_in) == -signal.SIGKILL
    (worker,) = study_rows(storage, db.workers, "blog")
    assert codes == {worker.pid: 0}, codes
    text = (tmp_path / "logs" / f"worker-{worker.pid}.log").read_text()
    assert text.count("the launcher that started this worker is gone") == 1, text[-2000:]
    assert "hard stop" not in text, text[-2000:]
    begun = len(trace.read_text().splitlines())
    assert begun >= 2 and begun == len(epoch_rows(storage, "blog")), "the epoch in flight was lost"
    assert not [r for r in study_rows(storage, db.trials, "blog") if r.state == "running" or r.lease_owner]


# A worker's signal life in one process: handlers in, the parent-death signal asked for,
# handlers back (the stop is over), then the kernel's late repeat -- a thread of a dying
# launcher that was stuck in a disk write exits last (seen in CI: a worker that had stopped
# cleanly ended with -12, SIGUSR2's default action).
LATE_REPEAT = """
import os, signal, sys
from hpo.service.stops import PARENT_GONE_SIGNAL, StopRequests, die_with_parent
stops = StopRequests()
restore = stops.install()
die_with_parent(stops)
restore()
print(signal.getsignal(PARENT_GONE_SIGNAL) == signal.SIG_IGN, flush=True)
os.kill(os.getpid(), PARENT_GONE_SIGNAL)
signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # one more syscall: a pending signal is delivered
print("alive", stops.graceful.is_set())
"""


@pytest.mark.parametrize("asked", [True, False])
def test_a_parent_death_signal_after_the_stop_is_over_ends_nothing(tmp_path, asked):
    """Once a worker that asked for the parent-death signal has put its handlers back, a
    repeat of that signal is ignored (the worker exits with its own code); a process that
    never asked for it gets its old handler back (here the default)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    env = {k: v for k, v in os.environ.items() if k != "SAAN_HPO_PARENT_PID"}
    if asked:
        env["SAAN_HPO_PARENT_PID"] = str(os.getpid())
    done = subprocess.run([sys.executable, "-c", LATE_REPEAT], env=env, capture_output=True,
                          text=True, timeout=60)
    if asked:
        assert (done.returncode, done.stdout) == (0, "True\nalive False\n"), done
    else:
        assert (done.returncode, done.stdout) == (-signal.SIGUSR2, "False\n"), done


def epoch_rows_or_none(storage: str) -> list:
    try:
        return epoch_rows(storage, "blog")
    except sa.exc.OperationalError:  # no tables yet
        return []


def running(storage: str) -> list:
    try:
        return [t for t in study_rows(storage, db.trials, "blog") if t.state == "running"]
    except sa.exc.OperationalError:
        return []


def test_a_worker_of_launch_killed_mid_epoch_is_one_line_and_the_others_finish(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, lease_seconds=2)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    launch = subprocess.Popen([sys.executable, "-m", "hpo.cli", "launch", str(study), "--workers", "2",
                               "--replay-curves", str(curves), "--replay-epoch-seconds", "0.1"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = holder_of_a_trial_mid_rung(storage, 2, time.monotonic() + 120)
        pid = worker_pid(storage, victim.lease_owner)
        os.kill(pid, signal.SIGKILL)
        out, err = launch.communicate(timeout=240)
    finally:
        launch.kill()
    # The other worker took the trial over once its lease expired and finished the study.
    assert launch.returncode == 0, (out[-2000:], err[-3000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"worker PID {pid} was killed (SIGKILL); its trial was taken over "
                               "from its last checkpoint"), lines[0]
    assert "winner: trial" in out
    expected, spent = oracle(TABLE, 2, blog_boundaries())
    assert stored_rungs(storage, "blog") == expected
