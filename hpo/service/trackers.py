"""Passing each epoch's results to the experiment trackers people already use.

A worker is handed one tracker (:func:`tracker_for` builds it from the study
file) and calls :meth:`Tracker.log_epoch` after an epoch is recorded under its
lease, so a tracker sees exactly what Optuna and the service tables see.

- TensorBoard: ``[study] tensorboard = "DIR"`` writes event files to
  ``DIR/trial-NNN`` through torch's ``SummaryWriter`` (needs the ``tensorboard``
  package: ``pip install 'saan-hpo[tensorboard]'``); ``tensorboard --logdir DIR``.
- MLflow: ``[study] mlflow = true`` logs one run per trial, only when ``mlflow``
  is installed (its tracking URI from ``MLFLOW_TRACKING_URI``).

A tracker that is not enabled, or whose package is missing, is a no-op (the
missing package is logged once): training never depends on a tracker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


class Tracker:
    """The no-op tracker; subclasses log somewhere."""

    def log_epoch(self, number: int, params: Mapping[str, Any], epoch: int,
                  metrics: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    """One event-file folder per trial: ``root/trial-NNN``, scalars ``val/<metric>`` per epoch."""

    def __init__(self, root: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without tensorboard

        self._writer_class = SummaryWriter
        self.root = Path(root)
        self.writers: dict[int, Any] = {}

    def log_epoch(self, number, params, epoch, metrics) -> None:
        writer = self.writers.get(number)
        if writer is None:
            writer = self._writer_class(log_dir=str(self.root / f"trial-{number:03d}"))
            writer.add_text("params", ", ".join(f"{k}={v}" for k, v in params.items()), 0)
            self.writers[number] = writer
        for name, value in metrics.items():
            writer.add_scalar(f"val/{name}", float(value), epoch)
        writer.flush()  # readable while the study runs, and after a kill

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class MlflowTracker(Tracker):
    """One MLflow run per trial (``trial-NNN``), params logged once, metrics per epoch."""

    def __init__(self, study: str):
        import mlflow  # ImportError when not installed

        self.mlflow = mlflow
        self.study = study
        self.started: set[int] = set()

    def log_epoch(self, number, params, epoch, metrics) -> None:
        client = self.mlflow.MlflowClient()
        experiment = self.mlflow.set_experiment(self.study)
        runs = client.search_runs([experiment.experiment_id], f"tags.saan_trial = '{number}'")
        if runs:
            run_id = runs[0].info.run_id
        else:
            run_id = client.create_run(experiment.experiment_id, run_name=f"trial-{number:03d}",
                                       tags={"saan_trial": str(number)}).info.run_id
            for key, value in params.items():
                client.log_param(run_id, key, value)
        for name, value in metrics.items():
            client.log_metric(run_id, f"val_{name}", float(value), step=epoch)


class Trackers(Tracker):
    """Several trackers as one; one that fails is logged and dropped, training goes on."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def log_epoch(self, number, params, epoch, metrics) -> None:
        for tracker in list(self.trackers):
            try:
                tracker.log_epoch(number, params, epoch, metrics)
            except Exception:  # noqa: BLE001 -- a tracker never stops training
                log.exception("%s failed; not logging to it any more", type(tracker).__name__)
                self.trackers.remove(tracker)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def tracker_for(spec) -> Tracker:
    """The trackers the study file enables and this environment has installed."""
    trackers: list[Tracker] = []
    if spec.tensorboard:
        try:
            trackers.append(TensorBoardTracker(spec.tensorboard))
        except ImportError:
            log.warning("[study] tensorboard is set but the tensorboard package is not installed "
                        "(pip install 'saan-hpo[tensorboard]'); not writing event files")
    if spec.mlflow:
        try:
            trackers.append(MlflowTracker(spec.name))
        except ImportError:
            log.warning("[study] mlflow = true but mlflow is not installed; not logging to MLflow")
    return Trackers(trackers) if trackers else Tracker()
