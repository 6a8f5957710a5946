"""Trial checkpoints in an Optuna artifact store.

Each epoch's checkpoint gets a new artifact id (``<study>-t<number>-e<epoch>-<random>``;
the random part keeps a stalled worker that lost its lease from deleting the
file of the worker that took over) and the previous one is removed only after the new id is recorded under the
lease: a worker killed while writing leaves the last good checkpoint in place.
A directory store is the default; workers on several machines need one they
all reach (a shared filesystem path, or any Optuna artifact store passed in by
code). In a directory, ``save`` writes a temporary file, fsyncs it and renames
it into place (Optuna's FileSystemArtifactStore writes in place and never
fsyncs): when ``save`` returns the checkpoint is durable, so the worker may
record its epoch. Other stores are trusted to be durable when ``write`` returns.

Every artifact carries its checksum (model/checkpoint_file.py): ``load``
returns verified bytes or raises DamagedCheckpoint; a damaged file is never
trained on. A store that refuses writes or removals (permissions, disk full,
read-only folder) raises CheckpointWriteError naming the path, after removing
what it half-wrote: the worker releases its trial and stops, the trial's last
good checkpoint stays where it was.
"""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from model import checkpoint_file
from model.checkpoint_file import DamagedCheckpoint

class CheckpointStore:
    def __init__(self, store_or_path, study_name: str):
        self.root: Path | None = None
        if isinstance(store_or_path, (str, Path)):
            self.root = Path(store_or_path)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise checkpoint_file.write_error(self.root, err) from None
            store_or_path = FileSystemArtifactStore(str(store_or_path))
        self.store = store_or_path
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)

    def where(self, artifact_id: str) -> str:
        """The artifact's path for messages (its id in a store that is not a folder)."""
        return str(self.root / artifact_id) if self.root is not None else artifact_id

    def artifact_id(self, number: int, epoch: int) -> str:
        return f"{self.prefix}-t{number}-e{epoch}-{uuid.uuid4().hex[:8]}.ckpt"

    def save(self, number: int, epoch: int, payload: bytes) -> str:
        artifact_id = self.artifact_id(number, epoch)
        if self.root is not None:  # atomic and durable; names the path when refused
            checkpoint_file.write(self.root / artifact_id, payload)
            return artifact_id
        try:
            self.store.write(artifact_id, io.BytesIO(checkpoint_file.frame(payload)))
        except OSError as err:
            self._drop_partial(artifact_id)
            raise checkpoint_file.write_error(self.where(artifact_id), err) from None
        return artifact_id

    def write(self, artifact_id: str, payload: bytes) -> None:
        """Any other per-trial artifact under a chosen id (e.g. test predictions)."""
        self.store.write(artifact_id, io.BytesIO(payload))

    def load(self, artifact_id: str) -> bytes:
        """The checkpoint's verified payload; ArtifactNotFound, or DamagedCheckpoint."""
        try:
            reader = self.store.open_reader(artifact_id)
            try:
                data = reader.read()
            finally:
                reader.close()
        except ArtifactNotFound:
            raise
        except OSError as err:
            raise DamagedCheckpoint(f"{self.where(artifact_id)}: unreadable checkpoint "
                                    f"({err.strerror or err})") from None
        return checkpoint_file.unframe(data, self.where(artifact_id))

    def remove(self, artifact_id: str | None) -> None:
        """Delete a checkpoint; gone already is fine, a store that refuses is an environment fault."""
        if not artifact_id:
            return
        try:
            self.store.remove(artifact_id)
        except ArtifactNotFound:
            pass  # already removed by another worker finishing the same job
        except OSError as err:
            # Raised, not logged: a worker that went on would leave this file
            # orphaned once the folder accepts changes again.
            raise checkpoint_file.write_error(self.where(artifact_id), err) from None

    def remove_orphans(self, referenced: set[str]) -> list[str]:
        """Delete this study's checkpoint files no trial points to; the ids removed.

        For a finished study only: while it runs, a file may be written but not
        yet recorded. Orphans come from a folder that refused removals for a
        while (an environment fault stopped the worker between recording a new
        checkpoint and removing the previous one). Folder stores only.
        """
        if self.root is None or not self.root.is_dir():
            return []
        pattern = re.compile(re.escape(self.prefix) + r"-t\d+-e\d+-[0-9a-f]{8}\.ckpt")
        orphans = sorted(p.name for p in self.root.iterdir()
                         if pattern.fullmatch(p.name) and p.name not in referenced)
        for artifact_id in orphans:
            self.remove(artifact_id)
        return orphans

    def _drop_partial(self, artifact_id: str) -> None:
        try:
            self.store.remove(artifact_id)
        except (ArtifactNotFound, OSError):
            pass  # nothing was created, or the folder refuses removals too
