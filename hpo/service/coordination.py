"""Claims, leases, pauses and rung decisions: the service's half of a study.

Every method is one short transaction on the service's tables (hpo/service/db.py), so
any number of workers on any number of machines can share a study:

* ``claim`` takes the first claimable trial -- waiting, or running with an
  expired lease (its worker died) -- with a compare-and-set update, so a trial
  is never held by two workers at once.
* ``renew`` extends the holder's lease; a worker that finds it no longer holds
  its lease (it stalled past the expiry and another worker took over) stops.
* ``record_epoch`` stores the epoch, its value and the new checkpoint, but only
  while the lease is held.
* ``settle`` ends a stint: it parks a trial at an undecided rung (paused), or
  marks it complete, pruned or failed; ``decide_rung`` asks the study's policy
  for a rung's verdict once its whole cohort is parked there and stores it (the
  rung's primary key makes the decision happen exactly once, whoever arrives last).

The coordinator decides nothing itself: what happens to a trial is the policy's
(hpo/scheduling/policy.py); this module only persists it, atomically.
"""

from __future__ import annotations

import json
import socket
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hpo.scheduling.policy import RungMember
from hpo.scheduling.rungs import RungDecision, is_finite
from hpo.scheduling.spec import StudySpec
from hpo.service import db

FINAL_STATES = ("pruned", "complete", "failed")
# A worker that claims or exits is in no gang and offers itself to none.
NO_GANG = {"gang_offer": None, "gang_trial": None, "gang_holder": None, "gang_rank": None,
           "gang_epoch": None, "gang_addr": None, "gang_world": None, "gang_ready": None}


def claimable(study: str, now: float):
    """The trials of ``study`` a worker may claim at ``now``: waiting, or running under an
    expired lease (its holder stalled or died). Claims and the gang policy's count agree."""
    t = db.trials.c
    return sa.and_(t.study == study, sa.or_(
        t.state == "waiting", sa.and_(t.state == "running", t.lease_expires < now)))


@dataclass(frozen=True)
class Claim:
    """A trial held by this worker: where it stands and how far to train it now."""

    number: int
    optuna_trial_id: int
    params: dict[str, Any]
    rung: int
    target_epoch: int
    epochs_done: int
    checkpoint_id: str | None
    takeover: bool  # the previous holder's lease had expired


class SpecMismatch(db.SaanError):
    """A study file differs from the stored study's grid, scheduler or settings."""


