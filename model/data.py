"""BAID's images as the batches the trainer sees (the folder's CSV index and the
check made up front are model/dataset_index.py's, which needs no torch).

Transforms are the paper's: resize to image_size x image_size (bilinear, PIL,
aspect not kept, no crop), random horizontal flip for train only, ImageNet
normalisation. Decoding a full-size BAID JPEG costs far more than a training
step at small sizes, so the first pass writes the resized uint8 images into a
cache file (model/cache.py) and later epochs only read and flip. Flip and
normalisation are tensor ops on whole batches (normalise_batch, flip_batch), so
the trainer can run them on the device.

Bad input is found here, in the main process, while building the index or the
cache, never deep inside a DataLoader worker.
"""

from __future__ import annotations

import functools
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from model.cache import Cache, invalidate, open_cache
from model.config import DataConfig
from model.dataset_index import csv_path, ensure_dataset, split_rows
from model.errors import DataError, ImageError
from model.images import bad_image, check_image, decode_resized

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
log = logging.getLogger(__name__)


# ---- a split, ready to serve batches -------------------------------------
@dataclass
class ImageSplit:
    """One split: names and scores of the usable images, and their pixels.

    ``pixels`` is an (N, H, W, 3) uint8 array (the memory-mapped cache) or None,
    in which case batches are decoded from disk on every access (cache = false).
    ``rows`` maps position i to the row in ``pixels``. With a cache, the first
    read of each row is checked against its CRC; a damaged row makes ``reopen``
    rebuild the cache (model/cache.py), and the batch is read again from it.
    """

    split: str
    root: Path
    image_size: int
    names: list[str]
    scores: np.ndarray
    skipped: list[str]
    pixels: np.ndarray | None = None
    rows: np.ndarray | None = None
    cache: Cache | None = None
    reopen: Callable[[], Cache] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def images(self, indices: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 images at positions ``indices``."""
        if self.pixels is not None:
            rows = self.rows[indices]
            order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memmap
            for _ in range(2):
                out = np.empty((len(rows),) + self.pixels.shape[1:], np.uint8)
                out[order] = self.pixels[rows[order]]
                bad = self.cache.bad_rows(rows, out) if self.cache is not None else []
                if not bad:
                    return out
                self._rebuild(bad)
            raise DataError(f"{self.cache.path}: rows {bad[:5]} fail their checksum after a rebuild")
        out = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
        for j, i in enumerate(indices):
            path = self.root / "images" / self.names[i]
            try:
                out[j] = decode_resized(path, self.image_size)
            except OSError as err:  # only without the cache, and only what verify() missed
                raise ImageError(bad_image(path, err)) from None
        return out

    def _rebuild(self, bad: list[int]) -> None:
        log.warning("cache %s: %d row(s) fail their checksum (first: row %d); rebuilding it",
                    self.cache.path, len(bad), bad[0])
        invalidate(self.cache)
        cache = self.reopen()
        if not np.array_equal(np.asarray(cache.kept), self.rows):
            raise DataError(f"{cache.path}: the rebuilt cache holds other images "
                            f"(files changed on disk?); start again")
        self.cache, self.pixels = cache, cache.pixels


def open_split(cfg: DataConfig, split: str, logger: logging.Logger | None = None) -> ImageSplit:
    """Index ``split`` and, with ``cfg.cache``, build or open its decode-once cache."""
    logger = logger or log
    root = ensure_dataset(cfg)
    rows = split_rows(cfg, split)
    if not rows:
        raise DataError(f"{csv_path(root, split)}: no images in split {split!r}")
    cache = reopen = None
    if cfg.cache:
        reopen = functools.partial(open_cache, root, rows, split, cfg, logger)
        cache = reopen()
        kept, pixels = cache.kept, cache.pixels
        skipped = cache.skipped
    else:
        kept, skipped = [], []
        for i, (name, _) in enumerate(rows):
            path = root / "images" / name
            err = check_image(path)
            if err is None:
                kept.append(i)
            elif cfg.on_bad_image == "fatal":
                raise ImageError(err)
            else:
                skipped.append(name)
        pixels = None
    if skipped:
        logger.warning("%s split: skipped %d of %d images that are missing or unreadable (first: %s)",
                       split, len(skipped), len(rows), skipped[0])
    if not kept:
        raise DataError(f"{csv_path(root, split)}: none of the {len(rows)} images is readable")
    kept = np.asarray(kept, dtype=np.int64)
    return ImageSplit(split, root, cfg.image_size, [rows[i][0] for i in kept],
                      np.asarray([rows[i][1] for i in kept], np.float32), skipped,
                      pixels, kept if pixels is not None else None, cache, reopen)


# ---- batches -------------------------------------------------------------
def batch_indices(n: int, batch_size: int, generator: torch.Generator | None) -> list[np.ndarray]:
    """Positions per batch: shuffled with ``generator`` (train) or in order (eval). Keeps the last partial batch."""
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


class _Batches(torch.utils.data.Dataset):
    """Batch j of a precomputed list, so DataLoader workers read whole batches."""

    def __init__(self, data: ImageSplit, batches: list[np.ndarray], with_positions: bool = False):
        self.data, self.batches, self.with_positions = data, batches, with_positions

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, ...]:
        idx = self.batches[j]
        batch = torch.from_numpy(self.data.images(idx)), torch.from_numpy(self.data.scores[idx])
        return (torch.from_numpy(idx),) + batch if self.with_positions else batch


def iterate_batches(data: ImageSplit, batch_size: int, generator: torch.Generator | None = None,
                    num_workers: int = 0, pin_memory: bool = False, with_positions: bool = False
                    ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (uint8 images (B, H, W, 3), scores (B,)) batches; (positions, images, scores) if asked.

    The order is drawn here in the calling process from ``generator``, so it is
    part of the trainer's saved state whatever ``num_workers`` is.
    """
    batches = _Batches(data, batch_indices(len(data), batch_size, generator), with_positions)
    if num_workers == 0 and not pin_memory:
        yield from (batches[j] for j in range(len(batches)))
        return
    yield from torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False,
                                           num_workers=num_workers, pin_memory=pin_memory,
                                           persistent_workers=False,
                                           worker_init_fn=ignore_stop_signals,
                                           # Its own generator: the loader's base seed would
                                           # otherwise be drawn from torch's global RNG, which
                                           # dropout uses -- training would depend on num_workers.
                                           generator=torch.Generator().manual_seed(0))


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """Loader worker processes ignore SIGINT/SIGTERM/SIGUSR1/SIGUSR2: a stop sent to the process
    group (Ctrl-C, ``timeout``, systemd, SLURM) is the main process's to decide.
    Left to the default, a signalled loader worker dies and the training loop
    raises, which would look like the trial failing. (A loader worker still exits
    when its main process is gone: DataLoader watches its parent.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a launcher's hard stop (hpo/service/stops.py)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # and its parent-death signal


@functools.lru_cache(maxsize=8)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: a fresh torch.tensor(..., device="cuda") every batch is a blocking copy
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def normalise_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> ImageNet-normalised float (B, 3, H, W), on images' device.

    The result is a permuted view of NHWC memory, i.e. already channels_last.
    """
    mean, std = _imagenet_stats(images.device)
    x = images.permute(0, 3, 1, 2).float().div_(255)
    return x.sub_(mean).div_(std)


def flip_batch(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip sample i horizontally where ``flip[i]`` (a bool (B,) tensor on x's device)."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
