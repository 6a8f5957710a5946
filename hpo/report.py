"""``saan-hpo report``: one self-contained HTML file of a study, running or finished.

What a report shows is read, never recomputed: the survivor curves are Optuna's
intermediate values, the rung ladder is the stored rung decisions (synchronous
halving) or what :func:`hpo.simulate.rung_summaries` reads off the reported
values (Optuna's asynchronous pruners), the budget is ``saan_epochs``, and the
winner is Optuna's ``best_trial`` -- the trial ``saan-hpo export`` names.

This module gathers a :class:`ReportData` snapshot; ``report_figures`` turns it
into plotly figures and ``report_html`` into the page. A study with the published
halving grid also gets the published ladder and winner beside its own
(``report_published``). PNG export (kaleido 1.x,
pure Python, which drives a local Chrome/Chromium) and the optuna-dashboard
copy of the survivor curves are opt-in flags of the command.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

from model.errors import SaanError
from hpo import db, optuna_link
from hpo.report_published import published_ladder
from hpo.results import stored_spec
from hpo.spec import StudySpec
from hpo.stored_scores import stored_test_scores

# Columns of the metrics table: (key in the trainer's metrics, heading).
METRIC_COLUMNS = (("accuracy", "accuracy"), ("plcc", "PLCC"), ("srcc", "SRCC"), ("mse", "MSE"))
DASHBOARD_GRAPH_ID = "saan-survivor-curves"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class NoBrowser(SaanError):
    """PNG export needs a Chrome/Chromium that kaleido can drive."""


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
class RungEntry:
    trial: int
    value: float
    outcome: str  # survived | pruned | pending | finished


@dataclass
class RungView:
    rung: int
    epoch: int
    decided: bool
    entries: list[RungEntry]


@dataclass
class EpochRecord:
    number: int
    epoch: int
    worker: str
    started_at: float
    finished_at: float
    value: float | None
    kept: bool


@dataclass
class ReportData:
    spec: StudySpec
    storage: str  # masked
    trials: list[TrialView]
    rungs: list[RungView]
    epochs: list[EpochRecord]
    workers: dict[str, str]  # worker id -> label
    winner: TrialView | None
    finished: bool
    generated_at: float = field(default_factory=time.time)
    # trial number -> (test-split scores, the command that stored them): hpo/stored_scores.py
    test_scores: dict[int, tuple[dict[str, float], str]] = field(default_factory=dict)
    published: Any = None  # hpo.published.LadderComparison, for the published grid only

    @property
    def axes(self) -> list[str]:
        return list(self.spec.grid)

    @property
    def by_number(self) -> dict[int, TrialView]:
        return {t.number: t for t in self.trials}


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
        decided = conn.execute(sa.select(sa.func.count()).select_from(db.rungs)
                               .where(db.rungs.c.study == name)).scalar_one()

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
            value=t.value if t.state == optuna.trial.TrialState.COMPLETE else None))
    try:
        best_number = study.best_trial.number
    except ValueError:
        best_number = None
    by_number = {t.number: t for t in trials}
    workers = {w.id: _worker_label(w) for w in worker_rows}
    epochs = [EpochRecord(r.number, r.epoch, r.worker or "?", r.started_at, r.finished_at,
                          r.value, bool(r.kept)) for r in epoch_rows]
    for record in epochs:
        workers.setdefault(record.worker, record.worker)
    finished = bool(trials) and all(t.state in ("complete", "pruned", "fail") for t in trials)
    data = ReportData(
        spec=spec, storage=db.mask_url(storage_url), trials=trials,
        rungs=_rungs(spec, storage_url, by_number, decided > 0), epochs=epochs, workers=workers,
        winner=by_number.get(best_number), finished=finished,
        test_scores={t.number: s for t in frozen if (s := stored_test_scores(t.user_attrs))})
    data.published = published_ladder(data)
    return data


def _worker_label(row) -> str:
    return f"{row.host or '?'} {row.device or ''} pid {row.pid}".strip()


def _rungs(spec: StudySpec, storage_url: str, trials: dict[int, TrialView],
           any_decided: bool) -> list[RungView]:
    from hpo.simulate import rung_summaries

    params_of = {n: t.params for n, t in trials.items()}
    last = len(spec.boundaries) - 1
    views: dict[int, RungView] = {}
    if spec.scheduler.kind == "sync-halving":
        summaries = rung_summaries(spec, storage_url, params_of) if any_decided else []
        for s in summaries:  # stored decisions
            outcome = "finished" if s.rung == last else "survived"
            views[s.rung] = RungView(s.rung, s.epoch, True, [
                RungEntry(c["trial"], c["value"], outcome if c["trial"] in s.survivors else "pruned")
                for c in s.compared])
        for k, boundary in enumerate(spec.boundaries):  # cohorts still filling up
            waiting = [RungEntry(n, t.values[boundary], "pending")
                       for n, t in sorted(trials.items()) if boundary in t.values]
            if k not in views and waiting:
                views[k] = RungView(k, boundary, False, waiting)
    else:
        for s in rung_summaries(spec, storage_url, params_of):
            entries = []
            for c in s.compared:
                trial = trials[c["trial"]]
                if c["trial"] in s.survivors:
                    outcome = "finished" if s.rung == last and trial.state == "complete" else "survived"
                    if s.rung == last and trial.state != "complete":
                        outcome = "pending"
                else:
                    outcome = "pruned" if trial.state == "pruned" else "pending"
                entries.append(RungEntry(c["trial"], c["value"], outcome))
            decided = all(e.outcome != "pending" for e in entries)
            views[s.rung] = RungView(s.rung, s.epoch, decided, entries)
    return [views[k] for k in sorted(views)]


# ---- outputs ---------------------------------------------------------------------------
def default_output(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "study"
    return Path("reports") / f"{safe}.html"


def render(name: str, storage_url: str) -> tuple[str, ReportData, dict[str, Any]]:
    """The page, the data it shows and its figures (by id)."""
    from hpo.report_figures import build_figures
    from hpo.report_html import render_page

    data = collect(name, storage_url)
    figures = build_figures(data)
    return render_page(data, figures), data, figures


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_to_dashboard(name: str, storage_url: str, figure) -> str:
    """Store the survivor curves in the study for optuna-dashboard (overwrites the last copy)."""
    from optuna_dashboard import save_plotly_graph_object

    study = optuna.load_study(study_name=name, storage=optuna_link.optuna_storage(storage_url))
    return save_plotly_graph_object(study, figure, graph_object_id=DASHBOARD_GRAPH_ID)


def find_browser() -> str | None:
    """A Chrome/Chromium for kaleido: $BROWSER_PATH, then the usual names on PATH."""
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in BROWSER_NAMES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def check_png_export() -> str:
    """The browser kaleido will use; a clear error when PNG export cannot work here."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise NoBrowser("--png: kaleido is not installed (pip install 'kaleido>=1')") from None
    browser = find_browser()
    if browser is None:
        raise NoBrowser("--png: no Chrome/Chromium found (looked at $BROWSER_PATH and "
                        f"{', '.join(BROWSER_NAMES)} on PATH); install one, e.g. "
                        "apt-get install chromium, or set BROWSER_PATH")
    return browser


def write_pngs(figures: dict[str, Any], directory: Path, browser: str) -> list[Path]:
    """Each figure as DIR/<figure id>.png, through one kaleido browser session."""
    import plotly.io as pio

    os.environ["BROWSER_PATH"] = browser  # kaleido (choreographer) reads it
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{figure_id}.png" for figure_id in figures]
    pio.write_images(list(figures.values()), paths, format="png")
    return paths
