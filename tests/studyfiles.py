"""Study files and learning-curve tables for the service tests (replayed, no training): grid
studies with CSV curves, and [space] studies (kind hyperband-sync) with JSON surrogates."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from hpo.scheduling.rungs import rung_epochs
from hpo.scheduling.spec import load_spec
from hpo.service import db
from hpo.service.learning_curves import LearningCurves
from hpo.service.study import open_or_create
from hpo.service.trial_runs import ReplayRun, run_factory
from hpo.service.worker import FINISHED, TRAINED, Worker

BLOG_GRID = {"lr": [1e-3, 1e-4, 1e-5, 1e-6], "batch_size": [64, 32, 16, 8]}


def write_study(path: Path, name: str = "blog", kind: str = "sync-halving", eta: int = 2,
                rungs: int = 5, schedule: str = "cumulative", grid: dict | None = None,
                extra: str = "", storage: str | None = None, lease_seconds: float = 30) -> Path:
    grid = grid or BLOG_GRID
    lines = ["[study]", f'name = "{name}"', 'metric = "srcc"', f"lease_seconds = {lease_seconds}"]
    if storage:
        lines.append(f'storage = "{storage}"')
    lines.append(f'artifacts = "{path.parent / (name + "-artifacts")}"')
    lines += ["", "[grid]"] + [f"{k} = {v!r}" for k, v in grid.items()]
    lines += ["", "[scheduler]", f'kind = "{kind}"', f"eta = {eta}", f"rungs = {rungs}",
              f'schedule = "{schedule}"', extra]
    path.write_text("\n".join(lines) + "\n")
    return path


def grid_points(grid: dict | None = None) -> list[dict]:
    grid = grid or BLOG_GRID
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def write_curves(path: Path, table: list[list[float]], grid: dict | None = None) -> Path:
    """``table[i][e-1]``: the value of grid point i after epoch e."""
    grid = grid or BLOG_GRID
    assert len(table) >= len(grid_points(grid)), "a curve for every grid point"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*grid, "epoch", "value"])
        for params, curve in zip(grid_points(grid), table):
            for epoch, value in enumerate(curve, start=1):
                writer.writerow([*params.values(), epoch, repr(value)])
    return path


def oracle(table: list[list[float]], eta: int, boundaries: list[int], maximize: bool = True):
    """Synchronous successive halving by hand: per rung (epoch, compared, survivors)."""
    alive = list(range(len(table)))
    rungs = []
    for k, epoch in enumerate(boundaries):
        sign = -1 if maximize else 1
        ordered = sorted(alive, key=lambda i, e=epoch: (sign * table[i][e - 1], i))
        last = k == len(boundaries) - 1
        keep = len(ordered) if last else max(1, len(ordered) // eta)
        assert set(ordered[:keep]) <= set(alive) and len(ordered[:keep]) >= 1
        rungs.append((epoch, sorted(alive), ordered[:keep]))
        alive = ordered[:keep]
    spent = sum(len(c) * (e - (rungs[k - 1][0] if k else 0)) for k, (e, c, _) in enumerate(rungs))
    return rungs, spent


def blog_boundaries() -> list[int]:
    return rung_epochs("cumulative", 2, 5, 1)


def create_study(study: Path, storage: str | None = None) -> None:
    """What ``launch`` does first (workers only attach): create the study, run nothing."""
    spec = load_spec(study)
    open_or_create(spec, storage or spec.storage)


def cli(*args: str, timeout: float = 300, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


# ``saan-hpo ...`` in the test process (``hpo.cli.main``), for checks of values that need no
# process of their own: each process that imports torch costs seconds of start-up. A command's
# own process (its exit code, what it prints there, signals) keeps cli() above.
_MAIN_LOGGERS = ("", "optuna")  # main replaces their handlers and levels (hpo/cli/logs.py)


@dataclass
class Done:
    """What ``subprocess.run`` would have returned: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def in_process(*args) -> int:
    """``main([...])``'s exit code; the loggers main reconfigures are put back afterwards."""
    import logging

    from hpo.cli import main

    saved = [(logger, list(logger.handlers), logger.level, logger.propagate)
             for logger in map(logging.getLogger, _MAIN_LOGGERS)]
    try:
        return main([str(a) for a in args])
    finally:
        for logger, handlers, level, propagate in saved:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def run_here(capsys, *args) -> Done:
    """in_process() with this command's output (log lines included) read from ``capsys``."""
    capsys.readouterr()  # only this command's output
    code = in_process(*args)
    out = capsys.readouterr()
    return Done(code, out.out, out.err)


def stored_rungs(storage: str, study: str) -> list[tuple[int, list[int], list[int]]]:
    """(epoch, compared trial numbers, survivors best first) per decided rung."""
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.rungs).where(db.rungs.c.study == study)
                            .order_by(db.rungs.c.rung)).all()
    engine.dispose()
    return [(r.epoch, sorted(int(k) for k in json.loads(r.values_json)),
             json.loads(r.survivors_json)) for r in rows]


def study_rows(storage: str, table: sa.Table, study: str):
    """Every row of one of the service's tables that belongs to ``study``."""
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.study == study)).all()
    engine.dispose()
    return rows


def epoch_rows(storage: str, study: str):
    return study_rows(storage, db.epochs, study)


