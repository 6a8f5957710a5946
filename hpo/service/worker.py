"""A worker: claim a trial, train it to the epoch its policy sends it to, settle it, repeat.

One worker per GPU. Workers share nothing but the storage URL and the
checkpoint store, so they can run on any machine. Per epoch a worker writes a
checkpoint durably, then reports the objective to Optuna, then records the
epoch under its lease -- in that order, so no value reaches Optuna (or the
service) before its checkpoint is durable, and a worker killed at any point
loses at most the epoch in flight and never a reported value (killed between
report and record, the trial retrains that epoch from the checkpoint before
it; the re-report is ignored by Optuna and, with deterministic training, has
the same value anyway). A folder that refuses the write stops the worker with
nothing reported for that epoch.

The checkpoint is written off the training thread: at the end of epoch N the
run's state is copied to the host (fast), and one background thread per
worker serialises it, writes it durably, reports the value to Optuna and only
then records epoch N, while epoch N+1 already trains. Optuna's own pruners
(asha, hyperband) read the value from Optuna's storage, so at the few epochs
where one can decide (its rung steps, ``policy.pruner_may_prune_at``) the
training thread waits for that write and report before asking it. Before the
end of epoch N+1 is handled, epoch N's write and record have finished (one
snapshot in memory at a time), and a stint never ends -- reached, pruned,
stopped, aborted or raised -- before its last epoch is recorded. A kill
meanwhile loses only what was not yet durable.

Stops (hpo/service/stops.py): the first SIGTERM / SIGINT lets the epoch in
flight finish and be checkpointed, gives the lease back (another worker resumes
the trial) and exits 0. A second one abandons the epoch at the next batch,
releases the trial -- resumable from its last durable checkpoint -- and exits
non-zero with one line saying so. Signal handlers only set flags, so neither
lands inside a database or checkpoint write, and an error raised while a stop
is under way releases the trial instead of failing it.

Failures: a run that raises is retried from its last checkpoint, by any
worker, up to ``[study] max_retries`` times, then FAILED with its error (type,
message, host, epoch) stored for status, the report and table. Running out of
GPU memory fails at once: the same batch size will not fit next time either.

Non-finite objectives (a diverged model's undefined SRCC) are stored as NULL,
reported to Optuna as NaN (its pruners prune NaN at a rung), rank last at
their rung (hpo/scheduling/rungs.py) and never complete a trial.

The loop, one :meth:`Worker.step` at a time: finish what is settled, then
``FINISHED`` (no open trial left: exit), ``OUT_OF_TIME`` (``[study] time_budget``
spent: claim nothing new, exit), ``IDLE`` (nothing claimable: decide any
complete rung, wait) or ``TRAINED`` (one stint of one trial). A stint ends
``REACHED`` (trained to its target: the policy pauses or completes it),
``PRUNED``, ``STOPPED`` (a signal, or a stint shorter than the trial's target:
released), ``ABORTED`` (a second signal: released mid-epoch, then the worker exits),
``LEASE_LOST`` (another worker took it over: dropped), ``RETRIED`` (it raised: put
back to be resumed) or ``FAILED``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Mapping

import optuna
import sqlalchemy as sa
from optuna.artifacts.exceptions import ArtifactNotFound

from model.checkpoint_file import DamagedCheckpoint
from model.errors import SaanError
from model.ordered_writer import OrderedWriter
from hpo.scheduling.policy import PAUSE, PRUNE
from hpo.scheduling.spec import StudySpec
from hpo.scheduling.time_budget import may_claim
from hpo.service import db, optuna_link
from hpo.service.brackets import open_ready_brackets
from hpo.service.checkpoints import CheckpointStore
from hpo.service.coordination import Claim, Coordinator
from hpo.service.gang_offers import GangBoard, device_kind
from hpo.service.rendezvous import GangFault, HolderLink, is_gang_fault, train_as_member
from hpo.service.stops import (HARD_STOP_EXIT, HARD_STOP_SIGNAL, PARENT_GONE_SIGNAL, StopRequests,
                                parent_gone)
from hpo.service.trackers import Tracker, tracker_for
from hpo.service.trial_runs import TrialRun

log = logging.getLogger(__name__)

# What one turn of the loop did.
FINISHED, OUT_OF_TIME, IDLE, TRAINED = "finished", "out of time", "idle", "trained"
# How a stint of one trial ended.
REACHED, PRUNED, STOPPED, LEASE_LOST, FAILED = "reached", "pruned", "stopped", "lease lost", "failed"
ABORTED, RETRIED = "aborted", "retried"

RunFactory = Callable[[Mapping[str, Any]], TrialRun]


class HardStop(Exception):
    """A second stop request: the trial was released mid-epoch; the worker exits non-zero."""


def shuffled_claim_order(seed: int, n_trials: int) -> Callable[[int], int]:
    """A claim order for ``simulate --order-seed``: decisions must not depend on it."""
    ranks = list(range(n_trials))
    random.Random(seed).shuffle(ranks)
    return lambda number: ranks[number] if number < len(ranks) else number


class Worker:
    """Runs trials of one study with the parts it is given (see :meth:`attach`)."""

    def __init__(self, spec: StudySpec, coordinator: Coordinator, checkpoints: CheckpointStore,
                 optuna_study: optuna_link.OptunaStudy, make_run: RunFactory, *,
                 device: str = "auto", poll_seconds: float = 0.2,
                 claim_order: Callable[[int], int] | None = None, tracker: Tracker | None = None,
                 clock: Callable[[], float] = time.time, stops: StopRequests | None = None):
        self.spec = spec
        self.policy = spec.policy
        self.coordinator = coordinator
        self.checkpoints = checkpoints
        self.optuna = optuna_study
        self.make_run = make_run
        self.device = device
        self.poll_seconds = poll_seconds
        self.claim_order = claim_order
        self.stint_epochs: int | None = None  # see stint_end
        self.tracker = tracker or Tracker()  # TensorBoard / MLflow, or nothing
        self.clock = clock  # wall-clock seconds, for the time budget (tests replay a clock)
        self.study_started: float | None = None
        self.worker_id: str | None = None
        self.held: HeldLease | None = None  # the lease the heartbeat renews
        self.owns_engine = True  # False when attach() was handed a shared one (close() keeps it)
        # Handed in by the CLI, which installs the signal handlers before the
        # slow start-up; a Worker given none installs its own while it runs.
        self.stops = stops if stops is not None else StopRequests()
        self._own_stops = stops is None
        self.stop_requested = self.stops.graceful
        self._done = threading.Event()
        # One thread, so checkpoints land and are recorded in epoch order (see the module docstring).
        self.writer = OrderedWriter("saan-hpo-checkpoint")
        # Gangs (hpo/service/gang_offers.py): when the study turns them on for this
        # device kind and the runs can train in them (replays, and SAAN runs, which
        # also form process groups: hpo/service/rendezvous.py).
        self.device_kind = device_kind(device)
        self.gangs = (GangBoard(coordinator.engine, spec) if spec.gangs_on(self.device_kind)
                      and getattr(make_run, "trains_in_gangs", False) else None)
        self.forms_process_groups = bool(getattr(make_run, "forms_process_groups", False))
        self.gang_place = None  # this worker's gang assignment while it is a member
        self.joined: tuple | None = None  # the last process group this worker joined as a member
        self.prepared: tuple | None = None  # ((trial, holder), run) built for the gang it is in

    @classmethod
    def attach(cls, spec: StudySpec, storage_url: str, make_run: RunFactory,
               artifacts: str | None = None, *, engine: sa.Engine | None = None,
               optuna_storage: optuna.storages.BaseStorage | None = None,
               **options: Any) -> "Worker":
        """A worker on ``storage_url``'s study: coordinator, checkpoint store and Optuna study.

        ``engine`` and ``optuna_storage``: that storage's engine and Optuna
        storage to share (a fleet worker serves every study through one pair,
        so its connections do not grow with the studies: README, "PostgreSQL
        for a large fleet"); by default the worker opens its own, one pool on
        PostgreSQL (optuna_link.storage_and_engine). Opening reads the storage,
        so it waits out a server that is briefly unreachable or full.
        """
        owns_engine = engine is None
        if engine is None:
            optuna_storage, engine = db.retrying(optuna_link.storage_and_engine, storage_url,
                                                 optuna_storage, log=log)
        coordinator = Coordinator(engine, spec)
        options.setdefault("tracker", tracker_for(spec))
        optuna_study = db.retrying(optuna_link.OptunaStudy.open, spec, storage_url,
                                   optuna_storage, log=log)
        checkpoints = db.retrying(CheckpointStore.for_study, artifacts or spec.artifacts,
                                  spec.name, storage_url, optuna_study.storage, log=log)
        worker = cls(spec, coordinator, checkpoints, optuna_study, make_run, **options)
        worker.owns_engine = owns_engine
        return worker

    def close(self) -> None:
        """Close the trackers; release the coordinator's connections if its engine is its own."""
        self.writer.close(wait=True)
        self.tracker.close()
        if self.owns_engine:
            self.coordinator.engine.dispose()

    # ---- lifecycle -------------------------------------------------------
    def run(self) -> int:
        """0 when the study is finished or a stop was honoured; HARD_STOP_EXIT after a hard stop."""
        restore = self.stops.install() if self._own_stops else (lambda: None)
        self.stops.on_signal(self._log_signal)
        self.worker_id = db.retrying(self.coordinator.register_worker, self.device, log=log)
        log.info("worker %s attached to study %r on %s (device %s)", self.worker_id,
                 self.spec.name, db.mask_url(str(self.coordinator.engine.url)), self.device)
        heartbeat = threading.Thread(target=self._heartbeat, name="saan-hpo-heartbeat", daemon=True)
        heartbeat.start()
        return run_until_stopped(self._serve, self.stops, lambda: self._leave(restore))

    def _serve(self) -> None:
        while not self.stop_requested.is_set():
            if self.step() in (FINISHED, OUT_OF_TIME):
                break
        if not self.stops.hard.is_set():
            db.retrying(self.finalize, log=log)

    def _leave(self, restore: Callable[[], Any]) -> None:
        self._done.set()
        self.tracker.close()
        restore()
        db.retrying(self.coordinator.worker_exited, self.worker_id, log=log, deadline=30)

    def step(self) -> str:
        """One turn of the loop: FINISHED, IDLE or TRAINED."""
        db.retrying(self.finalize, log=log)
        if self.spec.sampled:  # a bracket whose predecessors just finished opens here
            db.retrying(open_ready_brackets, self.spec, self.coordinator, self.optuna.study,
                        self.optuna.storage, self.worker_id, log=log)
        if db.retrying(self.coordinator.open_count, log=log) == 0:
            log.info("study %r is finished", self.spec.name)
            self._remove_orphans()
            return FINISHED
        if not self._may_claim():
            log.info("study %r: time budget of %.0fs spent; claiming no new work (raise "
                     "[study] time_budget to go on)", self.spec.name, self.spec.time_budget)
            return OUT_OF_TIME
        if self.gangs is not None and self._in_gang():
            # A member claims nothing: its holder gives it back at an epoch boundary
            # (at once when trials wait), or it is freed when the holder's lease goes.
            if self._train_as_member():
                return TRAINED
            self.stop_requested.wait(self.poll_seconds)
            return IDLE
        if self.gangs is not None and not db.retrying(self.gangs.retract, self.worker_id, log=log):
            return IDLE  # a holder took this offer just now: the next turn finds the gang
        claim = db.retrying(self.coordinator.claim, self.worker_id, self.claim_order, log=log)
        if claim is None:
            self._decide_ready_rungs()
            if self.gangs is not None:
                db.retrying(self.gangs.offer, self.worker_id, self.device_kind, log=log)
            self.stop_requested.wait(self.poll_seconds)  # a stop ends the wait
            return IDLE
        self.gang_place = None
        self.train(claim)
        return TRAINED

    def _in_gang(self) -> bool:
        """Whether this worker is a gang member now; logs each join and leave once."""
        place = db.retrying(self.gangs.assignment, self.worker_id, log=log)
        before, self.gang_place = self.gang_place, place
        if place is not None and (before is None or before.number != place.number):
            log.info("joined trial %d's gang (holder %s) at rank %d from epoch %d", place.number,
                     place.holder, place.rank, place.epoch)
        elif place is None and before is not None:
            log.info("left trial %d's gang", before.number)
        if place is None:
            self.prepared = None  # the trainer built for that gang is not kept
        return place is not None

    def _train_as_member(self) -> bool:
        """Train the holder's epochs in its process group once it publishes one this
        worker has not joined (training runs only; replay members only wait)."""
        place = self.gang_place
        if not self.forms_process_groups or place is None:
            self.prepared = None
            return False
        gang = (place.number, place.holder)
        if self.prepared is None or self.prepared[0] != gang:
            # Build first, then say so: the holder forms only with ready members.
            params = db.retrying(self.gangs.params, place.number, log=log)
            self.prepared = (gang, self.make_run(params))
            db.retrying(self.gangs.ready, self.worker_id, place, log=log)
            return False
        if place.address is None or (gang, place.address) == self.joined:
            return False  # not formed yet, or that group is over: the holder publishes the next
        self.joined = (gang, place.address)
        train_as_member(place, self.prepared[1], self.gangs, self.worker_id, self.spec.gang_timeout,
                        self.device, self.stop_requested.is_set, self.stops.hard.is_set)
        return True

    def _remove_orphans(self) -> None:
        """Checkpoint files of the finished study that no trial points to (left by a store fault)."""
        referenced = db.retrying(self.coordinator.referenced_checkpoints, log=log)
        removed = self.checkpoints.remove_orphans(referenced)
        if removed:
            log.info("removed %d orphaned checkpoint(s) of study %r, e.g. %s", len(removed),
                     self.spec.name, removed[0])

    def _may_claim(self) -> bool:
        if self.spec.time_budget is None:
            return True
        if self.study_started is None:
            stored = db.retrying(self.coordinator.stored_study, log=log)
            self.study_started = stored["created_at"]
        return may_claim(self.study_started, self.clock(), self.spec.time_budget)

    def _log_signal(self, signum: int) -> None:
        # Runs inside the signal handler: only flags and a line are safe here.
        what = f"signal {signum}" if signum else "stop request"
        if signum == PARENT_GONE_SIGNAL:
            log.warning("the launcher that started this worker is gone: finishing the current "
                        "epoch, then releasing the trial")
        elif signum == HARD_STOP_SIGNAL:
            log.warning("hard stop (%s): abandoning the epoch in flight at the next batch", what)
        elif self.stops.hard.is_set():
            log.warning("%s again: abandoning the epoch in flight at the next batch", what)
        else:
            log.info("%s: finishing the current epoch, then releasing the trial", what)

    def _heartbeat(self) -> None:
        interval = max(0.05, self.spec.lease_seconds / 3)
        next_renewal = time.monotonic() + interval
        while not self._done.wait(min(interval, 1.0)):
            if parent_gone() and not self.stops.parent_gone.is_set():
                self.stops.notice_parent_gone()  # once, however it is noticed (stops.py)
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + interval
            held = self.held  # one stint's lease: a late answer about an earlier one is ignored
            try:
                if not self.coordinator.renew(self.worker_id, held and held.number) and held:
                    held.lost.set()
            except db.TRANSIENT_ERRORS as err:
                if not db.note_refusal(err, log):  # a full server: its one line, not one per beat
                    log.warning("heartbeat failed (%s); will retry", type(err).__name__)

    # ---- one stint of one trial -----------------------------------------
    def train(self, claim: Claim) -> None:
        """Train ``claim`` to its target epoch, then settle it as the stint ended."""
        self.held = HeldLease(claim.number)
        stint = None
        try:
            stint = Stint(self, claim, self.held)
            ended = stint.run()
        except SaanError:
            db.retrying(self.coordinator.release, self.worker_id, claim.number, log=log)
            raise  # bad input: every trial would fail the same way
        except Exception as err:  # noqa: BLE001 -- a hard stop's TrainingAborted too
            ended = self._after_error(claim, stint, err)
        finally:
            self.held = None
        self._settle(claim, ended, stint)

    def _after_error(self, claim: Claim, stint: "Stint | None", err: Exception) -> str:
        """A run raised: because of a stop (released), or a failure (retried, or FAILED)."""
        durable = stint.durable if stint is not None else claim.epochs_done
        if self.stops.hard.is_set():
            return ABORTED
        if self.stop_requested.is_set():
            # e.g. a loader worker killed by the same signal: not the trial's fault
            log.warning("trial %d: %s raised while stopping (%s); released, resumable from "
                        "epoch %d", claim.number, type(err).__name__, _first_line(err), durable)
            return STOPPED
        epoch = durable + 1
        oom = is_out_of_memory(err)
        message = _first_line(err)
        if oom:
            message = (f"out of memory at batch size {self._batch_size(claim)} (retrying cannot "
                       f"help; use a smaller batch size): {message}")
        error = {"type": type(err).__name__, "message": message[:500],
                 "host": socket.gethostname(), "epoch": epoch}
        state = db.retrying(self.coordinator.record_failure, self.worker_id, claim.number, error,
                            not oom, log=log)
        if state is None:
            return LEASE_LOST  # another worker holds it now
        if state == "failed":
            log.exception("trial %d raised in epoch %d: FAILED (%s)", claim.number, epoch,
                          "out of memory" if oom else f"after {self.spec.max_retries} retries")
            return FAILED
        log.exception("trial %d raised in epoch %d; put back to be resumed from its checkpoint "
                      "at epoch %d", claim.number, epoch, durable)
        return RETRIED

    def _batch_size(self, claim: Claim) -> Any:
        if "batch_size" in claim.params:
            return claim.params["batch_size"]
        return self.spec.run_config(claim.params).trainer.batch_size

    def _settle(self, claim: Claim, ended: str, stint: "Stint | None") -> None:
        settle = self.coordinator.settle
        durable = stint.durable if stint is not None else claim.epochs_done
        if ended == LEASE_LOST:
            log.warning("trial %d: lease lost to another worker; dropping it", claim.number)
            return
        if ended == RETRIED:
            return  # waiting again, with its error recorded
        if ended in (ABORTED, STOPPED):
            db.retrying(self.coordinator.release, self.worker_id, claim.number, log=log,
                        deadline=30 if self.stops.hard.is_set() else 600)
            if self.stops.hard.is_set():
                what = "its epoch in flight abandoned, " if ended == ABORTED else ""
                raise HardStop(f"hard stop: trial {claim.number} {what}released; it is resumable "
                               f"from its last durable checkpoint (epoch {durable})")
            return
        if ended == FAILED:
            # Its rung is decided over the rest once they are all parked there.
            self._decide_ready_rungs()
        elif ended == PRUNED:
            db.retrying(settle, self.worker_id, claim.number, "pruned", log=log)
        elif self.policy.at_target() == PAUSE:
            db.retrying(settle, self.worker_id, claim.number, "paused", log=log)
            decision = db.retrying(self.coordinator.decide_rung, claim.rung, self.worker_id, log=log)
            if decision is not None:
                log.info("rung %d decided at epoch %d: survivors %s, pruned %s", decision.rung,
                         decision.epoch, list(decision.survivors), list(decision.pruned))
        elif db.retrying(self.coordinator.last_value, claim.number, log=log) is None:
            # A non-finite final objective never completes a trial: Optuna
            # could not be told it, and it must not be the winner.
            db.retrying(settle, self.worker_id, claim.number, "pruned", log=log)
        else:
            db.retrying(settle, self.worker_id, claim.number, "complete", log=log)
        db.retrying(self.finalize, log=log)

    def stint_end(self, claim: Claim) -> int:
        """Where a stint stops: the claim's target, or sooner for kinds without rungs.

        With ``stint_epochs`` set (workers serving several studies), a trial
        that would hold a worker for its whole budget is given back after that
        many epochs and claimed again, from its checkpoint, by whichever worker
        the claim rule sends there: long trials then share a pool instead of
        leaving the last of them to run alone. Resuming is exact, so results
        do not change; synchronous halving's stints already end at its rungs.
        """
        if not self.stint_epochs or self.policy.pauses_at_rungs:
            return claim.target_epoch
        return min(claim.target_epoch, claim.epochs_done + self.stint_epochs)

    def _decide_ready_rungs(self) -> None:
        """An idle worker decides any rung whose cohort is complete (e.g. after a failure)."""
        if not self.policy.pauses_at_rungs:
            return
        for rung in db.retrying(self.coordinator.paused_rungs, log=log):
            db.retrying(self.coordinator.decide_rung, rung, self.worker_id, log=log)

    def finalize(self) -> None:
        """Tell Optuna every settled trial's final state; drop pruned checkpoints."""
        for row in self.coordinator.unfinalized():
            self.optuna.finish_trial(row.number, row.state, row.last_value)
            keep = row.state == "complete"
            if not keep:
                self.checkpoints.remove(row.checkpoint_id)
            self.coordinator.mark_finalized(row.number, keep_checkpoint=keep)


class HeldLease:
    """The lease of one stint; ``lost`` is set when a renewal finds another worker holds it."""

    def __init__(self, number: int):
        self.number = number
        self.lost = threading.Event()


class Stint:
    """One claim of one trial: resume it, train epochs until its target, say how it ended."""

    def __init__(self, worker: Worker, claim: Claim, lease: HeldLease):
        self.worker, self.lease = worker, lease
        self.trial = db.retrying(worker.optuna.start_trial, claim.optuna_trial_id, log=log)
        self.claim, self.trial_run = self._resume(claim)
        self.checkpoint = self.claim.checkpoint_id
        self.durable = self.claim.epochs_done  # the epoch of the last recorded checkpoint
        self.started = time.time()
        self.ended: str | None = None  # set by an epoch that stops the stint early
        self.lease_lost = False  # set on the writer thread when recording finds another owner
        self.writing: Future | None = None  # the last epoch's write-then-record, in the background
        self.gang: tuple[str, ...] = ()  # the members training the epoch in flight with this holder
        # A training run's gangs are process groups too (hpo/service/rendezvous.py).
        self.link = (HolderLink(worker.gangs, worker.worker_id, claim.number, self.trial_run,
                                worker.spec.gang_timeout, worker.device)
                     if worker.gangs is not None and worker.forms_process_groups else None)

    def _resume(self, claim: Claim) -> tuple[Claim, TrialRun]:
        worker = self.worker
        run = worker.make_run(claim.params)
        if claim.checkpoint_id:
            try:
                run.load_bytes(worker.checkpoints.load(claim.checkpoint_id))
            except (ArtifactNotFound, DamagedCheckpoint) as err:
                # Lost or damaged checkpoint (deleted or truncated by hand, store
                # not shared, disk error): never train on it; resume from an
                # older good one when one is left, else from scratch.
                run, claim = self._resume_past_damage(claim, err)
        if run.epoch != claim.epochs_done:
            raise RuntimeError(f"trial {claim.number}: checkpoint at epoch {run.epoch}, "
                               f"stored progress {claim.epochs_done}")
        log.info("trial %d %s: epoch %d -> %d%s", claim.number, claim.params, claim.epochs_done,
                 claim.target_epoch, " (taken over)" if claim.takeover else "")
        return claim, run

    def _resume_past_damage(self, claim: Claim, err: Exception) -> tuple[TrialRun, Claim]:
        """The run resumed from the newest good checkpoint before the damaged one (or epoch 0).

        The damaged file is moved aside (``.damaged``) so no one loads it again;
        the epochs retrained are said, since they are spent beyond the plan.
        Optuna ignores re-reports of epochs it has, and the service keeps one
        counted row per epoch (Coordinator.record_epoch).
        """
        worker, store = self.worker, self.worker.checkpoints
        if isinstance(err, ArtifactNotFound):
            what = f"checkpoint {store.where(claim.checkpoint_id)} not found"
        else:
            aside = store.set_aside(claim.checkpoint_id)
            what = f"{err}" + (f" (moved aside to {aside})" if aside else "")
        for older in store.older(claim.number, claim.epochs_done):
            run = worker.make_run(claim.params)
            try:
                run.load_bytes(store.load(older))
            except (ArtifactNotFound, DamagedCheckpoint) as older_err:
                log.error("trial %d: older checkpoint unusable too: %s", claim.number, older_err)
                store.set_aside(older)
                continue
            log.error("trial %d: %s; resuming from the older checkpoint %s (epoch %d): "
                      "%d epoch(s) retrained beyond the plan", claim.number, what,
                      store.where(older), run.epoch, claim.epochs_done - run.epoch)
            return run, dataclasses.replace(claim, epochs_done=run.epoch, checkpoint_id=older)
        log.error("trial %d: %s; no older checkpoint: retraining from epoch 0 "
                  "(%d epoch(s) beyond the plan)", claim.number, what, claim.epochs_done)
        return worker.make_run(claim.params), dataclasses.replace(claim, epochs_done=0,
                                                                   checkpoint_id=None)

    def run(self) -> str:
        """REACHED, PRUNED, STOPPED (a signal, or the end of a shorter stint) or LEASE_LOST;
        a hard stop raises out of ``fit``."""
        worker = self.worker
        until = worker.stint_end(self.claim)
        clean = False
        try:
            if self.trial_run.epoch < until and not worker.stop_requested.is_set():
                self.regroup()  # the stint's start is an epoch boundary too
                self.trial_run.fit(until, on_epoch_end=self.on_epoch_end,
                                   should_abort=worker.stops.hard.is_set)
            clean = True
        except Exception as err:
            if self.link is None or not (self.link.members or isinstance(err, GangFault)) \
                    or not is_gang_fault(err):
                raise
            # A rank died or left mid-epoch: that epoch is lost, never recorded. A stop,
            # not a retry: the trial is released and resumes from its checkpoint.
            self.wait_recorded()  # the epochs before it are durable and recorded
            log.warning("trial %d: its gang broke during epoch %d (%s); that epoch is discarded "
                        "and the trial released, resumable from epoch %d", self.claim.number,
                        self.trial_run.epoch + 1, err, self.durable)
            self.ended = STOPPED
        finally:
            # Also when fit raised (a hard stop, a failing epoch): the epoch
            # before it is recorded, so the trial resumes from there.
            try:
                self.wait_recorded()
            finally:
                self.dissolve(clean)
        if self.lease_lost:
            return LEASE_LOST
        if self.ended is not None:
            return self.ended
        return STOPPED if self.trial_run.epoch < self.claim.target_epoch else REACHED

    def on_epoch_end(self, epoch: int, metrics: dict) -> bool:
        """Checkpoint, report and record in the background; False stops the run after this epoch."""
        worker = self.worker
        value = finite_or_none(metrics[worker.spec.metric])
        snapshot = self.trial_run.snapshot()  # a copy: the next epoch may change the live state
        self.wait_recorded()  # the previous epoch's write: one snapshot in memory at a time
        if self.lease_lost:
            return False
        started, self.started = self.started, time.time()
        self.writing = worker.writer.submit(self._write_and_record, epoch, value, dict(metrics),
                                            started, snapshot, self.gang)
        asks = worker.policy.pruner_may_prune_at(epoch)
        if asks:
            # Optuna's pruner reads the value from Optuna's storage, where it may only be
            # once the checkpoint is durable: wait for this epoch's write and report.
            self.wait_recorded()
            if self.lease_lost:
                return False
        # Elsewhere Optuna's pruner would answer no without a look (pruner_may_prune_at).
        if worker.policy.after_epoch(epoch, self.trial.should_prune if asks else _no) == PRUNE:
            self.ended = PRUNED
            return False
        if worker.stop_requested.is_set():
            return False
        if epoch < worker.stint_end(self.claim):
            self.regroup()  # the gang of the next epoch, formed at this boundary
        return True

    def regroup(self) -> None:
        """Take offers or give members back for the next epoch (hpo/service/gang_offers.py)."""
        worker = self.worker
        if worker.gangs is None:
            return
        number, epoch = self.claim.number, self.trial_run.epoch + 1
        gang = db.retrying(worker.gangs.regroup, worker.worker_id, number, epoch,
                           worker.device_kind, log=log)[1:]
        if self.link is not None:
            gang = self.link.start_epoch(gang, epoch)  # fewer when forming it failed
        if gang != self.gang:
            log.info("trial %d epoch %d: %s", number, epoch,
                     f"gang of {len(gang) + 1} ({', '.join(gang)} with the holder)" if gang
                     else "trained alone")
        self.gang = gang
        self.trial_run.ranks = len(gang) + 1

    def dissolve(self, clean: bool = True) -> None:
        """The stint's end: members back to the pool. ``clean``: told so over the process
        group; otherwise (the epoch raised) it is torn down and their collectives raise."""
        worker = self.worker
        if self.link is not None:
            if clean:
                self.link.finish()
            else:
                self.link.abandon()
        if worker.gangs is None or not self.gang:
            return
        self.gang = ()
        self.trial_run.ranks = 1
        db.retrying(worker.gangs.dissolve, worker.worker_id, self.claim.number, clean, log=log)

    def wait_recorded(self) -> None:
        """Wait for the background write and record of the last epoch; its error is raised here."""
        writing, self.writing = self.writing, None
        if writing is not None:
            writing.result()

    def _report(self, epoch: int, value: float | None, metrics: dict) -> None:
        reported = math.nan if value is None else value  # Optuna's pruners prune NaN
        db.retrying(optuna_link.report, self.trial, reported, epoch, metrics, log=log)

    def _write_and_record(self, epoch: int, value: float | None, metrics: dict, started: float,
                          snapshot: Any, gang: tuple[str, ...] = ()) -> None:
        """On the writer thread: the checkpoint made durable, reported to Optuna, then the
        epoch recorded under the lease -- the order of the module docstring. A store that
        refuses the write raises before anything is reported.

        The epoch is trained: these writes run to the end even when a second
        signal arrives meanwhile (signals only set flags, on the main thread)."""
        worker, number = self.worker, self.claim.number
        checkpoint = worker.checkpoints.save(number, epoch, self.trial_run.snapshot_bytes(snapshot))
        self._report(epoch, value, metrics)
        metrics = _plain(metrics)
        # The gang only when there is one: a coordinator that records epochs its own way
        # (tests' subclasses) keeps today's arguments.
        held = db.retrying(worker.coordinator.record_epoch, worker.worker_id, number, epoch, value,
                           metrics, started, checkpoint, log=log, **({"gang": gang} if gang else {}))
        if not held or self.lease.lost.is_set():
            worker.checkpoints.remove(checkpoint)
            self.lease_lost = True
            return
        if self.checkpoint != checkpoint:
            worker.checkpoints.remove(self.checkpoint)  # only now: the new one is recorded
        self.checkpoint, self.durable = checkpoint, epoch
        worker.tracker.log_epoch(number, self.claim.params, epoch, metrics)
        log.info("trial %d epoch %d/%d %s=%s", number, epoch, self.claim.target_epoch,
                 worker.spec.metric, "non-finite" if value is None else f"{value:.4f}")


def run_until_stopped(serve: Callable[[], None], stops: StopRequests, leave: Callable[[], None]) -> int:
    """A worker's life (single-study or fleet): ``serve()`` until done or stopped, then ``leave()``.

    0 when served to the end or a graceful stop was honoured; HARD_STOP_EXIT after a hard
    stop, with one line saying where the trial in flight stands (or that there was none).
    """
    code = 0
    try:
        serve()
    except HardStop as stop:
        log.error("%s", stop)
        code = HARD_STOP_EXIT
    finally:
        leave()
    if code == 0 and stops.hard.is_set():
        log.error("hard stop: no trial was in flight; nothing to resume")
        code = HARD_STOP_EXIT
    return code


def _no() -> bool:
    return False


def finite_or_none(value: Any) -> float | None:
    """The objective as stored: a float, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA (or host) out of memory: this configuration cannot run at its batch size."""
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _plain(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Numeric metrics for the epoch record; non-finite ones as None (strict JSON)."""
    return {k: finite_or_none(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}

