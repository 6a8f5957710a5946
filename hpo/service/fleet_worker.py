"""A worker that serves a storage: every unfinished study in it, or the ones named.

It rebuilds each study's spec from the storage (hpo/service/stored_studies.py),
puts this machine's paths in (hpo/service/machine.py), and before each claim
asks the pure claim rule (hpo/scheduling/fleet.py) which study to serve. The
stint itself -- claim, train to the next boundary, settle, decide the rung --
is the single-study worker's own code (hpo/service/worker.py), one instance per
study, so a study's decisions are the same whichever worker, alone or in a
fleet, trained its trials.

The worker has one id, one heartbeat (renewing the lease of whatever it holds
now, in whichever study) and one stop flag. SIGTERM / SIGINT: the epoch in
flight finishes and is checkpointed, the trial is given back, exit 0. It exits
when every study it serves is finished. Studies created while it runs are
picked up; one that needs a data root this worker lacks is skipped (logged
once); at start that is an error, before anything is claimed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Mapping

import sqlalchemy as sa

from hpo.scheduling.fleet import claim_order
from hpo.scheduling.spec import StudySpec
from hpo.service import db, optuna_link
from hpo.service.machine import MachinePaths, MissingDataRoot
from hpo.service.stored_studies import (ANY_STUDY, ready_rows, spec_from_row, study_loads,
                                        unfinished_names)
from hpo.service.stops import StopRequests
from hpo.service.trial_runs import TrialRun
from hpo.service.worker import Worker, run_until_stopped

log = logging.getLogger(__name__)

# Trials of kinds without rungs (none, asha, hyperband) are trained in stints of
# at most this many epochs (Worker._stint_end): a quarter of the published
# 44-epoch studies. Giving a trial back costs one checkpoint load, seconds
# against epochs of minutes; without it 15 trials of 44 epochs on 8 GPUs leave
# most of them idle while the last few finish (bench/scaling.py --fleet).
DEFAULT_STINT_EPOCHS = 11

RunFactory = Callable[[Mapping[str, Any]], TrialRun]


class UnknownStudy(db.SaanError):
    """--study names a study the storage does not hold."""


class FleetWorker:
    def __init__(self, storage_url: str, machine: MachinePaths,
                 make_factory: Callable[[StudySpec], RunFactory], names: list[str] | None = None,
                 poll_seconds: float = 0.2, stint_epochs: int | None = DEFAULT_STINT_EPOCHS,
                 stops: StopRequests | None = None):
        self.storage_url = storage_url
        self.machine = machine
        self.make_factory = make_factory
        self.names = list(dict.fromkeys(names)) if names else None
        self.poll_seconds = poll_seconds
        self.stint_epochs = stint_epochs
        # The engine of the service's tables and Optuna's storage, shared by every
        # study served (one pool on PostgreSQL: optuna_link.storage_and_engine),
        # so a worker's connections do not grow with the studies (README,
        # "PostgreSQL for a large fleet"). Opened by run(): opening connects.
        self.engine: sa.Engine | None = None
        self.optuna_storage = None
        self.studies: dict[str, Worker] = {}  # per served study, built on first sight
        self.skipped: set[str] = set()  # studies this machine cannot train
        self.worker_id: str | None = None
        self.active: Worker | None = None
        # One set of stop flags for every study served (hpo/service/stops.py).
        self.stops = stops if stops is not None else StopRequests()
        self._own_stops = stops is None
        self.stop_requested = self.stops.graceful
        self._done = threading.Event()

    # ---- which studies ----------------------------------------------------
    def check_startup(self) -> list[str]:
        """The unfinished served studies; every problem is an error before any claim."""
        with self.engine.connect() as conn:
            rows = ready_rows(conn, self.names)
            if self.names is not None:
                missing = sorted(set(self.names) - {r.name for r in rows})
                if missing:
                    raise UnknownStudy(f"storage {db.mask_url(self.storage_url)}: no study "
                                       f"{', '.join(map(repr, missing))} (--study)")
            open_names = set(unfinished_names(conn, [r.name for r in rows]))
        for row in rows:
            if row.name in open_names:
                spec = spec_from_row(row, self.storage_url)
                self.machine.check(spec, db.mask_url(self.storage_url))
        return sorted(open_names)

    def discover(self) -> list[str]:
        """Unfinished studies this worker serves, building the ones it has not seen."""
        with self.engine.connect() as conn:
            rows = ready_rows(conn, self.names)
            open_names = unfinished_names(conn, [r.name for r in rows])
        for row in rows:
            if row.name in self.studies or row.name in self.skipped or row.name not in open_names:
                continue
            spec = spec_from_row(row, self.storage_url)
            try:
                self.machine.check(spec, db.mask_url(self.storage_url))
            except MissingDataRoot as err:
                log.warning("skipping %s", err)
                self.skipped.add(row.name)
                continue
            self.studies[row.name] = self._study_worker(self.machine.apply(spec))
        return [name for name in open_names if name in self.studies]

    def _study_worker(self, spec: StudySpec) -> Worker:
        worker = Worker.attach(spec, self.storage_url, self.make_factory(spec),
                               artifacts=spec.artifacts, engine=self.engine,
                               optuna_storage=self.optuna_storage,
                               device=spec.run.trainer.device,
                               poll_seconds=self.poll_seconds, stops=self.stops)
        # One worker in the storage's eyes: same id, same stop flags for every study.
        worker.worker_id = self.worker_id
        worker.stint_epochs = self.stint_epochs
        log.info("serving study %r (%s, %d configurations, priority %d)", spec.name,
                 spec.scheduler.kind, spec.n_configurations(), spec.priority)
        return worker

    # ---- lifecycle --------------------------------------------------------
    def run(self) -> int:
        self.optuna_storage, self.engine = db.retrying(optuna_link.storage_and_engine,
                                                       self.storage_url, log=log)
        db.retrying(self.check_startup, log=log)
        self.worker_id = db.retrying(self._register, log=log)
        log.info("worker %s serving %s on %s (device %s)", self.worker_id,
                 ", ".join(self.names) if self.names else "every study",
                 db.mask_url(self.storage_url), self.machine.device or "auto")
        restore = self.stops.install() if self._own_stops else (lambda: None)
        heartbeat = threading.Thread(target=self._heartbeat, name="saan-hpo-heartbeat", daemon=True)
        heartbeat.start()
        return run_until_stopped(self._serve, self.stops, lambda: self._leave(restore))

    def _serve(self) -> None:
        while not self.stop_requested.is_set():
            open_names = db.retrying(self.discover, log=log)
            for worker in self.studies.values():
                db.retrying(worker.finalize, log=log)
            if not open_names:
                log.info("every study served is finished")
                break
            if self._serve_gang(open_names):
                continue
            held = db.retrying(self._claim, open_names, log=log)
            if held is not None:
                self._train(*held)
                continue
            for name in open_names:
                self.studies[name]._decide_ready_rungs()
            self._offer(open_names)
            self.stop_requested.wait(self.poll_seconds)  # a stop ends the wait
        if not self.stops.hard.is_set():
            for worker in self.studies.values():
                db.retrying(worker.finalize, log=log)

    def _leave(self, restore: Callable[[], Any]) -> None:
        self._done.set()
        restore()
        db.retrying(self._exited, log=log, deadline=30)
        for worker in self.studies.values():
            worker.close()
        self.engine.dispose()
        self.optuna_storage.engine.dispose()  # the same engine on PostgreSQL: disposing twice is harmless

    # ---- gangs (hpo/service/gang_offers.py) ------------------------------------
    # A fleet worker offers itself to one study at a time, whose row it then is, so a
    # holder of that study finds the offer as it finds a single-study worker's.
    def _gang_studies(self, open_names: list[str]) -> list[Worker]:
        return [self.studies[n] for n in open_names if self.studies[n].gangs is not None]

    def _serve_gang(self, open_names: list[str]) -> bool:
        """As a member of a gang in the study its row is in: wait, prepare or train (True);
        False when it is in none and may claim (its offer retracted first)."""
        studies = self._gang_studies(open_names)
        if not studies:
            return False
        with self.engine.connect() as conn:
            current = conn.execute(sa.select(db.workers.c.study).where(
                db.workers.c.id == self.worker_id)).scalar_one_or_none()
        worker = next((w for w in studies if w.spec.name == current), None)
        if worker is not None and worker._in_gang():
            if not worker._train_as_member():
                self.stop_requested.wait(self.poll_seconds)
            return True
        if not db.retrying(studies[0].gangs.retract, self.worker_id, log=log):
            return True  # a holder took this offer just now: the next turn finds the gang
        return False

    def _offer(self, open_names: list[str]) -> None:
        """Nothing to claim anywhere: offer this worker to the open study of the highest
        priority (then the first by name) whose gangs are on for its device kind."""
        studies = self._gang_studies(open_names)
        if studies:
            worker = min(studies, key=lambda w: (-w.spec.priority, w.spec.name))
            db.retrying(worker.gangs.offer, self.worker_id, worker.device_kind, log=log)

    def _claim(self, open_names: list[str]):
        """(study worker, claim) from the first study in the rule's order that has a trial."""
        specs = {name: self.studies[name].spec for name in open_names}
        with self.engine.connect() as conn:
            loads = study_loads(conn, specs)
        for name in claim_order(loads):
            worker = self.studies[name]
            claim = worker.coordinator.claim(self.worker_id, worker.claim_order)
            if claim is not None:
                return worker, claim
            # None: another worker was quicker; try the next study
        return None

    def _train(self, worker: Worker, claim) -> None:
        self.active = worker
        try:
            worker.train(claim)
        finally:
            self.active = None

    def _register(self) -> str:
        worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(db.workers.insert().values(
                id=worker_id, study=ANY_STUDY, host=socket.gethostname(), pid=os.getpid(),
                device=self.machine.device or "auto", state="active", started_at=now,
                heartbeat_at=now))
        return worker_id

    def _exited(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(db.workers.c.id == self.worker_id)
                         .values(state="exited", current_trial=None, heartbeat_at=time.time()))

    def _heartbeat(self) -> None:
        while True:
            leases = [w.spec.lease_seconds for w in list(self.studies.values())] or [30.0]
            if self._done.wait(max(0.05, min(leases) / 3)):
                return
            active = self.active
            try:
                if active is None:
                    self._beat()
                else:
                    held = active.held  # one stint's lease: a late answer about another is ignored
                    if not active.coordinator.renew(self.worker_id, held and held.number) and held:
                        held.lost.set()
            except db.TRANSIENT_ERRORS as err:
                if not db.note_refusal(err, log):  # a full server: its one line, not one per beat
                    log.warning("heartbeat failed (%s); will retry", type(err).__name__)

    def _beat(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.workers.update().where(db.workers.c.id == self.worker_id)
                         .values(heartbeat_at=time.time()))

