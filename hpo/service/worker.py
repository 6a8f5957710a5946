"""A worker: claim a trial, train it to its next boundary, settle it, repeat.

One worker per GPU. Workers share nothing but the storage URL and the
checkpoint store, so they can run on any machine. Per epoch a worker reports
the objective to Optuna, writes a checkpoint, then records the epoch under its
lease -- in that order, so a worker killed at any point loses at most the
epoch in flight and never a reported value (a re-reported epoch is ignored by
Optuna and, with deterministic training, has the same value anyway).

Stops (hpo/service/stops.py): the first SIGTERM / SIGINT lets the epoch in
flight finish and be checkpointed, gives the lease back (another worker resumes
the trial) and exits 0. A second one abandons the epoch at the next batch,
releases the trial -- resumable from its last durable checkpoint -- and exits
non-zero. Signal handlers only set flags, so neither lands inside a database or
checkpoint write, and an error raised while a stop is under way releases the
trial instead of failing it.

Failures: a run that raises is retried from its last checkpoint, by any
worker, up to ``[study] max_retries`` times, then FAILED with its error (type,
message, host, epoch) stored for status, report and table. Running out of GPU
memory fails at once: the same batch size will not fit next time either.

Non-finite objectives (a diverged model's undefined SRCC) are stored as NULL,
reported to Optuna as NaN (its pruners prune NaN at a rung), rank last at
their rung and never complete a trial (hpo/scheduling/rungs.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import socket
import threading
import time
from typing import Any, Callable, Mapping

from optuna.artifacts.exceptions import ArtifactNotFound

from model.errors import SaanError
from hpo.service import db, optuna_link
from hpo.service.checkpoints import CheckpointStore
from hpo.service.coordination import Claim, Coordinator
from hpo.service.stops import HARD_STOP_EXIT, StopRequests, parent_gone
from hpo.service.trial_runs import TrialRun
from hpo.scheduling.spec import StudySpec

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took this trial over (this one stalled past its lease)."""


class HardStop(Exception):
    """A second stop request: the trial was released mid-epoch."""


