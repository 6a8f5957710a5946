"""Decode-once cache: a split's resized uint8 images in one memory-mapped .npy file.

Why: decoding full-size BAID JPEGs dominates an epoch (a 1600x1200 JPEG costs
~7 ms to decode and ~15 ms more to resize to 32 px on one core, far more than a
small training step), and every epoch decodes the same images to the same
pixels (the flip is done afterwards on tensors).

Keyed by a hash of the split's rows (the CSV content after any val carve), the
image size, the split name and the dataset folder, so a changed CSV or size
gets a new file, shared by every trial of a study and every worker process on
the machine. Replacing an image file in place under an unchanged CSV is not
noticed: delete the cache folder then.

Built in parallel: one thread per core decodes and resizes (PIL releases the
GIL in both, so threads scale like processes without their start-up cost or
pickling the pixels back), with a tqdm bar unless SAAN_HPO_NO_PROGRESS=1 or
stderr is not a terminal.

Safe for several processes: a build holds a filelock (a second process logs
that it waits and then opens the finished file; the lock dies with a killed
builder), writes ``<name>.npy`` and ``<name>.json`` under temporary names and
renames them into place (json last, so it is the commit marker).

Never silently used when damaged: opening checks the header shape, the exact
file size and a checksum of the file (all of it up to 64 MiB, 256 spread
64 KiB blocks beyond: hashing BAID's 7.6 GB train cache on every open would
cost seconds); anything wrong means rebuild. Beyond that every row has a CRC32
in the json, and the first read of a row in a process checks it (zlib's crc32
runs at ~4 GB/s, and the row is being read anyway); a mismatch there drops the
cache's marker, rebuilds it and serves the rebuilt rows (see ImageSplit.images).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from model.config import DataConfig
from model.data import bad_image, decode_resized
from model.errors import ImageError
from model.progress import progress_enabled

CACHE_VERSION = 2
FULL_HASH_LIMIT = 64 << 20
BLOCK = 64 << 10
N_BLOCKS = 256


@dataclass
class Cache:
    pixels: np.ndarray        # (N, H, W, 3) uint8 memmap, one row per CSV row
    kept: list[int]           # rows that hold a decoded image
    skipped: list[str]        # names that were missing or unreadable
    path: Path
    built: bool               # True when this call (re)built the file
    build_id: str = ""
    row_crc: np.ndarray | None = None                       # CRC32 of each row's bytes
    verified: np.ndarray | None = field(default=None, repr=False)  # rows checked in this process

    def __post_init__(self):
        if self.row_crc is not None and self.verified is None:
            self.verified = np.zeros(len(self.row_crc), bool)

    def bad_rows(self, rows: np.ndarray, images: np.ndarray) -> list[int]:
        """Rows among ``rows`` (read into ``images``) whose bytes fail their CRC; checks each row once."""
        if self.row_crc is None:
            return []
        bad = []
        for row, image in zip(rows.tolist(), images):
            if self.verified[row]:
                continue
            if zlib.crc32(np.ascontiguousarray(image)) != int(self.row_crc[row]):
                bad.append(row)
            else:
                self.verified[row] = True
        return bad


def cache_key(root: Path, rows: list[tuple[str, float]], split: str, image_size: int) -> str:
    payload = json.dumps([CACHE_VERSION, str(root.resolve()), split, image_size, rows])
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_path(root: Path, rows: list[tuple[str, float]], split: str, cfg: DataConfig) -> tuple[Path, str]:
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else root / ".saan-cache"
    key = cache_key(root, rows, split, cfg.image_size)
    return cache_dir / f"{split}-{cfg.image_size}px-{key[:16]}.npy", key


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


def open_cache(root: Path, rows: list[tuple[str, float]], split: str, cfg: DataConfig,
               logger: logging.Logger) -> Cache:
    """Open the valid cache for these rows, building it (once, across processes) if needed."""
    path, key = cache_path(root, rows, split, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (len(rows), cfg.image_size, cfg.image_size, 3)
    cache, reason = _validate(path, key, shape)
    if cache is not None:
        return _check_policy(cache, cfg, root)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process to finish building %s", path)
        lock.acquire()
    try:
        cache, reason = _validate(path, key, shape)  # another process may have built it
        if cache is not None:
            return _check_policy(cache, cfg, root)
        if reason != "absent":
            logger.warning("cache %s is unusable (%s); rebuilding it", path, reason)
        logger.info("decoding %d %s images into %s (once)", len(rows), split, path)
        return _build(path, key, root, rows, cfg, logger)
    finally:
        lock.release()


def invalidate(cache: Cache) -> None:
    """Drop ``cache``'s commit marker, unless another process has already replaced that build."""
    meta_path = cache.path.with_suffix(".json")
    with FileLock(str(cache.path) + ".lock"):
        try:
            current = json.loads(meta_path.read_text()).get("build_id")
        except (OSError, ValueError):
            return
        if current == cache.build_id:
            meta_path.unlink(missing_ok=True)


