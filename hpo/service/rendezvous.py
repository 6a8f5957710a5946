"""Real training in gangs: a holder's process group and the epochs' protocol (issue 20).

Who is in which gang is the storage's business (hpo/service/gang_offers.py);
this module is what happens between the processes once that is decided.

* **Prepare.** A worker taken into a gang builds the trial's trainer first and
  then says so in its row (``gang_ready``); until then the holder trains on
  without it, so a member's start-up (data, model, device) never stalls a trial.
* **Form.** When the ready part of the gang a holder recorded for the next epoch
  differs from the one it trains with, the holder picks a free port on its host
  (``SAAN_HPO_DIST_ADDR``: the address other machines reach it at, ``host`` or
  ``host:port``; default this host's name's address), publishes
  ``host:port`` in the members' rows and waits for them in
  ``init_process_group`` for at most ``[study] gang_timeout`` seconds. A member
  that sees an address it has not joined joins as its rank and receives the
  holder's exact state (the checkpoint's bytes,
  broadcast): every rank then holds the same weights, optimizer and RNG.
  Formation that does not complete in time is given up with one line; the
  holder trains that epoch alone and its members go back to the pool.
* **Each epoch.** Before every epoch the ranks agree in one small all-reduce
  (``Gang.exchange``): the holder's command (train epoch e, or disband) and each
  rank's wish to leave (a member asked to stop). Anyone leaving disbands the
  whole gang at that boundary; the holder trains the next epoch alone, and its
  next boundary regroups. So a stopped member finishes the epoch it is in and
  never makes the others wait on it.
* **Faults.** The process group's timeout bounds every collective: a member
  SIGKILLed mid-epoch makes the holder's next all-reduce raise (``GangFault``);
  the holder discards that epoch and releases the trial, which resumes from its
  last durable checkpoint -- a stop, not a retry. A holder that dies makes the
  members' collectives raise the same way; they go back to the pool.

Only the holder validates, checkpoints, reports and records (model/train.py).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from hpo.service.gang_offers import Assignment, GangBoard
    from hpo.service.trial_runs import SaanRun

log = logging.getLogger(__name__)

TRAIN, DISBAND = 1, 0


class GangFault(Exception):
    """A collective of the gang failed or timed out: a rank is gone; the epoch is lost."""


def is_gang_fault(err: BaseException) -> bool:
    """Whether ``err`` is a collective's failure (a rank gone), not the training's own error.

    NCCL's and the store's failures are DistError; gloo's are plain RuntimeErrors
    whose message names gloo ("[.../gloo/transport/tcp/pair.cc] Connection reset by
    peer"). A training error of its own stays a failure (retried, then FAILED)."""
    if isinstance(err, GangFault):
        return True
    import torch.distributed as dist  # only asked of a run that trained in a gang

    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("gloo" in text or "nccl" in text)


def local_host() -> str:
    """The host part of this worker's published address."""
    configured = os.environ.get("SAAN_HPO_DIST_ADDR", "").strip()
    if configured:
        return configured.rsplit(":", 1)[0] if configured.count(":") == 1 else configured
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def free_address() -> str:
    """``host:port`` for a new process group: SAAN_HPO_DIST_ADDR's port if it names one,
    else a port free now on that host's interface."""
    configured = os.environ.get("SAAN_HPO_DIST_ADDR", "").strip()
    host = local_host()
    if configured.count(":") == 1 and configured.rsplit(":", 1)[1]:
        return f"{host}:{configured.rsplit(':', 1)[1]}"
    with socket.socket() as s:
        s.bind((host, 0))
        return f"{host}:{s.getsockname()[1]}"


def _leave() -> None:
    from model.data_parallel import leave

    try:
        leave()
    except Exception:  # noqa: BLE001 -- a broken group is torn down as far as it goes
        pass


class HolderLink:
    """The holder's side of its gangs during one stint of one trial."""

    def __init__(self, board: "GangBoard", holder_id: str, number: int, run: "SaanRun",
                 timeout_s: float, device: str | None):
        self.board, self.holder_id, self.number = board, holder_id, number
        self.run, self.timeout_s, self.device = run, timeout_s, device
        self.members: tuple[str, ...] = ()  # the gang the process group was formed with

    def start_epoch(self, gang: tuple[str, ...], epoch: int) -> tuple[str, ...]:
        """The members that train ``epoch`` with this holder: ``gang`` (as recorded by
        the regroup before) less the members still building their trainers (they join
        at a later boundary: the holder never waits on a build), or fewer when forming
        failed or a member leaves."""
        ready = self.board.ready_members(self.holder_id, self.number) if gang else set()
        gang = tuple(m for m in gang if m in ready)
        if self.members:
            same = gang == self.members
            leavers = self._exchange(TRAIN if same else DISBAND, epoch)
            if same and not leavers:
                return gang
            self._disband()
            if leavers:  # a member asked to stop: it leaves now, the rest regroup next boundary
                self.board.dissolve(self.holder_id, self.number)
                return ()
        if not gang:
            return ()
        return self._form(gang, epoch)

    def finish(self) -> None:
        """The stint is over (rung reached, stop, release): the members leave the group."""
        if not self.members:
            return
        try:
            self._exchange(DISBAND, 0)
        except GangFault:
            pass  # a member already gone: nothing to tell it
        self._disband()

    def abandon(self) -> None:
        """The epoch raised mid-way: tear the group down unannounced (the members'
        collectives raise and they go back to the pool)."""
        if self.members:
            self._disband()

    def _form(self, gang: tuple[str, ...], epoch: int) -> tuple[str, ...]:
        from model.data_parallel import join

        address = free_address()
        if not self.board.publish(self.holder_id, self.number, gang, address):
            self.board.dissolve(self.holder_id, self.number)
            return ()
        try:
            join(address, 0, len(gang) + 1, self.timeout_s, device=self.device)
        except Exception as err:  # noqa: BLE001 -- any failure to form: train alone
            log.warning("trial %d: gang of %d did not form at %s within %.0f s (%s); epoch %d "
                        "trained alone", self.number, len(gang) + 1, address, self.timeout_s,
                        _first_line(err), epoch)
            _leave()
            self.board.dissolve(self.holder_id, self.number)
            return ()
        self.members = gang
        self.run.trainer.use_gang(0, len(gang) + 1)
        try:
            self.run.trainer.gang.broadcast_bytes(self.run.snapshot_bytes(self.run.snapshot()),
                                                  device=self.run.trainer.device)
            leavers = self._exchange(TRAIN, epoch)
        except GangFault as err:
            log.warning("trial %d: a member left while the gang formed (%s); epoch %d trained alone",
                        self.number, err, epoch)
            self._disband()
            self.board.dissolve(self.holder_id, self.number)
            return ()
        if leavers:
            self._disband()
            self.board.dissolve(self.holder_id, self.number)
            return ()
        return gang

    def _exchange(self, command: int, epoch: int) -> list[int]:
        try:
            _, _, leavers = self.run.trainer.gang.exchange(command, epoch, False,
                                                           device=self.run.trainer.device)
        except Exception as err:  # noqa: BLE001 -- gloo and NCCL raise RuntimeError kinds
            raise GangFault(_first_line(err)) from err
        return leavers

    def _disband(self) -> None:
        self.members = ()
        self.run.trainer.use_gang(0, 1)
        _leave()


def train_as_member(place: "Assignment", run: "SaanRun", board: "GangBoard",
                    worker_id: str, timeout_s: float, device: str | None,
                    stop_requested: Callable[[], bool], hard_stop: Callable[[], bool]) -> int:
    """Join the process group ``place`` names and train the holder's epochs as that rank
    until it disbands, this worker is stopped, or a rank fails; returns the epochs trained.

    ``run``: the trial's run, built when this worker was taken (its state is the
    holder's, broadcast on joining). Values, checkpoints and records are the
    holder's: nothing is written here but this worker's own row (freed when the
    gang ends, so it can be taken again)."""
    from model.data_parallel import join

    trainer = run.trainer
    try:
        join(place.address, place.rank, place.world, timeout_s, device=device)
    except Exception as err:  # noqa: BLE001 -- unreachable, refused, timed out
        log.warning("could not join trial %d's gang at %s (%s); offer withdrawn", place.number,
                    place.address, _first_line(err))
        _leave()
        board.withdraw(worker_id)
        return 0
    trained = 0
    trainer.use_gang(place.rank, place.world)
    gang = trainer.gang
    try:
        run.load_bytes(gang.broadcast_bytes(None, device=trainer.device))
        while True:
            command, epoch, leavers = gang.exchange(TRAIN, 0, stop_requested(), device=trainer.device)
            if command != TRAIN or leavers:
                break
            if trainer.epoch != epoch - 1:  # the protocol's own check: never train a wrong epoch
                raise RuntimeError(f"rank {place.rank} at epoch {trainer.epoch}, asked for {epoch}")
            trainer.fit(epoch, should_abort=hard_stop)
            trained += 1
    except Exception as err:  # noqa: BLE001 -- the holder died or stopped hard, or a rank did
        log.warning("trial %d's gang broke (%s); back to the pool", place.number, _first_line(err))
    finally:
        _leave()
    if stop_requested():
        board.withdraw(worker_id)
    else:
        board.free(worker_id)
    log.info("left trial %d's gang after %d epoch(s) at rank %d of %d", place.number, trained,
             place.rank, place.world)
    return trained


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
