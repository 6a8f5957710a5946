"""Gangs through the study's storage: offers, joins at epoch boundaries, shrinking (issue 20).

No service of its own: the workers table carries it (hpo/service/db.py, the
``gang_*`` columns), so any worker that can reach the storage takes part.

* A worker that finds nothing to claim *offers* itself (``gang_offer``: its
  device kind). The offer lives while its heartbeat is fresh (younger than
  ``[study] lease_seconds``), so a worker SIGKILLed while offering, or while a
  gang member, drops out by itself; one that claims a trial or exits withdraws.
* A running trial's holder (rank 0), at each epoch boundary, reads the live
  offers, the gangs of the other running trials and the number of claimable
  trials, asks the pure policy (hpo/scheduling/gangs.py, ``plan_gangs``) and
  records its own gang for the next epoch in one transaction. A free offer is
  taken by a conditional UPDATE (``gang_trial IS NULL``) whose rowcount says
  whether this holder got it: two holders never share a member. While trials
  wait to be claimed the policy keeps that many offers free (and gives members
  back when the free ones are too few); they claim them. A worker about to
  claim first retracts its offer (``retract``, conditional too), so one a holder
  took in that instant stays a member rather than claiming as well.
* A member only waits (``assignment``): it trains nothing here, never records
  an epoch and never reports a value -- the holder does, exactly as alone. It
  counts as busy, and is freed when the holder's stint ends (``dissolve``) or,
  should the holder die, as soon as the trial's lease is no longer held.

Replay workers (hpo/service/trial_runs.py, ReplayRun) shorten the holder's
epoch to ``epoch_seconds / (k x efficiency)``. Training workers also form a
process group per gang: the holder publishes its address in the members' rows
(``publish``) and the epochs' protocol runs between the processes
(hpo/service/rendezvous.py); the rows still say who is in which gang.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hpo.scheduling.gangs import Idle, Running, plan_gangs
from hpo.scheduling.spec import StudySpec
from hpo.service import db
from hpo.service.coordination import NO_GANG, claimable

_FREE = {k: v for k, v in NO_GANG.items() if k != "gang_offer"}  # a member freed keeps its offer


def device_kind(device: str | None) -> str:
    """The kind a gang must share: "cuda" for cuda and cuda:K, else "cpu"."""
    return "cuda" if str(device or "").startswith("cuda") else "cpu"


@dataclass(frozen=True)
class Assignment:
    """A member's place: trial ``number`` held by ``holder``, at ``rank``, from ``epoch``;
    ``address`` and ``world``: the holder's process group, once published (training runs)."""

    number: int
    holder: str
    rank: int
    epoch: int
    address: str | None = None
    world: int | None = None