def _validate(path: Path, key: str, shape: tuple) -> tuple[Cache | None, str]:
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file() or not path.is_file():
        return None, "absent"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            return None, "metadata does not match"
        if path.stat().st_size != meta["file_size"]:
            return None, "file size differs from its metadata"
        pixels = np.load(path, mmap_mode="r")
        if pixels.shape != shape or pixels.dtype != np.uint8:
            return None, f"shape {pixels.shape} {pixels.dtype}, expected {shape} uint8"
        row_crc = np.asarray(meta["row_crc"], dtype=np.uint32)
        if row_crc.shape != (shape[0],):
            return None, "row checksums do not match the shape"
        if file_checksum(path) != meta["checksum"]:
            return None, "checksum mismatch"
        return Cache(pixels, list(meta["kept"]), list(meta["skipped"]), path, False,
                     meta["build_id"], row_crc), ""
    except Exception as err:  # a damaged .npy header raises what numpy's parser meets (TokenError, SyntaxError...)
        return None, f"unreadable ({type(err).__name__}: {err})"


def _check_policy(cache: Cache, cfg: DataConfig, root: Path) -> Cache:
    # A cache built with on_bad_image="skip" still knows what it skipped.
    if cache.skipped and cfg.on_bad_image == "fatal":
        raise ImageError(bad_image(root / "images" / cache.skipped[0], OSError("see cache build")))
    return cache


def _decode_or_error(args: tuple[Path, int]) -> np.ndarray | Exception:
    path, size = args
    if not path.is_file():
        return FileNotFoundError(str(path))
    try:
        return decode_resized(path, size)
    except Exception as err:  # PIL raises many types for a bad file
        return err


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _build(path: Path, key: str, root: Path, rows: list[tuple[str, float]], cfg: DataConfig,
           logger: logging.Logger) -> Cache:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
    shape = (len(rows), cfg.image_size, cfg.image_size, 3)
    kept, skipped = [], []
    row_crc = np.full(len(rows), zlib.crc32(bytes(int(np.prod(shape[1:])))), np.uint32)  # zero rows
    try:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        jobs = [(root / "images" / name, cfg.image_size) for name, _ in rows]
        # PIL decodes and resizes without the GIL, so one thread per core uses
        # them all; errors come back as values and are judged here in the main thread.
        bar = tqdm(total=len(jobs), desc=f"caching {path.name.split('-')[0]} images", unit="img",
                   leave=False, disable=not progress_enabled(), dynamic_ncols=True)
        with bar, ThreadPoolExecutor(max_workers=_cores()) as pool:
            for i, result in enumerate(pool.map(_decode_or_error, jobs, chunksize=8)):
                bar.update()
                if isinstance(result, np.ndarray):
                    pixels[i] = result
                    row_crc[i] = zlib.crc32(np.ascontiguousarray(result))
                    kept.append(i)
                    continue
                missing = isinstance(result, FileNotFoundError)
                if cfg.on_bad_image == "fatal":
                    raise ImageError(bad_image(jobs[i][0], None if missing else result))
                skipped.append(rows[i][0])
        pixels.flush()
        del pixels
        build_id = uuid.uuid4().hex
        meta = {"version": CACHE_VERSION, "key": key, "build_id": build_id, "shape": list(shape),
                "kept": kept, "skipped": skipped, "file_size": tmp.stat().st_size,
                "checksum": file_checksum(tmp), "row_crc": row_crc.tolist()}
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(json.dumps(meta))
        path.with_suffix(".json").unlink(missing_ok=True)  # no stale marker while swapping
        os.replace(tmp, path)
        os.replace(meta_tmp, path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".json").unlink(missing_ok=True)
    return Cache(np.load(path, mmap_mode="r"), kept, skipped, path, True, build_id, row_crc)
