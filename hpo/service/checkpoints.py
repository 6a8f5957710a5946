"""Trial checkpoints in an Optuna artifact store.

Each epoch's checkpoint gets a new artifact id (``<study>-t<number>-e<epoch>-<random>``;
the random part keeps a stalled worker that lost its lease from deleting the
file of the worker that took over) and the previous one is removed only after the new id is recorded under the
lease: a worker killed while writing leaves the last good checkpoint in place
(Optuna's FileSystemArtifactStore writes in place, not atomically). A directory
store is the default; workers on several machines need one they all reach (a
shared filesystem path, or any Optuna artifact store passed in by code).
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

log = logging.getLogger(__name__)


class CheckpointStore:
    def __init__(self, store_or_path, study_name: str):
        if isinstance(store_or_path, (str, Path)):
            Path(store_or_path).mkdir(parents=True, exist_ok=True)
            store_or_path = FileSystemArtifactStore(str(store_or_path))
        self.store = store_or_path
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)

    def artifact_id(self, number: int, epoch: int) -> str:
        return f"{self.prefix}-t{number}-e{epoch}-{uuid.uuid4().hex[:8]}.ckpt"

    def save(self, number: int, epoch: int, payload: bytes) -> str:
        artifact_id = self.artifact_id(number, epoch)
        self.store.write(artifact_id, io.BytesIO(payload))
        return artifact_id

    def write(self, artifact_id: str, payload: bytes) -> None:
        """Any other per-trial artifact under a chosen id (e.g. test predictions)."""
        self.store.write(artifact_id, io.BytesIO(payload))

    def load(self, artifact_id: str) -> bytes:
        reader = self.store.open_reader(artifact_id)
        try:
            return reader.read()
        finally:
            reader.close()

    def remove(self, artifact_id: str | None) -> None:
        if not artifact_id:
            return
        try:
            self.store.remove(artifact_id)
        except ArtifactNotFound:
            pass  # already removed by another worker finishing the same job
        except OSError as err:  # never fail a study over a stale file
            log.warning("could not remove checkpoint %s: %s", artifact_id, err)
