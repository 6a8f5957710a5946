"""Checkpoint bytes framed with their checksum: written with it, verified on every read.

A checkpoint is ``HEADER + payload``, the header one ASCII line::

    saan-checkpoint 1 sha256=<64 hex digits> bytes=<payload length>\\n

so a truncated file (wrong length), a file damaged anywhere (wrong sha256) or
one that is not a checkpoint at all is refused with :class:`DamagedCheckpoint`
before torch (whose zip reader checks no CRC: a damaged file loads and gives
wrong scores) ever sees it. ``saan-hpo train`` files (last.pt) and the study
workers' artifacts share this one framing, so ``evaluate``, ``export`` and the
worker verify them alike.

Checkpoints written before the header existed (a bare torch zip, or a replay's
JSON) still load: a zip's own CRC-32s are checked (a truncated or damaged
zip is refused as well), other bytes are passed on as they are.

Writing goes to a temporary file in the same folder that is flushed, fsynced
and renamed into place; a write that fails (permissions, disk full, read-only
folder) removes its temporary file and raises :class:`CheckpointWriteError`
naming the path: the place is at fault, not the run.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

from model.errors import CheckpointError, EnvironmentFault

MAGIC = b"saan-checkpoint 1 "
HEADER_LIMIT = 256  # the header line is ~110 bytes; anything longer is not ours
_HEADER = re.compile(rb"saan-checkpoint 1 sha256=([0-9a-f]{64}) bytes=([0-9]+)\n")


class DamagedCheckpoint(CheckpointError):
    """The checkpoint's bytes are not what was written (truncated, overwritten, unreadable)."""


class CheckpointWriteError(EnvironmentFault):
    """A checkpoint could not be written where it belongs (permissions, disk full, read-only)."""


def frame(payload: bytes) -> bytes:
    """``payload`` with its checksum header in front."""
    digest = hashlib.sha256(payload).hexdigest()
    return MAGIC + f"sha256={digest} bytes={len(payload)}\n".encode() + payload


def unframe(data: bytes, name: str = "<bytes>") -> bytes:
    """The payload of framed ``data``, verified; older unframed checkpoints as they are.

    ``name`` (a path or artifact id) is only for the error message.
    """
    if data.startswith(MAGIC):
        end = data.find(b"\n", 0, HEADER_LIMIT)
        match = _HEADER.fullmatch(data[:end + 1]) if end >= 0 else None
        if match is None:
            raise DamagedCheckpoint(f"{name}: damaged checkpoint (its checksum header is unreadable)")
        payload = data[end + 1:]
        expected = int(match.group(2))
        if len(payload) != expected:
            raise DamagedCheckpoint(f"{name}: damaged checkpoint ({len(payload)} bytes after the "
                                    f"header, {expected} written: truncated?)")
        if hashlib.sha256(payload).hexdigest() != match.group(1).decode():
            raise DamagedCheckpoint(f"{name}: damaged checkpoint (sha256 differs from the one "
                                    "written with it)")
        return payload
    if data.startswith(b"PK\x03\x04"):
        _check_zip(data, name)
    return data


def _check_zip(data: bytes, name: str) -> None:
    """An unframed torch zip: at least its central directory and every member's CRC-32."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DamagedCheckpoint(f"{name}: damaged checkpoint (unreadable zip: {err})") from None
    if bad is not None:
        raise DamagedCheckpoint(f"{name}: damaged checkpoint (CRC mismatch in {bad})")


def read(path: str | Path) -> bytes:
    """The verified payload of the checkpoint file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedCheckpoint(f"{path}: unreadable checkpoint ({err.strerror or err})") from None
    return unframe(data, str(path))


def write(path: str | Path, payload: bytes) -> Path:
    """Write ``frame(payload)`` to ``path`` atomically: the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(frame(payload))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder refuses changes; the error above already names it
    fsync_dir(path.parent)  # the rename itself survives a power cut
    return path


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path: str | Path, err: OSError) -> CheckpointWriteError:
    """One line naming the path and the system's reason (Permission denied, No space left...)."""
    reason = err.strerror or type(err).__name__
    return CheckpointWriteError(f"{path}: cannot write checkpoint ({reason}); "
                                "fix the folder (permissions, free space) and run again")