class Worker:
    def __init__(self, spec: StudySpec, storage_url: str, make_run: Callable[[Mapping[str, Any]], TrialRun],
                 artifacts: str | None = None, device: str = "auto", poll_seconds: float = 0.2,
                 claim_seed: int | None = None, max_trials: int | None = None,
                 stops: StopRequests | None = None):
        self.spec = spec
        self.storage_url = storage_url
        self.make_run = make_run
        self.device = device
        self.poll_seconds = poll_seconds
        self.max_trials = max_trials  # for tests: stop after this many claims
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
        # Handed in by the CLI, which installs the signal handlers before the
        # slow start-up; a Worker built without one installs its own in run().
        self.stops = stops
        self.lease_lost = threading.Event()
        self._done = threading.Event()

    @property
    def stop_requested(self) -> threading.Event:
        return self.stops.graceful

    # ---- lifecycle -------------------------------------------------------
    def run(self) -> int:
        restore = lambda: None  # noqa: E731
        if self.stops is None:
            self.stops = StopRequests()
            restore = self.stops.install()
        self.stops.on_signal(self._log_signal)
        self.worker_id = db.retrying(self.coord.register_worker, self.device, log=log)
        log.info("worker %s attached to study %r on %s (device %s)", self.worker_id,
                 self.spec.name, db.mask_url(self.storage_url), self.device)
        heartbeat = threading.Thread(target=self._heartbeat, name="saan-hpo-heartbeat", daemon=True)
        heartbeat.start()
        claims = 0
        code = 0
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
                    self.stop_requested.wait(self.poll_seconds)
                    continue
                claims += 1
                self.train(claim)
            if not self.stops.hard.is_set():
                db.retrying(self.finalize, log=log)
        except HardStop as stop:
            log.error("%s", stop)
            code = HARD_STOP_EXIT
        finally:
            self._done.set()
            restore()
            db.retrying(self.coord.worker_exited, self.worker_id, log=log, deadline=30)
        if code == 0 and self.stops.hard.is_set():
            log.error("hard stop: no trial was held; nothing to resume")
            code = HARD_STOP_EXIT
        return code

    def _log_signal(self, signum: int) -> None:
        # Runs inside the signal handler: only flags and a line are safe here.
        if self.stops.hard.is_set():
            log.warning("signal %d again: abandoning the epoch in flight at the next batch", signum)
        else:
            log.info("signal %d: finishing the current epoch, then releasing the trial", signum)

    def _heartbeat(self) -> None:
        interval = max(0.05, self.spec.lease_seconds / 3)
        next_renewal = time.monotonic() + interval
        while not self._done.wait(min(interval, 1.0)):
            if parent_gone() and not self.stop_requested.is_set():
                log.warning("the launcher that started this worker is gone: stopping")
                self.stops.request()
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + interval
            try:
                if not self.coord.renew(self.worker_id, self.current):
                    self.lease_lost.set()
            except db.TRANSIENT_ERRORS as err:
                log.warning("heartbeat failed (%s); will retry", type(err).__name__)

    # ---- one stint of one trial -----------------------------------------
    def train(self, claim: Claim) -> None:
        self.current = claim.number
        self.lease_lost.clear()
        state = {"checkpoint": claim.checkpoint_id, "started": time.time(), "pruned": False,
                 "durable": claim.epochs_done, "run": None}
        try:
            self._train(claim, state)
        except LeaseLost:
            log.warning("trial %d: lease lost to another worker; dropping it", claim.number)
        except HardStop:
            raise
        except SaanError:
            db.retrying(self.coord.release, self.worker_id, claim.number, log=log)
            raise  # bad input: every trial would fail the same way
        except Exception as err:  # noqa: BLE001 -- TrainingAborted included
            self._after_error(claim, state, err)
        finally:
            self.current = None

    def _train(self, claim: Claim, state: dict) -> None:
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
        state["run"] = run
        if run.epoch != claim.epochs_done:
            raise RuntimeError(f"trial {claim.number}: checkpoint at epoch {run.epoch}, "
                               f"stored progress {claim.epochs_done}")
        log.info("trial %d %s: epoch %d -> %d%s", claim.number, claim.params, claim.epochs_done,
                 claim.target_epoch, " (taken over)" if claim.takeover else "")
        final_epoch = self.spec.final_epoch
        pruner_kind = self.spec.scheduler.kind in ("asha", "hyperband")

        def on_epoch_end(epoch: int, metrics: dict) -> bool:
            # The epoch is trained: these writes run to the end even when a
            # second signal arrives meanwhile (its flag is looked at afterwards).
            value = finite_or_none(metrics[self.spec.metric])
            reported = math.nan if value is None else value  # Optuna's pruners prune NaN
            db.retrying(optuna_link.report, trial, reported, epoch, metrics, log=log)
            checkpoint = self.checkpoints.save(claim.number, epoch, run.to_bytes())
            held = db.retrying(self.coord.record_epoch, self.worker_id, claim.number, epoch, value,
                               _plain(metrics), state["started"], checkpoint, log=log)
            if not held or self.lease_lost.is_set():
                self.checkpoints.remove(checkpoint)
                raise LeaseLost()
            if state["checkpoint"] != checkpoint:
                self.checkpoints.remove(state["checkpoint"])
            state["checkpoint"] = checkpoint
            state["durable"] = epoch
            state["started"] = time.time()
            shown = "non-finite" if value is None else f"{value:.4f}"
            log.info("trial %d epoch %d/%d %s=%s", claim.number, epoch, claim.target_epoch,
                     self.spec.metric, shown)
            if pruner_kind and epoch < final_epoch and trial.should_prune():
                # Optuna's pruner never sees the final epoch: a fully trained
                # trial must complete, not be pruned (Optuna 5 pitfall).
                state["pruned"] = True
                return False
            return not self.stop_requested.is_set()

        if run.epoch < claim.target_epoch and not self.stop_requested.is_set():
            run.fit(claim.target_epoch, on_epoch_end=on_epoch_end,
                    should_abort=self.stops.hard.is_set)
        if self.stops.hard.is_set() and run.epoch < claim.target_epoch:
            self._release_after_hard_stop(claim, state)
        self._settle(claim, run.epoch, state["pruned"])

    def _after_error(self, claim: Claim, state: dict, err: Exception) -> None:
        """A run raised: a stop's side effect releases; a real failure is retried or fails."""
        if self.stops.hard.is_set():
            self._release_after_hard_stop(claim, state)
        if self.stop_requested.is_set():
            log.warning("trial %d: %s raised while stopping; releasing it, resumable from "
                        "epoch %d", claim.number, type(err).__name__, state["durable"])
            db.retrying(self.coord.release, self.worker_id, claim.number, log=log)
            return
        epoch = state["durable"] + 1
        oom = is_out_of_memory(err)
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if oom:
            message = (f"out of memory at batch size {self._batch_size(claim)} "
                       f"(retrying cannot help; use a smaller batch size): {message}")[:500]
        error = {"type": type(err).__name__, "message": message[:500],
                 "host": socket.gethostname(), "epoch": epoch}
        new_state = db.retrying(self.coord.record_failure, self.worker_id, claim.number, error,
                                not oom, log=log)
        if new_state == "failed":
            log.exception("trial %d failed in epoch %d: FAILED for good (%s)", claim.number, epoch,
                          "out of memory" if oom else f"after {self.spec.max_retries} retries")
            if self.spec.scheduler.kind == "sync-halving":
                db.retrying(self.coord.decide_rung, claim.rung, self.worker_id, log=log)
            db.retrying(self.finalize, log=log)
        else:
            log.exception("trial %d failed in epoch %d; put back to be retried from its "
                          "checkpoint at epoch %d", claim.number, epoch, state["durable"])

    def _release_after_hard_stop(self, claim: Claim, state: dict) -> None:
        db.retrying(self.coord.release, self.worker_id, claim.number, log=log, deadline=30)
        raise HardStop(f"hard stop: trial {claim.number} abandoned mid-epoch and released; it is "
                       f"resumable from its last durable checkpoint (epoch {state['durable']})")

    def _batch_size(self, claim: Claim) -> Any:
        if "batch_size" in claim.params:
            return claim.params["batch_size"]
        return self.spec.run_config(claim.params).trainer.batch_size

    def _settle(self, claim: Claim, epoch: int, pruned: bool) -> None:
        if pruned:
            db.retrying(self.coord.settle, self.worker_id, claim.number, "pruned", log=log)
        elif epoch < claim.target_epoch:  # stopped by a signal
            db.retrying(self.coord.release, self.worker_id, claim.number, log=log)
        elif self.spec.scheduler.kind == "sync-halving":
            db.retrying(self.coord.settle, self.worker_id, claim.number, "paused", log=log)
            decision = db.retrying(self.coord.decide_rung, claim.rung, self.worker_id, log=log)
            if decision is not None:
                log.info("rung %d decided at epoch %d: survivors %s, pruned %s", decision.rung,
                         decision.epoch, list(decision.survivors), list(decision.pruned))
        else:
            # A trial whose final objective is not finite never completes: it
            # could otherwise not be told to Optuna, nor be compared.
            final = db.retrying(self.coord.last_value, claim.number, log=log)
            db.retrying(self.coord.settle, self.worker_id, claim.number,
                        "complete" if final is not None else "pruned", log=log)
        db.retrying(self.finalize, log=log)

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


def finite_or_none(value: Any) -> float | None:
    """The objective as stored: a float, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA (or CPU allocator) out of memory: the configuration cannot run at this batch size."""
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(err, (RuntimeError, MemoryError)) and (
        isinstance(err, MemoryError) or "out of memory" in str(err).lower())


def _plain(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {k: finite_or_none(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