class GangBoard:
    """One study's offers and gangs, read and written in short transactions."""

    def __init__(self, engine: Engine, spec: StudySpec):
        self.engine, self.spec, self.study = engine, spec, spec.name

    def _alive(self, now: float):
        w = db.workers.c
        return sa.and_(w.study == self.study, w.state == "active", w.gang_offer.is_not(None),
                       w.heartbeat_at > now - self.spec.lease_seconds)

    # ---- the member's side ------------------------------------------------
    def offer(self, worker_id: str, kind: str) -> None:
        """Offer this worker (nothing to claim) to this study; an existing assignment is
        kept. A fleet worker's row moves to this study with its offer; one that is a
        member elsewhere stays there (its assignment is that study's)."""
        w = db.workers.c
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(
                w.id == worker_id, sa.or_(w.study == self.study, w.gang_trial.is_(None)))
                .values(study=self.study, gang_offer=kind, heartbeat_at=time.time()))

    def retract(self, worker_id: str) -> bool:
        """Withdraw this worker's offer before it tries to claim, unless a holder has just
        taken it: False then (it is a member now and claims nothing). The holder's take
        and this are conditional UPDATEs of the same row, so a worker never both claims
        a trial and counts as a rank of another's gang."""
        w = db.workers.c
        with self.engine.begin() as conn:
            return conn.execute(db.workers.update().where(
                w.id == worker_id, w.gang_trial.is_(None)).values(gang_offer=None)).rowcount == 1

    def withdraw(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id)
                         .values(**NO_GANG))

    def assignment(self, worker_id: str) -> Assignment | None:
        """This worker's gang, or None. An assignment whose trial is no longer held by its
        holder under a live lease (the holder died, or settled without dissolving) is
        cleared here, so a member never waits on a dead holder."""
        w, t = db.workers.c, db.trials.c
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(w.gang_trial, w.gang_holder, w.gang_rank, w.gang_epoch,
                                         w.gang_addr, w.gang_world)
                               .where(w.id == worker_id)).first()
            if row is None or row.gang_trial is None:
                return None
            held = conn.execute(sa.select(t.number).where(
                t.study == self.study, t.number == row.gang_trial, t.state == "running",
                t.lease_owner == row.gang_holder, t.lease_expires >= now)).first()
            if held is None:
                conn.execute(db.workers.update().where(
                    w.id == worker_id, w.gang_trial == row.gang_trial,
                    w.gang_holder == row.gang_holder).values(**_FREE))
                return None
        return Assignment(row.gang_trial, row.gang_holder, row.gang_rank or 0, row.gang_epoch or 0,
                          row.gang_addr, row.gang_world)

    def free(self, worker_id: str) -> None:
        """A member leaves its gang (it failed or was disbanded) and may be taken again."""
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(db.workers.c.id == worker_id).values(**_FREE))

    def ready(self, worker_id: str, place: "Assignment") -> None:
        """This member has built its trainer for ``place``'s trial: the holder may form with it."""
        w = db.workers.c
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(
                w.id == worker_id, w.gang_trial == place.number, w.gang_holder == place.holder)
                .values(gang_ready=1))

    def ready_members(self, holder_id: str, number: int) -> set[str]:
        """The members of this holder's gang that have built their trainers."""
        w = db.workers.c
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(w.id).where(
                w.gang_trial == number, w.gang_holder == holder_id, w.gang_ready == 1)).scalars())

    def params(self, number: int) -> dict:
        """Trial ``number``'s parameters (a member builds its trainer from them)."""
        t = db.trials.c
        with self.engine.connect() as conn:
            return json.loads(conn.execute(sa.select(t.params_json).where(
                t.study == self.study, t.number == number)).scalar_one())

    # ---- the holder's side ------------------------------------------------
    def regroup(self, holder_id: str, number: int, next_epoch: int, kind: str) -> tuple[str, ...]:
        """The gang (holder first) that trains trial ``number``'s epoch ``next_epoch``, recorded."""
        w, t = db.workers.c, db.trials.c
        now = time.time()
        with self.engine.begin() as conn:
            offers = conn.execute(sa.select(w.id, w.gang_offer, w.gang_trial, w.gang_holder,
                                            w.gang_rank).where(self._alive(now))).all()
            trials = conn.execute(sa.select(t.number, t.lease_owner, t.params_json).where(
                t.study == self.study, t.state == "running", t.lease_expires >= now)).all()
            waiting = conn.execute(sa.select(sa.func.count()).select_from(db.trials)
                                   .where(claimable(self.study, now))).scalar_one()
            owners = {r.lease_owner for r in trials} | {holder_id}
            kinds = {r.id: device_kind(r.device) for r in conn.execute(
                sa.select(w.id, w.device).where(w.id.in_(owners))).all()}
            kinds[holder_id] = kind
            running = []
            for r in trials:
                owner_kind = kinds.get(r.lease_owner, "cpu")
                if r.number != number and not self.spec.gangs_on(owner_kind):
                    continue
                members = sorted((o for o in offers if o.gang_trial == r.number
                                  and o.gang_holder == r.lease_owner), key=lambda o: o.gang_rank or 0)
                batch = self.spec.run_config(json.loads(r.params_json)).trainer.batch_size
                running.append(Running(r.number, r.lease_owner, owner_kind, batch,
                                       (r.lease_owner, *(m.id for m in members))))
            if not any(r.number == number for r in running):
                return (holder_id,)  # the lease is gone: this holder takes nobody
            idle = [Idle(o.id, o.gang_offer) for o in offers if o.gang_trial is None]
            planned = plan_gangs(running, idle, waiting, self.spec.gang_limits)[number]
            mine = {m for r in running if r.number == number for m in r.gang[1:]}
            gang = [holder_id]
            for member in planned[1:]:
                where = [w.id == member, self._alive(now)]
                if member in mine:
                    where += [w.gang_trial == number, w.gang_holder == holder_id]
                else:
                    where.append(w.gang_trial.is_(None))  # one holder per offer: see rowcount
                taken = conn.execute(db.workers.update().where(*where).values(
                    gang_trial=number, gang_holder=holder_id, gang_rank=len(gang),
                    gang_epoch=next_epoch)).rowcount == 1
                if taken:
                    gang.append(member)
            # Everyone else of this gang goes back to the pool: given back by the
            # policy, or dead (heartbeat too old to be read as an offer above).
            conn.execute(db.workers.update().where(
                w.gang_trial == number, w.gang_holder == holder_id, w.id.not_in(gang))
                .values(**_FREE))
        return tuple(gang)

    def publish(self, holder_id: str, number: int, members: tuple[str, ...], address: str) -> bool:
        """Tell ``members`` (rank order) where the holder's process group waits; False when
        one of them is no longer this holder's (it left or died), so nobody is told."""
        w = db.workers.c
        try:
            with self.engine.begin() as conn:
                for rank, member in enumerate(members, start=1):
                    told = conn.execute(db.workers.update().where(
                        w.id == member, w.gang_trial == number, w.gang_holder == holder_id).values(
                        gang_rank=rank, gang_addr=address, gang_world=len(members) + 1)).rowcount
                    if told != 1:
                        raise _NotTold  # rolls the others back
        except _NotTold:
            return False
        return True

    def dissolve(self, holder_id: str, number: int, keep_offers: bool = True) -> None:
        """The holder's stint is over: its members go back to the pool. After a broken
        gang (``keep_offers`` False) their offers go too: the dead one is not taken
        again, and the live ones offer themselves anew at their next idle turn."""
        w = db.workers.c
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(w.gang_trial == number, w.gang_holder == holder_id)
                         .values(**(_FREE if keep_offers else NO_GANG)))


class _NotTold(Exception):
    pass


def gangs_of(conn: sa.Connection, study: str) -> dict[int, list[str]]:
    """Running trials' members by trial (holder not included), in rank order; for status."""
    w, t = db.workers.c, db.trials.c
    rows = conn.execute(sa.select(w.id, w.gang_trial, w.gang_rank).select_from(
        db.workers.join(db.trials, sa.and_(t.study == w.study, t.number == w.gang_trial,
                                           t.lease_owner == w.gang_holder)))
        .where(w.study == study, w.state == "active", t.state == "running")
        .order_by(w.gang_trial, w.gang_rank)).all()
    gangs: dict[int, list[str]] = {}
    for r in rows:
        gangs.setdefault(r.gang_trial, []).append(r.id)
    return gangs
