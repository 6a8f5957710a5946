"""Trial runs, what a worker trains: the SAAN trainer, or recorded curves replayed.

Both follow the trainer's protocol (model/train.py): ``epoch``,
``fit(until_epoch, on_epoch_end)`` continuing from wherever the run is, and a
state that resumes it exactly. The replay drives ``simulate``, the scheduler
tests and the benchmarks with the very same worker code that trains SAAN.
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any, Callable, Mapping, Protocol

from hpo.scheduling.spec import StudySpec
from hpo.service.learning_curves import LearningCurves

EpochCallback = Callable[[int, dict], Any]
AbortCheck = Callable[[], bool]


class TrialRun(Protocol):
    """``fit`` asks ``should_abort()`` between batches and raises when it says
    True (a hard stop; the run is then mid-epoch and is resumed from its last
    checkpoint, never from itself)."""

    epoch: int

    def fit(self, until_epoch: int, on_epoch_end: EpochCallback | None = None,
            should_abort: AbortCheck | None = None) -> Any: ...

    def snapshot(self) -> Any:
        """The run's exact state, copied now (fast): training may go on at once."""

    def snapshot_bytes(self, snapshot: Any) -> bytes:
        """A snapshot serialised (slow for SAAN; the worker calls it off the training thread)."""

    def load_bytes(self, payload: bytes) -> None: ...


class HeldData:
    """The opened data splits of the last data settings this process trained on.

    A worker builds a new Trainer per claim; without this each claim reopened
    (and, for device-resident data, re-uploaded) the splits. Claims whose
    ``[data]`` settings match -- the same study's trials, or another study's
    on the same dataset -- reuse the splits already held. One setting at a
    time, so a worker moving between datasets never holds two in memory.
    ImageNet weight files are kept by model.weights (keyed by file), so a model
    with the same backbone and weights is not read from disk again either.
    """

    def __init__(self):
        self.key: str | None = None
        self.splits: dict | None = None

    def attach(self, trainer, data_settings: Mapping[str, Any]) -> None:
        key = json.dumps(data_settings, sort_keys=True, default=str)
        splits = getattr(trainer, "splits", None)
        if not isinstance(splits, dict):
            return
        if key == self.key and self.splits is not None and self.splits is not splits:
            splits.update(self.splits)  # filled in place: the trainer finds them opened
        self.key, self.splits = key, splits


HELD_DATA = HeldData()


class SaanRun:
    """The SAAN trainer as a trial run; its checkpoint is the trainer's exact state."""

    def __init__(self, spec: StudySpec, params: Mapping[str, Any], device: str | None):
        # torch (seconds to import) only in workers that train SAAN, never for replays,
        # status or reports; the same for the two methods below.
        from model.train import Trainer

        config = spec.run_config(params)
        self.trainer = Trainer(config, device=device)
        HELD_DATA.attach(self.trainer, config.to_mapping()["data"])

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    def fit(self, until_epoch: int, on_epoch_end: EpochCallback | None = None,
            should_abort: AbortCheck | None = None):
        return self.trainer.fit(until_epoch, on_epoch_end=on_epoch_end, should_abort=should_abort)

    def snapshot(self) -> Any:
        return self.trainer.snapshot()  # a host copy (model/checkpoint.py)

    def snapshot_bytes(self, snapshot: Any) -> bytes:
        from model.checkpoint import checkpoint_bytes  # torch: see __init__

        return checkpoint_bytes(snapshot)

    def load_bytes(self, payload: bytes) -> None:
        import torch  # see __init__

        from model.checkpoint_file import DamagedCheckpoint

        try:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
        except Exception as err:  # torch raises many types for bytes it cannot read
            raise DamagedCheckpoint(f"not a readable checkpoint ({type(err).__name__})") from None
        self.trainer.load_state_dict(state)


class ReplayAborted(Exception):
    """The replay's counterpart of model.train.TrainingAborted."""


class ReplayRun:
    """Replays one configuration's recorded curve, optionally sleeping per epoch.

    In a gang of ``ranks`` workers (set by the holder at each epoch boundary:
    hpo/service/gang_offers.py) an epoch sleeps ``epoch_seconds / (ranks x
    gang_efficiency)``: efficiency 1.0 is a perfect speed-up, 0.5 half of it.
    The values are the curve's either way, so decisions do not depend on gangs.
    """

    trains_in_gangs = True

    def __init__(self, curves: LearningCurves, params: Mapping[str, Any], metric: str,
                 epoch_seconds: float = 0.0, gang_efficiency: float = 1.0):
        self.curves, self.params, self.metric = curves, dict(params), metric
        self.epoch_seconds = epoch_seconds
        self.gang_efficiency = gang_efficiency
        self.ranks = 1
        self.epoch = 0

    def epoch_time(self) -> float:
        if self.ranks <= 1:
            return self.epoch_seconds
        return self.epoch_seconds / (self.ranks * self.gang_efficiency)

    def fit(self, until_epoch: int, on_epoch_end: EpochCallback | None = None,
            should_abort: AbortCheck | None = None):
        # The replay's own log of epochs begun (SAAN_HPO_REPLAY_TRACE): fault
        # tests count work actually done, including epochs lost to a kill.
        trace = os.environ.get("SAAN_HPO_REPLAY_TRACE")
        while self.epoch < until_epoch:
            if trace:
                with open(trace, "a") as fh:
                    fh.write(json.dumps({"params": self.params, "epoch": self.epoch + 1}) + "\n")
            self._sleep(self.epoch_time(), should_abort)
            self.epoch += 1
            metrics = {self.metric: self.curves.value(self.params, self.epoch)}
            if on_epoch_end is not None and on_epoch_end(self.epoch, metrics) is False:
                break

    @staticmethod
    def _sleep(seconds: float, should_abort: AbortCheck | None) -> None:
        """The epoch's time, in slices like a trainer's batches (a hard stop lands between them)."""
        end = time.monotonic() + seconds
        while True:
            if should_abort is not None and should_abort():
                raise ReplayAborted("replay aborted mid-epoch")
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.02))

    def snapshot(self) -> Any:
        return {"epoch": self.epoch, "params": dict(self.params)}

    def snapshot_bytes(self, snapshot: Any) -> bytes:
        return json.dumps(snapshot).encode()

    def load_bytes(self, payload: bytes) -> None:
        from model.checkpoint_file import DamagedCheckpoint

        try:
            self.epoch = int(json.loads(payload)["epoch"])
        except (ValueError, KeyError, TypeError) as err:
            raise DamagedCheckpoint(f"not a replay checkpoint ({type(err).__name__})") from None


def run_factory(spec: StudySpec, device: str | None = None, curves: LearningCurves | None = None,
                epoch_seconds: float = 0.0,
                gang_efficiency: float = 1.0) -> Callable[[Mapping[str, Any]], TrialRun]:
    """How the worker turns a claimed trial's params into a run.

    A factory whose runs can train in gangs says so (``trains_in_gangs``): both.
    SAAN runs also say ``forms_process_groups``: their gangs train as real ranks
    (hpo/service/rendezvous.py), where a replay holder only shortens its sleep.
    """
    if curves is not None:
        def replay(params: Mapping[str, Any]) -> TrialRun:
            return ReplayRun(curves, params, spec.metric, epoch_seconds, gang_efficiency)

        replay.trains_in_gangs = True  # type: ignore[attr-defined]
        return replay
    def saan(params: Mapping[str, Any]) -> TrialRun:
        return SaanRun(spec, params, device)

    saan.trains_in_gangs = True  # type: ignore[attr-defined]
    saan.forms_process_groups = True  # type: ignore[attr-defined]
    return saan
