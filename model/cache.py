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

Safe for several processes and never silently used when damaged: the file,
its commit marker, the open-time checks and the per-row CRC32s are
model/rowfile.py's. The first read of a row in a process checks its CRC (zlib's
crc32 runs at ~4 GB/s, and the row is being read anyway); a mismatch there
drops the cache's marker, rebuilds it and serves the rebuilt rows (see
ImageSplit.images).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import rowfile
from model.config import DataConfig
from model.errors import ImageError
from model.images import bad_image, decode_or_error
from model.progress import progress_enabled
from model.rowfile import RowFile

CACHE_VERSION = 2


@dataclass
class Cache:
    """A split's pixel cache: (N, H, W, 3) uint8, one row per CSV row."""

    file: RowFile

    @property
    def pixels(self) -> np.ndarray:
        return self.file.array

    @property
    def kept(self) -> list[int]:          # rows that hold a decoded image
        return list(self.file.meta["kept"])

    @property
    def skipped(self) -> list[str]:       # names that were missing or unreadable
        return list(self.file.meta["skipped"])

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def built(self) -> bool:              # True when this call (re)built the file
        return self.file.built

    @property
    def build_id(self) -> str:
        return self.file.build_id

    @property
    def key(self) -> str:
        return self.file.meta["key"]

    def bad_rows(self, rows: np.ndarray, images: np.ndarray) -> list[int]:
        """Rows among ``rows`` (read into ``images``) whose bytes fail their CRC; checks each row once."""
        return self.file.bad_rows(rows, images)


def cache_key(root: Path, rows: list[tuple[str, float]], split: str, image_size: int) -> str:
    payload = json.dumps([CACHE_VERSION, str(root.resolve()), split, image_size, rows])
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_dir(root: Path, cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else root / ".saan-cache"


def cache_path(root: Path, rows: list[tuple[str, float]], split: str, cfg: DataConfig) -> tuple[Path, str]:
    key = cache_key(root, rows, split, cfg.image_size)
    return cache_dir(root, cfg) / f"{split}-{cfg.image_size}px-{key[:16]}.npy", key


def open_cache(root: Path, rows: list[tuple[str, float]], split: str, cfg: DataConfig,
               logger: logging.Logger) -> Cache:
    """Open the valid cache for these rows, building it (once, across processes) if needed."""
    path, key = cache_path(root, rows, split, cfg)
    shape = (len(rows), cfg.image_size, cfg.image_size, 3)
    found = rowfile.open_or_build(path, key, CACHE_VERSION, shape, "uint8",
                                  lambda pixels: _decode_into(pixels, root, rows, cfg, path),
                                  logger, f"decoding {len(rows)} {split} images")
    cache = Cache(found)
    # A cache built with on_bad_image="skip" still knows what it skipped.
    if cache.skipped and cfg.on_bad_image == "fatal":
        raise ImageError(bad_image(root / "images" / cache.skipped[0], OSError("see cache build")))
    return cache


def invalidate(cache: Cache) -> None:
    """Drop ``cache``'s commit marker, unless another process has already replaced that build."""
    rowfile.invalidate(cache.file)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _decode_into(pixels: np.ndarray, root: Path, rows: list[tuple[str, float]], cfg: DataConfig,
                 path: Path) -> dict:
    kept, skipped = [], []
    row_crc = np.full(len(rows), zlib.crc32(bytes(int(np.prod(pixels.shape[1:])))), np.uint32)  # zero rows
    jobs = [(root / "images" / name, cfg.image_size) for name, _ in rows]
    # PIL decodes and resizes without the GIL, so one thread per core uses
    # them all; errors come back as values and are judged here in the main thread.
    bar = tqdm(total=len(jobs), desc=f"caching {path.name.split('-')[0]} images", unit="img",
               leave=False, disable=not progress_enabled(), dynamic_ncols=True)
    with bar, ThreadPoolExecutor(max_workers=_cores()) as pool:
        for i, result in enumerate(pool.map(decode_or_error, jobs, chunksize=8)):
            bar.update()
            if isinstance(result, np.ndarray):
                pixels[i] = result
                row_crc[i] = rowfile.row_crc(result)
                kept.append(i)
                continue
            missing = isinstance(result, FileNotFoundError)
            if cfg.on_bad_image == "fatal":
                raise ImageError(bad_image(jobs[i][0], None if missing else result))
            skipped.append(rows[i][0])
    return {"kept": kept, "skipped": skipped, "row_crc": row_crc.tolist()}
