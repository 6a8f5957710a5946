"""A worker: claim a trial, train it to the epoch its policy sends it to, settle it, repeat.

One worker per GPU. Workers share nothing but the storage URL and the
checkpoint store, so they can run on any machine. Per epoch a worker reports
the objective to Optuna, writes a checkpoint, then records the epoch under its
lease -- in that order, so a worker killed at any point loses at most the
epoch in flight and never a reported value (a re-reported epoch is ignored by
Optuna and, with deterministic training, has the same value anyway).

SIGTERM / SIGINT: the epoch in flight finishes and is checkpointed, the lease
is given back (another worker resumes the trial), and the worker exits 0. A
second signal stops at once; the lease then simply expires.

The loop, one :meth:`Worker.step` at a time: finish what is settled, then
``FINISHED`` (no open trial left: exit), ``IDLE`` (nothing claimable: decide any
complete rung, wait) or ``TRAINED`` (one stint of one trial). A stint ends
``REACHED`` (trained to its target: the policy pauses or completes it),
``PRUNED``, ``STOPPED`` (a signal: released), ``LEASE_LOST`` (another worker took
it over: dropped) or ``FAILED``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import threading
import time
from typing import Any, Callable, Mapping

from optuna.artifacts.exceptions import ArtifactNotFound

from model.errors import SaanError
from hpo.scheduling.policy import PAUSE, PRUNE
from hpo.scheduling.spec import StudySpec
from hpo.service import db, optuna_link
from hpo.service.checkpoints import CheckpointStore
from hpo.service.coordination import Claim, Coordinator
from hpo.service.trial_runs import TrialRun

log = logging.getLogger(__name__)

# What one turn of the loop did.
FINISHED, IDLE, TRAINED = "finished", "idle", "trained"
# How a stint of one trial ended.
REACHED, PRUNED, STOPPED, LEASE_LOST, FAILED = "reached", "pruned", "stopped", "lease lost", "failed"

RunFactory = Callable[[Mapping[str, Any]], TrialRun]


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
                 claim_order: Callable[[int], int] | None = None):
        self.spec = spec
        self.policy = spec.policy
        self.coordinator = coordinator
        self.checkpoints = checkpoints
        self.optuna = optuna_study
        self.make_run = make_run
        self.device = device
        self.poll_seconds = poll_seconds
        self.claim_order = claim_order
        self.worker_id: str | None = None
        self.held: HeldLease | None = None  # the lease the heartbeat renews
        self.stop_requested = threading.Event()
        self._done = threading.Event()

    @classmethod
    def attach(cls, spec: StudySpec, storage_url: str, make_run: RunFactory,
               artifacts: str | None = None, **options: Any) -> "Worker":
        """A worker on ``storage_url``'s study with its own engine, checkpoint store and study."""
        coordinator = Coordinator(db.create_service_engine(storage_url), spec)
        return cls(spec, coordinator, CheckpointStore(artifacts or spec.artifacts, spec.name),
                   optuna_link.OptunaStudy.open(spec, storage_url), make_run, **options)

    def close(self) -> None:
        """Release the database connections of the coordinator's engine."""
        self.coordinator.engine.dispose()

    # ---- lifecycle -------------------------------------------------------
    def run(self) -> int:
        self.worker_id = db.retrying(self.coordinator.register_worker, self.device, log=log)
        log.info("worker %s attached to study %r on %s (device %s)", self.worker_id,
                 self.spec.name, db.mask_url(str(self.coordinator.engine.url)), self.device)
        restore = self._install_signal_handlers()
        heartbeat = threading.Thread(target=self._heartbeat, name="saan-hpo-heartbeat", daemon=True)
        heartbeat.start()
        try:
            while not self.stop_requested.is_set():
                if self.step() == FINISHED:
                    break
            db.retrying(self.finalize, log=log)
        finally:
            self._done.set()
            restore()
            db.retrying(self.coordinator.worker_exited, self.worker_id, log=log, deadline=30)
        return 0

    def step(self) -> str:
        """One turn of the loop: FINISHED, IDLE or TRAINED."""
        db.retrying(self.finalize, log=log)
        if db.retrying(self.coordinator.open_count, log=log) == 0:
            log.info("study %r is finished", self.spec.name)
            return FINISHED
        claim = db.retrying(self.coordinator.claim, self.worker_id, self.claim_order, log=log)
        if claim is None:
            self._decide_ready_rungs()
            time.sleep(self.poll_seconds)
            return IDLE
        self.train(claim)
        return TRAINED

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def request_stop(signum, _frame):
            if self.stop_requested.is_set():
                raise KeyboardInterrupt  # second signal: stop now
            log.info("signal %d: finishing the current epoch, then releasing the trial", signum)
            self.stop_requested.set()

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    def _heartbeat(self) -> None:
        interval = max(0.05, self.spec.lease_seconds / 3)
        while not self._done.wait(interval):
            held = self.held  # one stint's lease: a late answer about an earlier one is ignored
            try:
                if not self.coordinator.renew(self.worker_id, held and held.number) and held:
                    held.lost.set()
            except db.TRANSIENT_ERRORS as err:
                log.warning("heartbeat failed (%s); will retry", type(err).__name__)

    # ---- one stint of one trial -----------------------------------------
    def train(self, claim: Claim) -> None:
        """Train ``claim`` to its target epoch, then settle it as the stint ended."""
        self.held = HeldLease(claim.number)
        stint = Stint(self, claim, self.held)
        try:
            ended = stint.run()
        except SaanError:
            db.retrying(self.coordinator.release, self.worker_id, claim.number, log=log)
            raise  # bad input: every trial would fail the same way
        except Exception:
            log.exception("trial %d failed", claim.number)
            ended = FAILED
        finally:
            self.held = None
        self._settle(claim, ended)

    def _settle(self, claim: Claim, ended: str) -> None:
        settle = self.coordinator.settle
        if ended == LEASE_LOST:
            log.warning("trial %d: lease lost to another worker; dropping it", claim.number)
            return
        if ended == FAILED:
            db.retrying(settle, self.worker_id, claim.number, "failed", log=log)
            return
        if ended == PRUNED:
            db.retrying(settle, self.worker_id, claim.number, "pruned", log=log)
        elif ended == STOPPED:
            db.retrying(self.coordinator.release, self.worker_id, claim.number, log=log)
        elif self.policy.at_target() == PAUSE:
            db.retrying(settle, self.worker_id, claim.number, "paused", log=log)
            decision = db.retrying(self.coordinator.decide_rung, claim.rung, self.worker_id, log=log)
            if decision is not None:
                log.info("rung %d decided at epoch %d: survivors %s, pruned %s", decision.rung,
                         decision.epoch, list(decision.survivors), list(decision.pruned))
        else:
            db.retrying(settle, self.worker_id, claim.number, "complete", log=log)
        db.retrying(self.finalize, log=log)

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
        self.started = time.time()
        self.ended: str | None = None  # set by an epoch that stops the stint early

    def _resume(self, claim: Claim) -> tuple[Claim, TrialRun]:
        worker = self.worker
        run = worker.make_run(claim.params)
        if claim.checkpoint_id:
            try:
                run.load_bytes(worker.checkpoints.load(claim.checkpoint_id))
            except ArtifactNotFound:
                # Lost checkpoint (deleted by hand, store not shared): retrain
                # from scratch; Optuna ignores re-reports of epochs it has.
                log.error("trial %d: checkpoint %s not found in %s; retraining from epoch 0",
                          claim.number, claim.checkpoint_id, worker.spec.artifacts)
                run = worker.make_run(claim.params)
                claim = dataclasses.replace(claim, epochs_done=0)
        if run.epoch != claim.epochs_done:
            raise RuntimeError(f"trial {claim.number}: checkpoint at epoch {run.epoch}, "
                               f"stored progress {claim.epochs_done}")
        log.info("trial %d %s: epoch %d -> %d%s", claim.number, claim.params, claim.epochs_done,
                 claim.target_epoch, " (taken over)" if claim.takeover else "")
        return claim, run

    def run(self) -> str:
        """REACHED, PRUNED, STOPPED or LEASE_LOST."""
        if self.trial_run.epoch < self.claim.target_epoch:
            self.trial_run.fit(self.claim.target_epoch, on_epoch_end=self.on_epoch_end)
        if self.ended is not None:
            return self.ended
        return STOPPED if self.trial_run.epoch < self.claim.target_epoch else REACHED

    def on_epoch_end(self, epoch: int, metrics: dict) -> bool:
        """Report, checkpoint, record under the lease; False stops the run after this epoch."""
        worker, number = self.worker, self.claim.number
        value = float(metrics[worker.spec.metric])
        db.retrying(optuna_link.report, self.trial, value, epoch, metrics, log=log)
        checkpoint = worker.checkpoints.save(number, epoch, self.trial_run.to_bytes())
        held = db.retrying(worker.coordinator.record_epoch, worker.worker_id, number, epoch, value,
                           _plain(metrics), self.started, checkpoint, log=log)
        if not held or self.lease.lost.is_set():
            worker.checkpoints.remove(checkpoint)
            self.ended = LEASE_LOST
            return False
        if self.checkpoint != checkpoint:
            worker.checkpoints.remove(self.checkpoint)  # only now: the new one is recorded
        self.checkpoint, self.started = checkpoint, time.time()
        log.info("trial %d epoch %d/%d %s=%.4f", number, epoch, self.claim.target_epoch,
                 worker.spec.metric, value)
        if worker.policy.after_epoch(epoch, self.trial.should_prune) == PRUNE:
            self.ended = PRUNED
            return False
        return not worker.stop_requested.is_set()


def _plain(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

