"""One array in one memory-mapped .npy file, built once across processes, never used when damaged.

The storage both caches share: the decode-once pixel cache (model/cache.py) and
the style statistics computed once from it (model/style_cache.py).

A file ``<name>.npy`` has a commit marker ``<name>.json`` holding the version,
the key the file was built for, a random build id, shape, dtype, exact file
size, a checksum of the file and a CRC32 per row (plus whatever the builder
adds). Both are written under temporary names and renamed into place, json
last, so a killed builder never leaves a file that looks finished.

Opening checks the marker, the header's shape and dtype, the exact size and
the checksum (all of the file up to 64 MiB, 256 spread 64 KiB blocks beyond:
hashing BAID's 7.6 GB train cache on every open would cost seconds); anything
wrong means rebuild, with one warning naming the reason. Beyond that the first
read of a row in a process checks the row's CRC (RowFile.bad_rows); what the
caller does about a bad row is its own business (usually: invalidate, rebuild).

A build holds a filelock: a second process logs that it waits and then opens
the finished file (the lock dies with a killed builder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from filelock import FileLock, Timeout

FULL_HASH_LIMIT = 64 << 20
BLOCK = 64 << 10
N_BLOCKS = 256

# build(array) fills the writable memmap and returns the metadata to store with
# it; it must include "row_crc" (one CRC32 per row, see row_crc()).
Builder = Callable[[np.ndarray], dict]


@dataclass
class RowFile:
    array: np.ndarray         # read-only memmap
    meta: dict
    path: Path
    built: bool               # True when this call (re)built the file
    row_crc: np.ndarray = field(init=False, repr=False)
    verified: np.ndarray = field(init=False, repr=False)  # rows checked in this process

    def __post_init__(self):
        self.row_crc = np.asarray(self.meta["row_crc"], dtype=np.uint32)
        self.verified = np.zeros(len(self.row_crc), bool)

    @property
    def build_id(self) -> str:
        return self.meta["build_id"]

    def bad_rows(self, rows: np.ndarray, values: np.ndarray) -> list[int]:
        """Rows among ``rows`` (read into ``values``) whose bytes fail their CRC; checks each row once."""
        bad = []
        for row, value in zip(np.asarray(rows).tolist(), values):
            if self.verified[row]:
                continue
            if row_crc(value) != int(self.row_crc[row]):
                bad.append(row)
            else:
                self.verified[row] = True
        return bad


def row_crc(value: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(value))


def file_checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        else:
            for offset in np.linspace(0, size - BLOCK, N_BLOCKS).astype(np.int64):
                fh.seek(int(offset))
                digest.update(fh.read(BLOCK))
    return digest.hexdigest()


def open_or_build(path: Path, key: str, version: int, shape: tuple, dtype: str, build: Builder,
                  logger: logging.Logger, what: str, expect: Mapping[str, Any] | None = None) -> RowFile:
    """The valid file for ``key`` at ``path``, building it (once, across processes) if needed.

    ``expect``: metadata entries that must equal these values (e.g. the build id
    of the pixel cache a derived file was computed from); a mismatch is stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    found, reason = validate(path, key, version, shape, dtype, expect)
    if found is not None:
        return found
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process to finish building %s", path)
        lock.acquire()
    try:
        found, reason = validate(path, key, version, shape, dtype, expect)  # built meanwhile?
        if found is not None:
            return found
        if reason != "absent":
            logger.warning("cache %s is unusable (%s); rebuilding it", path, reason)
        logger.info("%s into %s (once)", what, path)
        return _build(path, key, version, shape, dtype, build, dict(expect or {}))
    finally:
        lock.release()


def invalidate(found: RowFile) -> None:
    """Drop ``found``'s commit marker, unless another process has already replaced that build."""
    meta_path = found.path.with_suffix(".json")
    with FileLock(str(found.path) + ".lock"):
        try:
            current = json.loads(meta_path.read_text()).get("build_id")
        except (OSError, ValueError):
            return
        if current == found.build_id:
            meta_path.unlink(missing_ok=True)


def validate(path: Path, key: str, version: int, shape: tuple, dtype: str,
             expect: Mapping[str, Any] | None = None) -> tuple[RowFile | None, str]:
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file() or not path.is_file():
        return None, "absent"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != version or meta.get("key") != key:
            return None, "metadata does not match"
        for name, value in (expect or {}).items():
            if meta.get(name) != value:
                return None, f"stale: built from another {name}"
        if path.stat().st_size != meta["file_size"]:
            return None, "file size differs from its metadata"
        array = np.load(path, mmap_mode="r")
        if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
            return None, f"shape {array.shape} {array.dtype}, expected {tuple(shape)} {dtype}"
        if len(meta["row_crc"]) != shape[0]:
            return None, "row checksums do not match the shape"
        if file_checksum(path) != meta["checksum"]:
            return None, "checksum mismatch"
        return RowFile(array, meta, path, False), ""
    except Exception as err:  # a damaged .npy header raises what numpy's parser meets (TokenError, SyntaxError...)
        return None, f"unreadable ({type(err).__name__}: {err})"


def _build(path: Path, key: str, version: int, shape: tuple, dtype: str, build: Builder,
           expect: dict) -> RowFile:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
    meta_tmp = tmp.with_suffix(".json")
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        extra = build(array)
        array.flush()
        del array
        meta = {**expect, **extra, "version": version, "key": key, "build_id": uuid.uuid4().hex,
                "shape": list(shape), "dtype": dtype, "file_size": tmp.stat().st_size,
                "checksum": file_checksum(tmp)}
        meta["row_crc"] = [int(c) for c in meta["row_crc"]]
        meta_tmp.write_text(json.dumps(meta))
        path.with_suffix(".json").unlink(missing_ok=True)  # no stale marker while swapping
        os.replace(tmp, path)
        os.replace(meta_tmp, path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
    return RowFile(np.load(path, mmap_mode="r"), meta, path, True)
