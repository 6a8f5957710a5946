"""The report's snapshot of a study, running or finished: :class:`ReportData`.

What a report shows is read, never recomputed: the survivor curves are Optuna's
intermediate values, the rung ladder is the stored rung decisions (synchronous
halving) or what :func:`hpo.readers.rung_history.rung_summaries` reads off the
reported values (Optuna's asynchronous pruners), the budget is ``saan_epochs``,
and the winner is Optuna's ``best_trial`` -- the trial ``saan-hpo export`` names.
Gangs (issue 20) are read from each epoch row's ``gang_json``: the worker timeline
shows which workers trained which trial, when, and at which rank count.

``hpo.report.figures`` turns a snapshot into plotly figures, ``hpo.report.page``
into the HTML page; ``hpo.report.output`` writes it, ``hpo.report.png`` exports
the figures as PNGs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa

from hpo.readers.results import stored_spec
from hpo.readers.stored_scores import stored_test_scores
from hpo.report.published import published_ladder
from hpo.readers.failures import error_of
from hpo.readers.rung_history import rung_history
from hpo.scheduling.policy import LadderRung
from hpo.scheduling.spec import StudySpec
from hpo.service import db, optuna_link

@dataclass
class TrialView:
    """One configuration as the report shows it."""

    number: int
    params: dict[str, Any]
    state: str  # Optuna's: complete, pruned, running, waiting, fail
    service_state: str | None  # the service's: waiting, running, paused, pruned, complete, failed
    values: dict[int, float]  # epoch -> reported validation metric (Optuna intermediate values)
    metrics: dict[str, float]  # last reported metrics (accuracy, plcc, srcc, mse, ...)
    value: float | None  # Optuna's final value (COMPLETE trials)
    error: dict | None = None  # the last error its run raised (hpo/readers/failures.py)
    service_rung: int | None = None  # the rung it was in when the service last moved it

    @property
    def epochs(self) -> int:
        return max(self.values, default=0)

    @property
    def last_value(self) -> float | None:
        return self.values[self.epochs] if self.values else None

    @property
    def label(self) -> str:
        if self.state == "running" and self.service_state == "paused":
            return "paused"
        return self.state


@dataclass
class EpochRecord:
    number: int
    epoch: int
    worker: str
    started_at: float
    finished_at: float
    value: float | None
    kept: bool
    # The members that trained it with ``worker`` (its holder), from saan_epochs.gang_json;
    # () when trained alone. The worker timeline draws a bar on each member's row too.
    gang: tuple[str, ...] = ()


@dataclass
class MemberEpoch(EpochRecord):
    """A gang member's copy of an epoch its holder recorded: ``worker`` is the member."""

    holder: str = ""


@dataclass
class ReportData:
    spec: StudySpec
    storage: str  # masked
    trials: list[TrialView]
    rungs: list[LadderRung]  # the rung ladder, as the study's policy reads it
    epochs: list[EpochRecord]
    workers: dict[str, str]  # worker id -> label
    winner: TrialView | None
    finished: bool
    generated_at: float = field(default_factory=time.time)
    # trial number -> (test-split scores, the command that stored them): hpo/readers/stored_scores.py
    test_scores: dict[int, tuple[dict[str, float], str]] = field(default_factory=dict)
    published: Any = None  # hpo.readers.published.LadderComparison, for the published grid only

    @property
    def axes(self) -> list[str]:
        return self.spec.axes  # the grid's axes, or a space study's dimensions

    @property
    def by_number(self) -> dict[int, TrialView]:
        return {t.number: t for t in self.trials}

    @property
    def member_epochs(self) -> list[MemberEpoch]:
        """One record per (epoch, gang member): the holder alone records an epoch, and the
        worker timeline draws each member's share on the member's own row too."""
        return [MemberEpoch(**{**vars(r), "worker": member, "holder": r.worker})
                for r in self.epochs for member in r.gang]


def collect(name: str, storage_url: str) -> ReportData:
    """A consistent-enough snapshot of a study: Optuna's view first, then the service's."""
    spec = stored_spec(name, storage_url)
    study = optuna_link.open_study(spec, optuna_link.optuna_storage(storage_url))
    frozen = study.get_trials(deepcopy=False)
    with db.reading(storage_url) as conn:
        service = {r.number: r for r in conn.execute(
            sa.select(db.trials).where(db.trials.c.study == name))}
        epoch_rows = conn.execute(sa.select(db.epochs).where(db.epochs.c.study == name)
                                  .order_by(db.epochs.c.finished_at, db.epochs.c.id)).all()
        worker_rows = conn.execute(sa.select(db.workers).where(db.workers.c.study == name)
                                   .order_by(db.workers.c.started_at)).all()

    last_metrics: dict[int, dict] = {}
    for row in epoch_rows:  # ordered by time: the last kept epoch wins
        if row.kept and row.metrics_json:
            last_metrics[row.number] = json.loads(row.metrics_json)
    trials = []
    for t in sorted(frozen, key=lambda t: t.number):
        metrics = t.user_attrs.get("last_metrics") or last_metrics.get(t.number) or {}
        row = service.get(t.number)
        trials.append(TrialView(
            number=t.number, params=dict(t.params), state=t.state.name.lower(),
            service_state=row.state if row is not None else None,
            values={int(k): float(v) for k, v in sorted(t.intermediate_values.items())},
            metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            value=t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            error=error_of(row) if row is not None else None,
            service_rung=row.rung if row is not None else None))
    try:
        best_number = study.best_trial.number
    except ValueError:
        best_number = None
    by_number = {t.number: t for t in trials}
    workers = {w.id: _worker_label(w) for w in worker_rows}
    epochs = [EpochRecord(r.number, r.epoch, r.worker or "?", r.started_at, r.finished_at,
                          r.value, bool(r.kept), _gang(r)) for r in epoch_rows]
    for record in epochs:
        for worker in (record.worker, *record.gang):
            workers.setdefault(worker, worker)
    finished = bool(trials) and all(t.state in ("complete", "pruned", "fail") for t in trials)
    data = ReportData(
        spec=spec, storage=db.mask_url(storage_url), trials=trials,
        rungs=spec.policy.ladder(rung_history(spec, storage_url),
                                 {t.number: t.values for t in trials},
                                 {t.number: t.state for t in trials}),
        epochs=epochs, workers=workers,
        winner=by_number.get(best_number), finished=finished,
        test_scores={t.number: s for t in frozen if (s := stored_test_scores(t.user_attrs))})
    data.published = published_ladder(data)
    return data


def _gang(row) -> tuple[str, ...]:
    # getattr: a read-only database from before gangs has no gang_json column
    # (db.reading adds missing columns only where it may write).
    text = getattr(row, "gang_json", None)
    return tuple(json.loads(text)) if text else ()


def _worker_label(row) -> str:
    return f"{row.host or '?'} {row.device or ''} pid {row.pid}".strip()
