"""Replay recorded learning curves through a study's scheduler, without training.

The replay runs the real service -- a throwaway SQLite study, the same worker,
claims, pauses and rung decisions -- with a trial function that reads values
from the curves. So what ``simulate`` prints is what a real study with those
curves would do, and the scheduler tests exercise the production code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hpo.readers.rung_history import RungSummary, rung_summaries
from hpo.scheduling.spec import StudySpec
from hpo.service import db, optuna_link
from hpo.service.learning_curves import LearningCurves
from hpo.service.study import open_or_create
from hpo.service.trial_runs import run_factory
from hpo.service.worker import Worker, shuffled_claim_order


@dataclass
class SimulationResult:
    epochs_spent: int
    planned_epochs: int
    full_grid_epochs: int
    winner: dict[str, Any] | None
    winner_trial: int | None
    winner_value: float | None
    best: dict[str, Any]
    best_value: float
    regret: float | None
    rungs: list[RungSummary] = field(default_factory=list)
    outside_grid_rows: int = 0  # curve rows of configurations not in this grid
    non_finite_values: int = 0  # NaN / inf values in the grid's curves

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: a non-finite number is null plus ``<key>_non_finite: true``."""
        out = dataclasses.asdict(self)
        for key in ("winner_value", "best_value", "regret"):
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = None
                out[f"{key}_non_finite"] = True
        return out

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), allow_nan=False)


def simulate(spec: StudySpec, curves: LearningCurves, claim_seed: int | None = None,
             workdir: str | None = None) -> SimulationResult:
    with tempfile.TemporaryDirectory(prefix="saan-hpo-sim-", dir=workdir) as tmp:
        storage = f"sqlite:///{Path(tmp) / 'sim.db'}"
        spec = dataclasses.replace(spec, storage=storage, artifacts=str(Path(tmp) / "artifacts"),
                                   lease_seconds=3600.0)
        quiet = [logging.getLogger(n) for n in ("hpo.service", "optuna")]
        levels = [lg.level for lg in quiet]
        for lg in quiet:
            lg.setLevel(logging.WARNING)
        try:
            open_or_create(spec, storage)
            order = None if claim_seed is None else shuffled_claim_order(claim_seed,
                                                                         spec.n_configurations())
            worker = Worker.attach(spec, storage, run_factory(spec, curves=curves),
                                   poll_seconds=0.0, claim_order=order)
            worker.run()
            result = summarize(spec, storage, curves)
            worker.close()
            return result
        finally:
            for lg, level in zip(quiet, levels):
                lg.setLevel(level)


def summarize(spec: StudySpec, storage_url: str, curves: LearningCurves) -> SimulationResult:
    with db.reading(storage_url) as conn:
        spent = conn.execute(sa.select(sa.func.count()).select_from(db.epochs).where(
            db.epochs.c.study == spec.name)).scalar_one()
        trial_rows = conn.execute(sa.select(db.trials).where(db.trials.c.study == spec.name)).all()
    params_of = {r.number: json.loads(r.params_json) for r in trial_rows}
    rungs = rung_summaries(spec, storage_url, params_of)

    final = spec.final_epoch
    sign = 1.0 if spec.direction == "maximize" else -1.0
    finals = [(curves.value(p, final), n) for n, p in params_of.items()]
    best_value, best_number = max(finals, key=lambda vn: (sign * _nan_low(vn[0], sign), -vn[1]))

    study = optuna_link.open_study(spec, optuna_link.optuna_storage(storage_url))
    try:
        winner = study.best_trial
    except ValueError:
        winner = None
    winner_value = winner.value if winner else None
    regret = None if winner is None else sign * (best_value - winner_value)
    return SimulationResult(
        epochs_spent=spent, planned_epochs=spec.planned_epochs(),
        full_grid_epochs=spec.full_grid_epochs(),
        winner=dict(winner.params) if winner else None,
        winner_trial=winner.number if winner else None,
        winner_value=winner_value, best=params_of[best_number], best_value=best_value,
        regret=regret, rungs=rungs, outside_grid_rows=curves.outside_grid_rows,
        non_finite_values=curves.non_finite_values)


def _nan_low(value: float, sign: float) -> float:
    """Non-finite values rank last (hpo/scheduling/rungs.py), also for the full-grid best."""
    return value if math.isfinite(value) else -math.inf * sign