# ---- a study left half-done on purpose --------------------------------------------------------
class ClaimLimitedWorker(Worker):
    """A worker that stops after ``claims`` stints (the production worker runs to the end)."""

    def __init__(self, *args, claims: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.claims_left = claims

    def step(self) -> str:
        if self.claims_left <= 0:
            return FINISHED
        done = super().step()
        if done == TRAINED:
            self.claims_left -= 1
        return done


def run_claims(study_file: Path, curves_csv: Path, claims: int, **worker_options) -> None:
    """``saan-hpo worker STUDY --replay-curves CSV`` in this process, stopping after ``claims``
    stints (the study file must name its storage)."""
    spec = load_spec(study_file)
    curves = LearningCurves.load(curves_csv, spec)
    open_or_create(spec, spec.storage)
    worker = ClaimLimitedWorker.attach(spec, spec.storage, run_factory(spec, curves=curves),
                                       claims=claims, **worker_options)
    try:
        worker.run()
    finally:
        worker.close()


def hooked_replays(spec, curves: LearningCurves, before_epoch, epoch_seconds: float = 0.0):
    """A run factory of replays that call ``before_epoch(params, epoch)`` before each epoch
    (to raise on cue, send a stop, note the time); the worker's callback is honoured."""
    class HookedRun(ReplayRun):
        def fit(self, until_epoch, on_epoch_end=None, should_abort=None):
            going = [True]

            def callback(epoch, metrics):
                going[0] = on_epoch_end(epoch, metrics) is not False
                return going[0]

            while self.epoch < until_epoch and going[0]:
                before_epoch(self.params, self.epoch + 1)
                super().fit(self.epoch + 1, callback, should_abort)

    return lambda params: HookedRun(curves, params, spec.metric, epoch_seconds)


def live_processes_naming(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if text.encode() in cmdline and "\nState:\tZ" not in status:
            pids.append(int(entry.name))
    return pids


def holder_of_a_trial_mid_rung(storage: str, rung_at_least: int, deadline: float):
    """Wait until some worker holds a trial of rung >= rung_at_least past its first epoch there."""
    engine = db.create_service_engine(storage)
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    rows = conn.execute(sa.select(db.trials).where(
                        db.trials.c.state == "running", db.trials.c.rung >= rung_at_least)).all()
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no tables yet
                rows = []
            for row in rows:
                start = ([0] + blog_boundaries())[row.rung]
                if row.epochs_done > start:
                    return row
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("no worker reached the middle of a rung in time")


def first_row_within(storage: str, query, deadline: float, what: str, pause: float = 0.05):
    """Poll ``query`` until it returns a row (by ``deadline``, time.monotonic()), else fail
    saying ``what`` did not happen."""
    engine = db.create_service_engine(storage)
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                row = conn.execute(query).first()
            if row is not None:
                return row
            time.sleep(pause)
    finally:
        engine.dispose()
    raise AssertionError(f"{what} in time")


def worker_pid(storage: str, worker_id: str) -> int:
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        pid = conn.execute(sa.select(db.workers.c.pid).where(db.workers.c.id == worker_id)).scalar_one()
    engine.dispose()
    return pid


def kill_the_holder_mid_rung(workers: list, storage: str, rung_at_least: int = 2):
    """SIGKILL the worker process holding a trial in the middle of a rung, let the others
    finish (each exits 0); the trial row it held."""
    import signal

    try:
        victim = holder_of_a_trial_mid_rung(storage, rung_at_least, time.monotonic() + 120)
        os.kill(worker_pid(storage, victim.lease_owner), signal.SIGKILL)
        for w in workers:
            w.wait(timeout=240)
    finally:
        for w in workers:
            w.kill()
    assert sorted(w.returncode for w in workers) == [-signal.SIGKILL] + [0] * (len(workers) - 1)
    return victim


# ---- [space] studies (kind hyperband-sync) and their replay surrogates -------------------------
SPACE = {"lr": "{ log_uniform = [1e-6, 1e-2] }", "batch_size": "{ choice = [8, 16, 32, 64] }",
         "weight_decay": "{ uniform = [0.0, 0.001] }"}


def write_space_study(path: Path, name: str = "cont", space: dict | None = None,
                      sampler: str = "tpe", eta: int = 2, rungs: int = 3, brackets: int = 0,
                      seed: int = 0, schedule: str = "geometric", storage: str | None = None,
                      extra: str = "") -> Path:
    space = SPACE if space is None else space
    lines = ["[study]", f'name = "{name}"', 'metric = "srcc"']
    if storage:
        lines.append(f'storage = "{storage}"')
    lines.append(f'artifacts = "{path.parent / (name + "-artifacts")}"')
    lines += ["", "[space]"] + [f"{k} = {v}" for k, v in space.items()]
    lines += ["", "[scheduler]", 'kind = "hyperband-sync"', f"eta = {eta}", f"rungs = {rungs}",
              f'schedule = "{schedule}"', f'sampler = "{sampler}"', f"seed = {seed}"]
    if brackets:
        lines.append(f"brackets = {brackets}")
    lines.append(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_surrogate(path: Path) -> Path:
    """A smooth surrogate: best near lr 10**-3.5, batch 16, weight decay 0; rising with epochs."""
    path.write_text(json.dumps({
        "format": "saan-hpo-surrogate/1",
        "metric": "srcc",
        "inputs": [{"name": "lr", "transform": "log10"},
                   {"name": "batch_size", "transform": "log2"},
                   {"name": "weight_decay", "transform": "scale", "scale": 1000.0}],
        # quadratic terms: 1, x_i, then x_i * x_j for i <= j
        "asymptote": [-1.925, -0.7, 0.8, -0.1, -0.1, 0.0, 0.0, -0.1, 0.0, -0.05],
        "amplitude": [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "log_rate": [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    }))
    return path
