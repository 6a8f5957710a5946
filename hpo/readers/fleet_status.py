"""Every study and every worker of one storage: ``saan-hpo status --storage URL``.

One line per study (state, current rung, epochs spent of planned, ETA) and one
per worker (host, device, study and trial, last heartbeat). A study's ETA is
its remaining planned epochs times its median epoch, spread over the workers
on it now; the fleet's is all remaining epochs over all active workers.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import sqlalchemy as sa

from hpo.readers.status import _ago, _duration
from hpo.service import db
from hpo.service.stored_studies import ANY_STUDY, FINAL_STATES, spec_from_row


@dataclass
class StudyLine:
    name: str
    state: str  # creating | finished | running | waiting
    rung: str
    spent: int
    planned: int
    eta_seconds: float | None
    priority: int
    median_epoch: float | None


def fleet_snapshot(storage_url: str, now: float | None = None):
    now = time.time() if now is None else now
    with db.reading(storage_url) as conn:
        rows = conn.execute(sa.select(db.studies).order_by(db.studies.c.name)).all()
        trials = conn.execute(sa.select(db.trials.c.study, db.trials.c.state, db.trials.c.rung,
                                        db.trials.c.lease_expires)).all()
        epochs = conn.execute(sa.select(db.epochs.c.study, db.epochs.c.started_at,
                                        db.epochs.c.finished_at)).all()
        workers = conn.execute(sa.select(db.workers).order_by(db.workers.c.started_at)).all()
    active = [w for w in workers if w.state == "active"]
    lines = []
    for row in rows:
        spec = spec_from_row(row, storage_url)
        mine = [t for t in trials if t.study == row.name]
        durations = [e.finished_at - e.started_at for e in epochs if e.study == row.name]
        spent = len(durations)
        open_trials = [t for t in mine if t.state not in FINAL_STATES]
        if not row.ready:
            state = "creating"
        elif not open_trials:
            state = "finished"
        elif any(t.state == "running" and (t.lease_expires or 0) >= now for t in mine):
            state = "running"
        else:
            state = "waiting"
        rung = "-"
        if open_trials and spec.scheduler.kind == "sync-halving":
            rung = f"{min(t.rung for t in open_trials)}/{len(spec.boundaries) - 1}"
        median = statistics.median(durations) if durations else None
        eta = None
        if open_trials and median is not None:
            on_it = sum(w.study == row.name and w.current_trial is not None for w in active)
            eta = max(0, spec.planned_epochs() - spent) * median / max(1, on_it)
        lines.append(StudyLine(row.name, state, rung, spent, spec.planned_epochs(), eta,
                               spec.priority, median))
    return lines, workers


def render_fleet_status(storage_url: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    studies, workers = fleet_snapshot(storage_url, now)
    out = [f"storage {db.mask_url(storage_url)}: {len(studies)} studies, "
           f"{sum(w.state == 'active' for w in workers)} active workers", ""]
    out.append(f"{'study':<24} {'state':<9} {'prio':>4} {'rung':>5} {'epochs':>13} {'ETA':>9}")
    for s in studies:
        eta = "-" if s.eta_seconds is None else _duration(s.eta_seconds)
        out.append(f"{s.name[:24]:<24} {s.state:<9} {s.priority:>4} {s.rung:>5} "
                   f"{f'{s.spent}/{s.planned}':>13} {eta:>9}")
    if not studies:
        out.append("(no study in this storage)")
    out.append("")
    out.append(f"{'worker':<32} {'host':<16} {'device':<8} {'state':<7} {'study':<20} "
               f"{'trial':>5} {'heartbeat':>10}")
    for w in workers:
        study = "-" if w.study == ANY_STUDY else w.study
        trial = "-" if w.current_trial is None else str(w.current_trial)
        out.append(f"{w.id[:32]:<32} {(w.host or '')[:16]:<16} {(w.device or '')[:8]:<8} "
                   f"{w.state:<7} {study[:20]:<20} {trial:>5} {_ago(now - w.heartbeat_at):>10}")
    if not workers:
        out.append("(no worker has attached yet)")
    remaining = [(s.planned - s.spent) * s.median_epoch for s in studies
                 if s.state != "finished" and s.median_epoch is not None]
    n_active = sum(w.state == "active" for w in workers)
    if remaining:
        out.append("")
        out.append(f"fleet ETA {_duration(sum(max(0.0, r) for r in remaining) / max(1, n_active))} "
                   f"with {max(1, n_active)} active worker(s)")
    return "\n".join(out)
