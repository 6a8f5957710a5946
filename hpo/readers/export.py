"""The winning configuration as a train config, with its scores and provenance."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math

from optuna.artifacts.exceptions import ArtifactNotFound

from model.checkpoint_file import DamagedCheckpoint
from model.config import dump_toml
from model.errors import SaanError
from hpo.readers.results import best_trial, checkpoint_ids, stored_spec
from hpo.scheduling.spec import StudySpec
from hpo.service import db
from hpo.service.checkpoints import CheckpointStore
from hpo.service.coordination import Coordinator
from hpo.service.trial_runs import SaanRun

log = logging.getLogger(__name__)


class NothingToExport(SaanError):
    pass


def winner(name: str, storage_url: str):
    spec = stored_spec(name, storage_url)
    best = best_trial(name, storage_url)
    if best is None:
        raise NothingToExport(f"study {name!r} on {db.mask_url(storage_url)}: no finished trial "
                              "to export yet (status shows how far it is)")
    return spec, best


def export_text(spec: StudySpec, best, storage_url: str, test_scores: dict | None = None) -> str:
    """A file ``saan-hpo train`` accepts: the run config with the winner's params."""
    run = spec.run_config(best.params)
    epochs = int(best.user_attrs.get("epochs") or spec.final_epoch)
    run.trainer.epochs = epochs  # retraining reproduces what the study measured
    metrics = best.user_attrs.get("last_metrics", {})
    header = [
        f"Best configuration of study {spec.name!r} ({spec.scheduler.kind}, eta "
        f"{spec.scheduler.eta}, boundaries {spec.boundaries})",
        f"storage: {db.mask_url(storage_url)}",
        f"trial {best.number}, {epochs} epochs, params {json.dumps(best.params)}",
        f"validation {spec.metric}: {best.value:.6g}",
        "validation scores: " + ", ".join(f"{k} {_score(v)}" for k, v in sorted(metrics.items())),
    ]
    if test_scores:
        header.append("test scores: " + ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(test_scores.items()) if isinstance(v, float)))
    header.append(f"exported {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
                  "by saan-hpo export")
    return dump_toml(run.to_mapping(), header="\n".join(header))


def _score(value) -> str:
    """4 decimals; a non-finite score (stored as null) says so instead of printing nan."""
    if value is None or not math.isfinite(value):
        return "non-finite"
    return f"{value:.4f}"


def evaluate_winner(spec: StudySpec, storage_url: str, best, artifacts: str | None = None,
                    device: str | None = None, split: str = "test") -> dict:
    """Test-set scores of the winner: from its checkpoint, or retrained when that is gone or damaged.

    A retrained winner is kept: its checkpoint is written into the study's
    folder and recorded as the trial's, so the next export (or ``table``)
    loads it instead of retraining again.
    """
    run = SaanRun(spec, best.params, device)
    store = CheckpointStore.for_study(artifacts or spec.artifacts, spec.name, storage_url)
    checkpoint = checkpoint_ids(spec.name, storage_url).get(best.number)
    epochs = int(best.user_attrs.get("epochs") or spec.final_epoch)
    if checkpoint:
        try:
            run.load_bytes(store.load(checkpoint))
            return run.trainer.evaluate(split)
        except (ArtifactNotFound, DamagedCheckpoint) as err:
            # Never score a damaged file: the scores would be quietly wrong.
            where = store.where(checkpoint)  # the message names the file, whatever raised
            what = f"{where} not found" if isinstance(err, ArtifactNotFound) else (
                f"{err}" if where in str(err) else f"{where}: {err}")
            log.warning("winner's checkpoint %s; retraining trial %d (%d epochs)", what,
                        best.number, epochs)
            run = SaanRun(spec, best.params, device)
    else:
        log.warning("trial %d has no checkpoint recorded; retraining it (%d epochs)",
                    best.number, epochs)
    run.fit(epochs)
    kept = store.save(best.number, epochs, run.snapshot_bytes(run.snapshot()))
    coordinator = Coordinator(db.create_service_engine(storage_url), spec)
    try:
        coordinator.keep_checkpoint(best.number, kept)
    finally:
        coordinator.engine.dispose()
    log.warning("kept the retrained winner as %s", store.where(kept))
    return run.trainer.evaluate(split)

