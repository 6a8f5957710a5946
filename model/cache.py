"""Decode-once cache: a split's resized uint8 images in one memory-mapped .npy file.

Why: decoding full-size BAID JPEGs dominates an epoch, and every epoch decodes
the same images to the same pixels (the flip is done afterwards on tensors).

Keyed by a hash of the split's rows (the CSV content after any val carve), the
image size, the split name and the dataset folder, so a changed CSV or size
gets a new file. Replacing an image file in place under an unchanged CSV is not
noticed: delete the cache folder then.

Safe for several processes: a build holds a filelock, writes ``<name>.npy`` and
``<name>.json`` under temporary names and renames them into place (json last,
so it is the commit marker). Opening validates the header shape, the exact file
size and a checksum stored in the json; anything wrong means rebuild, never use.
The checksum covers the whole file up to 64 MiB and 256 spread 64 KiB blocks
beyond that (a full hash of BAID's 7.6 GB train cache on every open would cost
seconds; truncation and header damage are caught exactly by the size and shape).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from model.config import DataConfig
from model.data import bad_image, decode_resized
from model.errors import ImageError

CACHE_VERSION = 1
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


def cache_key(root: Path, rows: list[tuple[str, float]], split: str, image_size: int) -> str:
    payload = json.dumps([CACHE_VERSION, str(root.resolve()), split, image_size, rows])
    return hashlib.sha256(payload.encode()).hexdigest()


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
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else root / ".saan-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(root, rows, split, cfg.image_size)
    path = cache_dir / f"{split}-{cfg.image_size}px-{key[:16]}.npy"
    shape = (len(rows), cfg.image_size, cfg.image_size, 3)
    cache, reason = _validate(path, key, shape)
    if cache is not None:
        return _check_policy(cache, cfg, root)
    with FileLock(str(path) + ".lock"):
        cache, reason = _validate(path, key, shape)  # another process may have built it
        if cache is not None:
            return _check_policy(cache, cfg, root)
        if reason != "absent":
            logger.warning("cache %s is unusable (%s); rebuilding it", path, reason)
        logger.info("decoding %d %s images into %s (once)", len(rows), split, path)
        return _build(path, key, root, rows, cfg, logger)


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
        if file_checksum(path) != meta["checksum"]:
            return None, "checksum mismatch"
        return Cache(pixels, list(meta["kept"]), list(meta["skipped"]), path, False), ""
    except (OSError, ValueError, KeyError, TypeError) as err:
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


def _build(path: Path, key: str, root: Path, rows: list[tuple[str, float]], cfg: DataConfig,
           logger: logging.Logger) -> Cache:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
    shape = (len(rows), cfg.image_size, cfg.image_size, 3)
    kept, skipped = [], []
    try:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        jobs = [(root / "images" / name, cfg.image_size) for name, _ in rows]
        # PIL decodes without the GIL, so threads use every core; errors come
        # back as values and are judged here in the main thread.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, result in enumerate(pool.map(_decode_or_error, jobs, chunksize=16)):
                if isinstance(result, np.ndarray):
                    pixels[i] = result
                    kept.append(i)
                    continue
                missing = isinstance(result, FileNotFoundError)
                if cfg.on_bad_image == "fatal":
                    raise ImageError(bad_image(jobs[i][0], None if missing else result))
                skipped.append(rows[i][0])
        pixels.flush()
        del pixels
        meta = {"version": CACHE_VERSION, "key": key, "shape": list(shape), "kept": kept,
                "skipped": skipped, "file_size": tmp.stat().st_size, "checksum": file_checksum(tmp)}
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(json.dumps(meta))
        path.with_suffix(".json").unlink(missing_ok=True)  # no stale marker while swapping
        os.replace(tmp, path)
        os.replace(meta_tmp, path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".json").unlink(missing_ok=True)
    return Cache(np.load(path, mmap_mode="r"), kept, skipped, path, True)
