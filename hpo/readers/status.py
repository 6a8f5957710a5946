"""Where a study stands: rungs, trials, workers, budget and ETA."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import sqlalchemy as sa

from hpo.readers.failures import describe, error_of
from hpo.service import db
from hpo.service.gang_offers import gangs_of
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
        # A read-only database from before gangs has no gang columns: no gangs then.
        has_gangs = "gang_trial" in {c["name"] for c in sa.inspect(conn).get_columns(db.workers.name)}
        gangs = gangs_of(conn, spec.name) if has_gangs else {}
    durations = [e.finished_at - e.started_at for e in epochs]
    spent = len(epochs)
    planned = spec.planned_epochs()
    live = live_workers(workers, spec.lease_seconds)
    open_trials = [t for t in trials if t.state not in ("pruned", "complete", "failed")]
    eta = None
    if durations and open_trials:
        remaining = max(0, planned - spent)
        eta = remaining * statistics.median(durations) / max(1, len(live))
    return {
        "trials": trials, "rungs": rungs, "workers": workers,
        "epochs_spent": spent, "planned": planned, "full_grid": spec.full_grid_epochs(),
        "rungs_decided": len(rungs), "running": sum(t.state == "running" for t in trials),
        "finished": not open_trials and bool(trials),
        "median_epoch_seconds": statistics.median(durations) if durations else None,
        "eta_seconds": eta, "live_workers": len(live), "gangs": gangs,
    }


def live_workers(workers, lease_seconds: float, now: float | None = None) -> list:
    """Workers still beating: registered active and heard from within a lease.

    A worker renews its heartbeat every lease/3 seconds; one killed without
    deregistering stays "active" in the table but falls silent, so the ETA
    must not count it.
    """
    now = time.time() if now is None else now
    return [w for w in workers if w.state == "active" and now - w.heartbeat_at <= lease_seconds]


def progress_fields(spec: StudySpec, snap: dict[str, Any]) -> dict[str, Any]:
    """What the live progress line shows, from a snapshot (pure)."""
    states = [t.state for t in snap["trials"]]
    n_rungs = len(spec.boundaries)
    if spec.sampled:  # brackets: the furthest bracket opened, and its rung within the bracket
        policy = spec.policy
        rung = max((t.rung for t in snap["trials"]), default=0)
        bracket = policy.bracket_of_rung(rung)
        text = (f"bracket {bracket.index + 1}/{len(policy.brackets())} · rung "
                f"{rung - bracket.first_rung + 1}/{len(bracket.levels)} · running "
                f"{states.count('running')} · paused {states.count('paused')} · pruned "
                f"{states.count('pruned')}" + (" · finished" if snap["finished"] else ""))
        return {"epochs_spent": snap["epochs_spent"], "planned": snap["planned"], "rung": rung,
                "text": text}
    if spec.scheduler.kind == "sync-halving":
        rung = min(snap["rungs_decided"], n_rungs - 1)  # the rung being trained towards
    else:
        rung = max((t.rung for t in snap["trials"] if t.state == "running"), default=0)
    text = (f"rung {rung + 1}/{n_rungs} · running {states.count('running')} · "
            f"paused {states.count('paused')} · pruned {states.count('pruned')}")
    if snap["finished"]:
        text += " · finished"
    return {"epochs_spent": snap["epochs_spent"], "planned": snap["planned"], "rung": rung,
            "text": text}


def leader(trials, direction: str):
    """The winner of a finished study, or the current leader of a running one (pure).

    Of the trials still in the race (not pruned or failed) with a reported
    value, the one furthest along (most epochs), then the best value, then the
    lower trial number -- the same tie-break as a rung decision.
    """
    sign = -1 if direction == "maximize" else 1
    alive = [t for t in trials if t.state not in ("pruned", "failed") and t.last_value is not None]
    if not alive:
        return None
    return min(alive, key=lambda t: (-t.epochs_done, sign * t.last_value, t.number))


def render_status(spec: StudySpec, storage_url: str, now: float | None = None) -> str:
    snap = progress_snapshot(spec, storage_url)
    now = time.time() if now is None else now
    lines = [f"study {spec.name!r} on {db.mask_url(storage_url)}",
             f"scheduler {spec.scheduler.kind}, eta {spec.scheduler.eta}, boundaries "
             f"{spec.boundaries}, objective {spec.metric} ({spec.direction})", ""]
    decided = {r.rung: r for r in snap["rungs"]}
    lines.append(f"{'rung':>4} {'epoch':>5} {'entered':>7} {'waiting':>7} {'running':>7} "
                 f"{'paused':>6} {'pruned':>6} {'decided':>8}")
    for k, boundary, ladder_end, label in spec.policy.rung_table():
        here = [t for t in snap["trials"] if t.rung == k]
        entered = len(here) + sum(k < t.rung <= ladder_end for t in snap["trials"])
        states = [t.state for t in here]
        count = states.count
        verdict = "-"
        if k in decided:
            verdict = f"{len(json.loads(decided[k].survivors_json))} kept"
        lines.append(f"{k:>4} {boundary:>5} {entered:>7} {count('waiting'):>7} "
                     f"{count('running'):>7} {count('paused'):>6} {count('pruned'):>6} {verdict:>8}"
                     + (f"  {label}" if label else ""))
    complete = [t for t in snap["trials"] if t.state == "complete"]
    failed = [t for t in snap["trials"] if t.state == "failed"]
    lines.append(f"complete: {len(complete)}  failed: {len(failed)}")
    best = leader(snap["trials"], spec.direction)
    if best is not None:
        title = "winner" if snap["finished"] else "leader"
        lines.append(f"{title}: trial {best.number} {json.loads(best.params_json)} "
                     f"{spec.metric}={best.last_value:.4f} after {best.epochs_done} epochs")
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
    lines.append(f"{'worker':<32} {'host':<16} {'device':<10} {'state':<7} {'trial':>5} {'heartbeat':>10}")
    live_ids = {w.id for w in live_workers(snap["workers"], spec.lease_seconds, now)}
    for w in snap["workers"]:
        trial = "-" if w.current_trial is None else str(w.current_trial)
        member_of = next((n for n, ms in (snap.get("gangs") or {}).items() if w.id in ms), None)
        if member_of is not None:
            trial = f"{member_of}+"  # a gang member of that trial (see "gangs" below)
        # "silent": registered active but no heartbeat within a lease (killed, or its host is gone)
        state = "silent" if w.state == "active" and w.id not in live_ids else w.state
        lines.append(f"{w.id[:32]:<32} {(w.host or '')[:16]:<16} {(w.device or '')[:10]:<10} "
                     f"{state:<7} {trial:>5} {_ago(now - w.heartbeat_at):>10}")
    if not snap["workers"]:
        lines.append("(no worker has attached yet)")
    lines += gang_lines(snap)
    lines.append("")
    everything = "every configuration drawn, to the end" if spec.sampled else "full grid"
    budget = (f"epochs spent {snap['epochs_spent']} of {snap['planned']} planned "
              f"({everything} {snap['full_grid']})")
    if snap["median_epoch_seconds"] is not None:
        budget += f"; median epoch {snap['median_epoch_seconds']:.2f}s"
    lines.append(budget)
    if snap["finished"]:
        lines.append("finished")
    elif snap["eta_seconds"] is not None:
        live = len(live_workers(snap["workers"], spec.lease_seconds, now))
        if live:
            lines.append(f"ETA {_duration(snap['eta_seconds'])} with {live} live worker(s)")
        else:
            lines.append(f"ETA {_duration(snap['eta_seconds'])} for one worker; no worker has a "
                         "live heartbeat (start one with saan-hpo worker or launch)")
    return "\n".join(lines)


def gang_lines(snap: dict[str, Any]) -> list[str]:
    """Per running trial trained by a gang: its size, holder (rank 0) and members (pure)."""
    gangs = snap.get("gangs") or {}
    holders = {t.number: t.lease_owner for t in snap["trials"] if t.state == "running"}
    lines = []
    for number, members in sorted(gangs.items()):
        lines.append(f"  trial {number}: gang of {len(members) + 1} (rank 0 "
                     f"{(holders.get(number) or '?')[:32]}; " + ", ".join(members) + ")")
    return ["gangs (data_parallel):", *lines] if lines else []


def _ago(seconds: float) -> str:
    return f"{_duration(max(0.0, seconds))} ago"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
