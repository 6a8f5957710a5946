"""A worker: claim a trial, train it to its next boundary, settle it, repeat.

One worker per GPU. Workers share nothing but the storage URL and the
checkpoint store, so they can run on any machine. Per epoch a worker reports
the objective to Optuna, writes a checkpoint, then records the epoch under its
lease -- in that order, so a worker killed at any point loses at most the
epoch in flight and never a reported value (a re-reported epoch is ignored by
Optuna and, with deterministic training, has the same value anyway).

SIGTERM / SIGINT: the epoch in flight finishes and is checkpointed, the lease
is given back (another worker resumes the trial), and the worker exits 0. A
second signal stops at once; the lease then simply expires.
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
from hpo.service import db, optuna_link
from hpo.service.checkpoints import CheckpointStore
from hpo.service.coordination import Claim, Coordinator
from hpo.service.trial_runs import TrialRun
from hpo.scheduling.spec import StudySpec

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took this trial over (this one stalled past its lease)."""


class Worker:
    def __init__(self, spec: StudySpec, storage_url: str, make_run: Callable[[Mapping[str, Any]], TrialRun],
                 artifacts: str | None = None, device: str = "auto", poll_seconds: float = 0.2,
                 claim_seed: int | None = None, max_trials: int | None = None):
        self.spec = spec
        self.storage_url = storage_url
        self.make_run = make_run
        self.device = device
        self.poll_seconds = poll_seconds
        self.max_trials = max_trials  # for tests: stop after this many claims
        self.stint_epochs: int | None = None  # see _stint_end
        self.engine = db.create_service_engine(storage_url)
        self.coord = Coordinator(self.engine, spec)
        self.checkpoints = CheckpointStore(artifacts or spec.artifacts, spec.name)
        self.study = optuna_link.open_study(spec, optuna_link.optuna_storage(storage_url))
        # Shuffled claim order (tests and benchmarks): decisions must not depend on it.
        self.order_key = None
        if claim_seed is not None:
            ranks = list(range(len(spec.grid_points())))
            random.Random(claim_seed).shuffle(ranks)
            self.order_key = lambda number: ranks[number] if number < len(ranks) else number
        self.worker_id: str | None = None
        self.current: int | None = None
        self.stop_requested = threading.Event()
        self.lease_lost = threading.Event()
        self._done = threading.Event()

    # ---- lifecycle -------------------------------------------------------
    def run(self) -> int:
        self.worker_id = db.retrying(self.coord.register_worker, self.device, log=log)
        log.info("worker %s attached to study %r on %s (device %s)", self.worker_id,
                 self.spec.name, db.mask_url(self.storage_url), self.device)
        restore = self._install_signal_handlers()
        heartbeat = threading.Thread(target=self._heartbeat, name="saan-hpo-heartbeat", daemon=True)
        heartbeat.start()
        claims = 0
        try:
            while not self.stop_requested.is_set():
                db.retrying(self.finalize, log=log)
                if db.retrying(self.coord.open_count, log=log) == 0:
                    log.info("study %r is finished", self.spec.name)
                    break
                if self.max_trials is not None and claims >= self.max_trials:
                    break
                claim = db.retrying(self.coord.claim, self.worker_id, self.order_key, log=log)
                if claim is None:
                    self._decide_ready_rungs()
                    time.sleep(self.poll_seconds)
                    continue
                claims += 1
                self.train(claim)
            db.retrying(self.finalize, log=log)
        finally:
            self._done.set()
            restore()
            db.retrying(self.coord.worker_exited, self.worker_id, log=log, deadline=30)
        return 0

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
            try:
                if not self.coord.renew(self.worker_id, self.current):
                    self.lease_lost.set()
            except db.TRANSIENT_ERRORS as err:
                log.warning("heartbeat failed (%s); will retry", type(err).__name__)

    # ---- one stint of one trial -----------------------------------------
    def train(self, claim: Claim) -> None:
        self.current = claim.number
        self.lease_lost.clear()
        trial = db.retrying(optuna_link.start_trial, self.study, claim.optuna_trial_id, log=log)
        run = self.make_run(claim.params)
        if claim.checkpoint_id:
            try:
                run.load_bytes(self.checkpoints.load(claim.checkpoint_id))
            except ArtifactNotFound:
                # Lost checkpoint (deleted by hand, store not shared): retrain
                # from scratch; Optuna ignores re-reports of epochs it has.
                log.error("trial %d: checkpoint %s not found in %s; retraining from epoch 0",
                          claim.number, claim.checkpoint_id, self.spec.artifacts)
                run = self.make_run(claim.params)
                claim = dataclasses.replace(claim, epochs_done=0)
        if run.epoch != claim.epochs_done:
            raise RuntimeError(f"trial {claim.number}: checkpoint at epoch {run.epoch}, "
                               f"stored progress {claim.epochs_done}")
        log.info("trial %d %s: epoch %d -> %d%s", claim.number, claim.params, claim.epochs_done,
                 claim.target_epoch, " (taken over)" if claim.takeover else "")
        state = {"checkpoint": claim.checkpoint_id, "started": time.time(), "pruned": False}
        final_epoch = self.spec.final_epoch
        pruner_kind = self.spec.scheduler.kind in ("asha", "hyperband")

        def on_epoch_end(epoch: int, metrics: dict) -> bool:
            value = float(metrics[self.spec.metric])
            db.retrying(optuna_link.report, trial, value, epoch, metrics, log=log)
            checkpoint = self.checkpoints.save(claim.number, epoch, run.to_bytes())
            held = db.retrying(self.coord.record_epoch, self.worker_id, claim.number, epoch, value,
                               _plain(metrics), state["started"], checkpoint, log=log)
            if not held or self.lease_lost.is_set():
                self.checkpoints.remove(checkpoint)
                raise LeaseLost()
            if state["checkpoint"] != checkpoint:
                self.checkpoints.remove(state["checkpoint"])
            state["checkpoint"] = checkpoint
            state["started"] = time.time()
            log.info("trial %d epoch %d/%d %s=%.4f", claim.number, epoch, claim.target_epoch,
                     self.spec.metric, value)
            if pruner_kind and epoch < final_epoch and trial.should_prune():
                # Optuna's pruner never sees the final epoch: a fully trained
                # trial must complete, not be pruned (Optuna 5 pitfall).
                state["pruned"] = True
                return False
            return not self.stop_requested.is_set()

        try:
            until = self._stint_end(claim)
            if run.epoch < until:
                run.fit(until, on_epoch_end=on_epoch_end)
        except LeaseLost:
            log.warning("trial %d: lease lost to another worker; dropping it", claim.number)
            self.current = None
            return
        except SaanError:
            db.retrying(self.coord.release, self.worker_id, claim.number, log=log)
            self.current = None
            raise  # bad input: every trial would fail the same way
        except Exception:
            log.exception("trial %d failed", claim.number)
            db.retrying(self.coord.settle, self.worker_id, claim.number, "failed", log=log)
            self.current = None
            return
        self.current = None
        self._settle(claim, run.epoch, state["pruned"])

    def _settle(self, claim: Claim, epoch: int, pruned: bool) -> None:
        if pruned:
            db.retrying(self.coord.settle, self.worker_id, claim.number, "pruned", log=log)
        elif epoch < claim.target_epoch:  # stopped by a signal, or the end of a stint
            db.retrying(self.coord.release, self.worker_id, claim.number, log=log)
        elif self.spec.scheduler.kind == "sync-halving":
            db.retrying(self.coord.settle, self.worker_id, claim.number, "paused", log=log)
            decision = db.retrying(self.coord.decide_rung, claim.rung, self.worker_id, log=log)
            if decision is not None:
                log.info("rung %d decided at epoch %d: survivors %s, pruned %s", decision.rung,
                         decision.epoch, list(decision.survivors), list(decision.pruned))
        else:
            db.retrying(self.coord.settle, self.worker_id, claim.number, "complete", log=log)
        db.retrying(self.finalize, log=log)

    def _stint_end(self, claim: Claim) -> int:
        """Where this stint stops: the claim's target, or sooner for kinds without rungs.

        With ``stint_epochs`` set (workers serving several studies), a trial
        that would hold a worker for its whole budget is given back after that
        many epochs and claimed again, from its checkpoint, by whichever worker
        the claim rule sends there: long trials then share a pool instead of
        leaving the last of them to run alone. Resuming is exact, so results
        do not change; synchronous halving's stints already end at its rungs.
        """
        if not self.stint_epochs or self.spec.scheduler.kind == "sync-halving":
            return claim.target_epoch
        return min(claim.target_epoch, claim.epochs_done + self.stint_epochs)

    def _decide_ready_rungs(self) -> None:
        """An idle worker decides any rung whose cohort is complete (e.g. after a failure)."""
        if self.spec.scheduler.kind != "sync-halving":
            return
        for rung in db.retrying(self.coord.paused_rungs, log=log):
            db.retrying(self.coord.decide_rung, rung, self.worker_id, log=log)

    def finalize(self) -> None:
        """Tell Optuna every settled trial's final state; drop pruned checkpoints."""
        for row in self.coord.unfinalized():
            optuna_link.finish_trial(self.study, row.number, row.state, row.last_value)
            keep = row.state == "complete"
            if not keep:
                self.checkpoints.remove(row.checkpoint_id)
            self.coord.mark_finalized(row.number, keep_checkpoint=keep)


def _plain(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