class Coordinator:
    def __init__(self, engine: Engine, spec: StudySpec):
        self.engine = engine
        self.spec = spec
        self.study = spec.name

    # ---- study -----------------------------------------------------------
    def stored_study(self) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.studies).where(db.studies.c.name == self.study)).first()
        return row._asdict() if row else None

    def check_spec(self, stored: dict) -> None:
        if stored["spec_hash"] == self.spec.spec_hash():
            return
        theirs = json.loads(stored["spec_json"])
        ours = json.loads(json.dumps(self.spec.identity(), default=str))
        diffs = [key for key in ("grid", "scheduler", "metric", "direction", "run")
                 if theirs.get(key) != ours.get(key)]
        raise SpecMismatch(
            f"{self.spec.source}: {', '.join(diffs) or 'spec'}: differs from the stored study "
            f"{self.study!r} (stored spec hash {stored['spec_hash']}, this file "
            f"{self.spec.spec_hash()}); use a new study name or the original file")

    def register_study(self) -> bool:
        """Insert the study row; False when another launcher got there first."""
        try:
            with self.engine.begin() as conn:
                conn.execute(db.studies.insert().values(
                    name=self.study, spec_hash=self.spec.spec_hash(),
                    spec_json=json.dumps(self.spec.identity(), default=str),
                    run_json=json.dumps(self.spec.run.to_mapping(), default=str),
                    artifacts=self.spec.artifacts,
                    settings_json=json.dumps(self.spec.settings()), priority=self.spec.priority,
                    created_at=time.time(), ready=False))
            return True
        except sa.exc.IntegrityError:
            return False

    def store_settings(self) -> None:
        """Write this file's unhashed settings (priority, lease) over the stored ones.

        A study created before these columns existed gets them here; a launch
        with a new priority re-orders the fleet's work without a new study.
        """
        with self.engine.begin() as conn:
            conn.execute(db.studies.update().where(db.studies.c.name == self.study).values(
                settings_json=json.dumps(self.spec.settings()), priority=self.spec.priority))

    def add_trials(self, created: Iterable[tuple[int, int, dict]]) -> None:
        """Make Optuna's new trials claimable; numbers already here are left as they are
        (a bracket opener that died after adding some is finished by its successor)."""
        policy = self.spec.policy
        now = time.time()
        t = db.trials.c
        with self.engine.begin() as conn:
            present = set(conn.execute(sa.select(t.number).where(t.study == self.study)).scalars())
            for number, trial_id, params in created:
                if number in present:
                    continue
                rung, first_target = policy.entry(number)
                conn.execute(db.trials.insert().values(
                    study=self.study, number=number, optuna_trial_id=trial_id,
                    params_json=json.dumps(params), state="waiting", rung=rung,
                    target_epoch=first_target, epochs_done=0, finalized=False, claims=0,
                    updated_at=now))
            conn.execute(db.studies.update().where(db.studies.c.name == self.study)
                         .values(ready=True))

    # ---- workers ---------------------------------------------------------
    def register_worker(self, device: str) -> str:
        worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(db.workers.insert().values(
                id=worker_id, study=self.study, host=socket.gethostname(), pid=os.getpid(),
                device=device, state="active", started_at=now, heartbeat_at=now))
        return worker_id

    def worker_exited(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(state="exited", current_trial=None, heartbeat_at=time.time(),
                                 **NO_GANG))

    # ---- claims and leases ----------------------------------------------
    def claim(self, worker_id: str, claim_order: Callable[[int], int] | None = None) -> Claim | None:
        """Atomically take one claimable trial, or None when there is none right now.

        Higher rungs first, then ``claim_order(trial number)`` (default: the
        number); ``simulate --order-seed`` shuffles it to show decisions do not
        depend on it.
        """
        now = time.time()
        t = db.trials.c
        open_now = claimable(self.study, now)
        with self.engine.begin() as conn:
            query = sa.select(db.trials).where(open_now).order_by(t.rung.desc(), t.number)
            if not db.is_sqlite(self.engine):
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                return None
            if claim_order is not None:
                rows = sorted(rows, key=lambda r: (-r.rung, claim_order(r.number)))
            row = rows[0]
            updated = conn.execute(
                db.trials.update().where(open_now, t.number == row.number).values(
                    state="running", lease_owner=worker_id,
                    lease_expires=now + self.spec.lease_seconds,
                    claims=t.claims + 1, updated_at=now))
            if updated.rowcount != 1:
                return None  # lost a race; the caller simply tries again
            # study: a worker serving a storage moves between studies.
            # A gang offer is withdrawn with the claim (hpo/service/gang_offers.py).
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(study=self.study, current_trial=row.number, heartbeat_at=now,
                                 **NO_GANG))
        return Claim(number=row.number, optuna_trial_id=row.optuna_trial_id,
                     params=json.loads(row.params_json), rung=row.rung,
                     target_epoch=row.target_epoch, epochs_done=row.epochs_done,
                     checkpoint_id=row.checkpoint_id, takeover=row.state == "running")

    def renew(self, worker_id: str, number: int | None) -> bool:
        """Heartbeat; extend the lease on ``number``. False when the lease was lost."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(heartbeat_at=now))
            if number is None:
                return True
            result = conn.execute(db.trials.update().where(
                db.trials.c.study == self.study, db.trials.c.number == number,
                db.trials.c.state == "running", db.trials.c.lease_owner == worker_id)
                .values(lease_expires=now + self.spec.lease_seconds))
            return result.rowcount == 1

    def _held(self, worker_id: str, number: int):
        t = db.trials.c
        return sa.and_(t.study == self.study, t.number == number, t.state == "running",
                       t.lease_owner == worker_id)

    def record_epoch(self, worker_id: str, number: int, epoch: int, value: float,
                     metrics: dict, started_at: float, checkpoint_id: str | None,
                     gang: tuple[str, ...] = ()) -> bool:
        """Store a trained epoch under the lease; False (and kept=False) if the lease was lost.

        ``gang``: the members that trained it with the holder (none: alone)."""
        now = time.time()
        with self.engine.begin() as conn:
            held = conn.execute(db.trials.update().where(self._held(worker_id, number)).values(
                epochs_done=epoch, last_value=value, checkpoint_id=checkpoint_id,
                lease_expires=now + self.spec.lease_seconds, updated_at=now)).rowcount == 1
            if held:
                # An epoch retrained (its checkpoint was damaged) supersedes the
                # row recorded before: one counted row per epoch; the old one
                # stays, uncounted, as spent work.
                e = db.epochs.c
                conn.execute(db.epochs.update().where(
                    e.study == self.study, e.number == number, e.epoch == epoch,
                    e.kept.is_(True)).values(kept=False))
            conn.execute(db.epochs.insert().values(
                study=self.study, number=number, epoch=epoch, worker=worker_id,
                started_at=started_at, finished_at=now, value=value,
                metrics_json=json.dumps(metrics, default=float), kept=held,
                gang_json=json.dumps(list(gang)) if gang else None))
        return held

    def release(self, worker_id: str, number: int) -> None:
        """Give a trial back (SIGTERM): another worker resumes it from its checkpoint."""
        with self.engine.begin() as conn:
            conn.execute(db.trials.update().where(self._held(worker_id, number)).values(
                state="waiting", lease_owner=None, lease_expires=None, updated_at=time.time()))
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(current_trial=None))

    def record_failure(self, worker_id: str, number: int, error: dict, retryable: bool) -> str | None:
        """A held trial's run raised: back to waiting (any worker resumes it from its
        checkpoint) while it has retries left and ``retryable``, else failed.

        The error ({type, message, host, epoch}) is stored with the failure count;
        returns the trial's new state, None when the lease was no longer held.
        """
        t = db.trials.c
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.failures).where(self._held(worker_id, number))).first()
            if row is None:
                return None
            failures = (row.failures or 0) + 1
            final = not retryable or failures > self.spec.max_retries
            state = "failed" if final else "waiting"
            conn.execute(db.trials.update().where(self._held(worker_id, number)).values(
                state=state, lease_owner=None, lease_expires=None, failures=failures,
                error_json=json.dumps({**error, "failures": failures, "final": final}),
                finalized=False, updated_at=now))
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(current_trial=None))
        return state

    def last_value(self, number: int) -> float | None:
        t = db.trials.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.last_value).where(
                t.study == self.study, t.number == number)).scalar_one()

    def settle(self, worker_id: str, number: int, state: str) -> bool:
        """End a held trial's stint: paused (at a rung), complete, pruned or failed."""
        with self.engine.begin() as conn:
            ok = conn.execute(db.trials.update().where(self._held(worker_id, number)).values(
                state=state, lease_owner=None, lease_expires=None, updated_at=time.time(),
                finalized=False)).rowcount == 1
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(current_trial=None))
        return ok

    # ---- rung decisions -------------------------------------------------
    def decide_rung(self, rung: int, decided_by: str) -> RungDecision | None:
        """Decide ``rung`` if its cohort is complete and nobody decided it yet."""
        try:
            return self._decide_rung(rung, decided_by)
        except sa.exc.IntegrityError:
            # Two workers completed the cohort at once (PostgreSQL reads
            # committed data, so both saw no decision yet): the rung's primary
            # key let one insert; the other's whole transaction rolled back.
            return None

    def _decide_rung(self, rung: int, decided_by: str) -> RungDecision | None:
        t = db.trials.c
        with self.engine.begin() as conn:
            if conn.execute(sa.select(db.rungs.c.rung).where(
                    db.rungs.c.study == self.study, db.rungs.c.rung == rung)).first():
                return None
            rows = conn.execute(sa.select(t.number, t.state, t.epochs_done, t.last_value).where(
                t.study == self.study, t.rung == rung, t.state != "failed")).all()
            # Non-finite values are stored as NULL; one written as NaN/inf by an
            # older release means the same.
            verdict = self.spec.policy.decide_rung(rung, [
                RungMember(r.number, r.last_value if is_finite(r.last_value) else None,
                           r.epochs_done, r.state == "paused") for r in rows])
            if verdict is None:
                return None
            decision = verdict.decision
            conn.execute(db.rungs.insert().values(
                study=self.study, rung=rung, epoch=decision.epoch,
                values_json=json.dumps({str(k): v for k, v in decision.values.items()}),
                survivors_json=json.dumps(list(decision.survivors)),
                pruned_json=json.dumps(list(decision.pruned)),
                decided_at=time.time(), decided_by=decided_by))
            now = time.time()
            if verdict.complete:
                conn.execute(db.trials.update().where(
                    t.study == self.study, t.number.in_(verdict.complete))
                    .values(state="complete", finalized=False, updated_at=now))
            if verdict.promote:
                conn.execute(db.trials.update().where(
                    t.study == self.study, t.number.in_(verdict.promote))
                    .values(state="waiting", rung=verdict.next_rung,
                            target_epoch=verdict.next_target, updated_at=now))
            if verdict.prune:
                conn.execute(db.trials.update().where(
                    t.study == self.study, t.number.in_(verdict.prune))
                    .values(state="pruned", finalized=False, updated_at=now))
        return decision

    # ---- finishing -------------------------------------------------------
    def unfinalized(self) -> list[Any]:
        t = db.trials.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.number, t.state, t.last_value, t.checkpoint_id).where(
                t.study == self.study, t.state.in_(FINAL_STATES), t.finalized.is_(False))).all()

    def mark_finalized(self, number: int, keep_checkpoint: bool) -> None:
        values: dict[str, Any] = {"finalized": True}
        if not keep_checkpoint:
            values["checkpoint_id"] = None
        with self.engine.begin() as conn:
            conn.execute(db.trials.update().where(db.trials.c.study == self.study,
                                                  db.trials.c.number == number).values(**values))

    def keep_checkpoint(self, number: int, checkpoint_id: str) -> None:
        """Point a finished trial at a checkpoint written after the study (a retrained winner)."""
        with self.engine.begin() as conn:
            conn.execute(db.trials.update().where(db.trials.c.study == self.study,
                                                  db.trials.c.number == number)
                         .values(checkpoint_id=checkpoint_id))

    def referenced_checkpoints(self) -> set[str]:
        """Artifact ids some trial of this study still points to."""
        t = db.trials.c
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(t.checkpoint_id).where(
                t.study == self.study, t.checkpoint_id.is_not(None))).scalars())

    def paused_rungs(self) -> list[int]:
        """Rungs with trials parked at them (the only rungs that can be decidable)."""
        t = db.trials.c
        with self.engine.connect() as conn:
            return sorted(conn.execute(sa.select(t.rung).distinct().where(
                t.study == self.study, t.state == "paused")).scalars())

    def open_count(self) -> int:
        """Trials not yet in a final state; the study is finished when this is 0.

        A space study's trials of brackets not opened yet count as open: they
        exist in the plan, only their configurations wait for earlier results.
        """
        t = db.trials.c
        with self.engine.connect() as conn:
            open_now = conn.execute(sa.select(sa.func.count()).where(
                t.study == self.study, t.state.not_in(FINAL_STATES))).scalar_one()
            if not self.spec.sampled:
                return open_now
            created = conn.execute(sa.select(sa.func.count()).where(
                t.study == self.study)).scalar_one()
        return open_now + max(0, self.spec.n_configurations() - created)

    # ---- brackets of a space study (kind hyperband-sync) ------------------
    def trial_states(self) -> dict[int, str]:
        t = db.trials.c
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(t.number, t.state).where(t.study == self.study)).all())

    def results(self, numbers: Iterable[int]) -> dict[int, tuple[dict, dict[int, float]]]:
        """(params, kept value by epoch) of ``numbers``: what a sampler may learn from."""
        wanted = set(numbers)
        t, e = db.trials.c, db.epochs.c
        with self.engine.connect() as conn:
            params = {n: json.loads(p) for n, p in conn.execute(
                sa.select(t.number, t.params_json).where(t.study == self.study)).all()
                if n in wanted}
            curves: dict[int, dict[int, float]] = {n: {} for n in params}
            for number, epoch, value in conn.execute(sa.select(e.number, e.epoch, e.value).where(
                    e.study == self.study, e.kept.is_(True))).all():
                if number in curves:
                    curves[number][epoch] = value if is_finite(value) else float("nan")
        return {n: (params[n], curves[n]) for n in sorted(params)}

    def take_bracket(self, bracket: int, owner: str, params: list[dict]) -> list[dict] | None:
        """Become the opener of ``bracket``: its drawn configurations, or None while another
        live opener holds it (or it is open). A row older than the lease is taken over."""
        now = time.time()
        b = db.brackets.c
        try:
            with self.engine.begin() as conn:
                conn.execute(db.brackets.insert().values(
                    study=self.study, bracket=bracket, owner=owner, taken_at=now,
                    params_json=json.dumps(params), opened=False))
            return params
        except sa.exc.IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(db.brackets).where(
                b.study == self.study, b.bracket == bracket)).first()
            if row is None or row.opened:
                return None
            taken = conn.execute(db.brackets.update().where(
                b.study == self.study, b.bracket == bracket, b.opened.is_(False),
                b.taken_at == row.taken_at, b.taken_at < now - self.spec.lease_seconds)
                .values(owner=owner, taken_at=now)).rowcount == 1
        return json.loads(row.params_json) if taken else None

    def bracket_opened(self, bracket: int) -> None:
        b = db.brackets.c
        with self.engine.begin() as conn:
            conn.execute(db.brackets.update().where(b.study == self.study, b.bracket == bracket)
                         .values(opened=True))
