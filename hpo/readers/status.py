"""Where a study stands: rungs, trials, workers, budget and ETA."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import sqlalchemy as sa

from hpo.readers.failures import describe, error_of
from hpo.service import db
from hpo.scheduling.spec import StudySpec


def progress_snapshot(spec: StudySpec, storage_url: str) -> dict[str, Any]:
    with db.reading(storage_url) as conn:
        trials = conn.execute(sa.select(db.trials).where(db.trials.c.study == spec.name)).all()
        rungs = conn.execute(sa.select(db.rungs).where(db.rungs.c.study == spec.name)
                             .order_by(db.rungs.c.rung)).all()
        workers = conn.execute(sa.select(db.workers).where(db.workers.c.study == spec.name)
                               .order_by(db.workers.c.started_at)).all()
        epochs = conn.execute(sa.select(db.epochs.c.started_at, db.epochs.c.finished_at)
                              .where(db.epochs.c.study == spec.name)).all()
    durations = [e.finished_at - e.started_at for e in epochs]
    spent = len(epochs)
    planned = spec.planned_epochs()
    active = [w for w in workers if w.state == "active"]
    open_trials = [t for t in trials if t.state not in ("pruned", "complete", "failed")]
    eta = None
    if durations and open_trials:
        remaining = max(0, planned - spent)
        eta = remaining * statistics.median(durations) / max(1, len(active))
    return {
        "trials": trials, "rungs": rungs, "workers": workers,
        "epochs_spent": spent, "planned": planned, "full_grid": spec.full_grid_epochs(),
        "rungs_decided": len(rungs), "running": sum(t.state == "running" for t in trials),
        "finished": not open_trials and bool(trials),
        "median_epoch_seconds": statistics.median(durations) if durations else None,
        "eta_seconds": eta,
    }


def render_status(spec: StudySpec, storage_url: str, now: float | None = None) -> str:
    snap = progress_snapshot(spec, storage_url)
    now = time.time() if now is None else now
    lines = [f"study {spec.name!r} on {db.mask_url(storage_url)}",
             f"scheduler {spec.scheduler.kind}, eta {spec.scheduler.eta}, boundaries "
             f"{spec.boundaries}, objective {spec.metric} ({spec.direction})", ""]
    decided = {r.rung: r for r in snap["rungs"]}
    lines.append(f"{'rung':>4} {'epoch':>5} {'entered':>7} {'waiting':>7} {'running':>7} "
                 f"{'paused':>6} {'pruned':>6} {'decided':>8}")
    for k, boundary in enumerate(spec.boundaries):
        here = [t for t in snap["trials"] if t.rung == k]
        entered = len(here) + sum(t.rung > k for t in snap["trials"])
        states = [t.state for t in here]
        count = states.count
        verdict = "-"
        if k in decided:
            verdict = f"{len(json.loads(decided[k].survivors_json))} kept"
        lines.append(f"{k:>4} {boundary:>5} {entered:>7} {count('waiting'):>7} "
                     f"{count('running'):>7} {count('paused'):>6} {count('pruned'):>6} {verdict:>8}")
    complete = [t for t in snap["trials"] if t.state == "complete"]
    failed = [t for t in snap["trials"] if t.state == "failed"]
    lines.append(f"complete: {len(complete)}  failed: {len(failed)}")
    for t in snap["trials"]:  # failed for good, or put back to be retried from its checkpoint
        error = error_of(t)
        if error is not None:
            what = {"failed": "FAILED", "complete": "recovered", "pruned": "recovered"}.get(
                t.state, "retried from its checkpoint")
            lines.append(f"  trial {t.number} {what}: {describe(error)}")
    non_finite = [t.number for t in snap["trials"] if t.epochs_done and t.last_value is None]
    if non_finite:
        lines.append(f"non-finite {spec.metric} (ranks last at its rung): trial(s) "
                     + ", ".join(str(n) for n in non_finite))
    lines.append("")
    lines.append(f"{'worker':<32} {'host':<16} {'device':<8} {'state':<7} {'trial':>5} {'heartbeat':>10}")
    for w in snap["workers"]:
        trial = "-" if w.current_trial is None else str(w.current_trial)
        lines.append(f"{w.id[:32]:<32} {(w.host or '')[:16]:<16} {(w.device or '')[:8]:<8} "
                     f"{w.state:<7} {trial:>5} {_ago(now - w.heartbeat_at):>10}")
    if not snap["workers"]:
        lines.append("(no worker has attached yet)")
    lines.append("")
    budget = (f"epochs spent {snap['epochs_spent']} of {snap['planned']} planned "
              f"(full grid {snap['full_grid']})")
    if snap["median_epoch_seconds"] is not None:
        budget += f"; median epoch {snap['median_epoch_seconds']:.2f}s"
    lines.append(budget)
    if snap["finished"]:
        lines.append("finished")
    elif snap["eta_seconds"] is not None:
        lines.append(f"ETA {_duration(snap['eta_seconds'])} with "
                     f"{max(1, sum(w.state == 'active' for w in snap['workers']))} active worker(s)")
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    return f"{_duration(max(0.0, seconds))} ago"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
