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

Two studies may share a name and a folder (the README's replay of the demo
into another storage, or one study file launched on a second storage): each
study's files therefore live in a sub-folder named after the study *identity*,
``<study>-<hash of the storage URL and Optuna's study id>/``, and a finished
study's clean-up looks only there. Artifact ids are paths relative to the
store, so ids recorded before sub-folders existed (flat files) still load.

Every artifact carries its checksum (model/checkpoint_file.py): ``load``
returns verified bytes or raises DamagedCheckpoint; a damaged file is never
trained on. A store that refuses writes or removals (permissions, disk full,
read-only folder) raises CheckpointWriteError naming the path, after removing
what it half-wrote: the worker releases its trial and stops, the trial's last
good checkpoint stays where it was.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from model import checkpoint_file
from model.checkpoint_file import DamagedCheckpoint
from hpo.service import db, optuna_link


def study_identity(storage_url: str, study_id: int) -> str:
    """A short hash naming one study of one storage, however its URL is spelled.

    The password never enters it; a SQLite path counts by the file it names.
    """
    path = db.sqlite_path(storage_url)
    text = f"sqlite:///{path.resolve()}" if path else db.mask_url(storage_url).replace(":***@", "@")
    return hashlib.sha256(f"{text}#{study_id}".encode()).hexdigest()[:10]


class CheckpointStore:
    def __init__(self, store_or_path, study_name: str, identity: str | None = None):
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
        # Where this study writes: its own sub-folder when the identity is known
        # (workers, export); a reader given none only loads recorded ids.
        self.folder = f"{self.prefix}-{identity}" if identity else None

    @classmethod
    def for_study(cls, store_or_path, study_name: str, storage_url: str,
                  optuna_storage=None) -> "CheckpointStore":
        """The store of ``study_name`` on ``storage_url``, writing into its identity's sub-folder.

        ``optuna_storage``: the caller's Optuna storage of that URL, when it has one open.
        """
        storage = optuna_storage or optuna_link.optuna_storage(storage_url)
        study_id = storage.get_study_id_from_name(study_name)
        return cls(store_or_path, study_name, study_identity(storage_url, study_id))

    def _in_folder(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name

    def where(self, artifact_id: str) -> str:
        """The artifact's path for messages (its id in a store that is not a folder)."""
        return str(self.root / artifact_id) if self.root is not None else artifact_id

    def artifact_id(self, number: int, epoch: int) -> str:
        return self._in_folder(f"{self.prefix}-t{number}-e{epoch}-{uuid.uuid4().hex[:8]}.ckpt")

    def named(self, name: str) -> str:
        """The id of another per-trial artifact (e.g. test predictions) in this study's folder."""
        return self._in_folder(name)

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

    def set_aside(self, artifact_id: str) -> str | None:
        """Rename a damaged checkpoint to ``<id>.damaged`` (kept for a look, never loaded or
        cleaned up as a checkpoint); its new path, or None when there is nothing to move."""
        if self.root is None:
            return None
        path = self.root / artifact_id
        aside = path.with_name(path.name + ".damaged")
        try:
            path.rename(aside)
        except OSError:
            return None  # gone already, or the folder refuses: it stays unreferenced either way
        return str(aside)

    def _own_checkpoints(self) -> list[tuple[str, int, int]]:
        """(artifact id, trial number, epoch) of every checkpoint file in this study's sub-folder
        (folder stores with a known identity only)."""
        if self.root is None or self.folder is None or not (self.root / self.folder).is_dir():
            return []
        pattern = re.compile(re.escape(self.prefix) + r"-t(\d+)-e(\d+)-[0-9a-f]{8}\.ckpt")
        return [(self._in_folder(path.name), int(match.group(1)), int(match.group(2)))
                for path in (self.root / self.folder).iterdir()
                if (match := pattern.fullmatch(path.name))]

    def older(self, number: int, before_epoch: int) -> list[str]:
        """This study's other checkpoints of trial ``number`` from before ``before_epoch``, newest
        first: left by a removal that failed or by a worker killed between record and removal."""
        found = [(epoch, artifact_id) for artifact_id, trial, epoch in self._own_checkpoints()
                 if trial == number and epoch < before_epoch]
        return [artifact_id for _, artifact_id in sorted(found, reverse=True)]

    def remove_orphans(self, referenced: set[str]) -> list[str]:
        """Delete this study's checkpoint files no trial points to; the ids removed.

        Only the study's own sub-folder is looked at: flat files from before
        sub-folders may belong to another study of the same name, so they stay.

        For a finished study only: while it runs, a file may be written but not
        yet recorded. Orphans come from a folder that refused removals for a
        while (an environment fault stopped the worker between recording a new
        checkpoint and removing the previous one). Folder stores only.
        """
        orphans = sorted(artifact_id for artifact_id, _, _ in self._own_checkpoints()
                         if artifact_id not in referenced)
        for artifact_id in orphans:
            self.remove(artifact_id)
        return orphans

    def _drop_partial(self, artifact_id: str) -> None:
        try:
            self.store.remove(artifact_id)
        except (ArtifactNotFound, OSError):
            pass  # nothing was created, or the folder refuses removals too
