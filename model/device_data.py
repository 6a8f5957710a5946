"""A split's pixels held on the training device, batches gathered there.

Why: once the cache is warm, an epoch's input path is a memory-mapped read,
a host-side gather, a pinned copy and a host-to-device transfer per batch
(~18% of a step on an H200 against the bare step). BAID's train split at
224 px is about 7.6 GB of uint8, which fits a modern GPU several times over:
held there as one tensor, a batch is one index_select on the device, with no
loader processes and no per-batch host copy.

Whether a split goes on the device is a pure function (device_resident) of
the mode (data.device_cache), the device type, the split's size and the
memory free on the device (CUDA: cudaMemGetInfo; CPU: the host's
MemAvailable, so the path can be exercised and tested without a GPU). The
trainer logs which path it took.

Same order, same draws: the permutation comes from the same generator call as
model/data.py's batch_indices (torch.randperm(n, generator)), so a run gives
the same batches and losses on either path and resumes exactly.

Loading reads the whole cache through ImageSplit.images, so every row's CRC is
checked on the way (a damaged cache is rebuilt, never used). Tensors stay
loaded for the life of the process (keep_resident), keyed by the cache file and
its build: a worker that rebuilds a Trainer for every resumed trial of a study
loads each split once, not once per resume.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, TypeVar

import numpy as np
import torch

from model.data import ImageSplit

LOAD_CHUNK_BYTES = 256 << 20
RESIDENT_LIMIT = 6   # train, val, test pixels and their style tables of one configuration
T = TypeVar("T")
_RESIDENT: "collections.OrderedDict[Hashable, object]" = collections.OrderedDict()


def device_resident(mode: str, device_type: str, nbytes: int, free_bytes: int, fraction: float) -> bool:
    """Hold a split of ``nbytes`` on the device? ``mode`` is data.device_cache (auto | on | off)."""
    if mode == "off" or (mode == "auto" and device_type != "cuda"):
        return False
    return nbytes <= fraction * free_bytes


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA's free memory, or the host's available memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def keep_resident(key: Hashable, make: Callable[[], T]) -> T:
    """``make()``'s result, kept for this process under ``key`` (the last RESIDENT_LIMIT keys)."""
    if key in _RESIDENT:
        _RESIDENT.move_to_end(key)
        return _RESIDENT[key]
    value = make()
    _RESIDENT[key] = value
    while len(_RESIDENT) > RESIDENT_LIMIT:
        _RESIDENT.popitem(last=False)
    return value


def release_resident() -> None:
    """Drop every tensor kept for this process (tests; a worker switching studies)."""
    _RESIDENT.clear()


@dataclass
class DeviceSplit:
    """A split's uint8 images (N, H, W, 3) and scores (N,) as tensors on one device."""

    images: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def batches(self, batch_size: int, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(positions, uint8 images, scores) on the device; shuffled with ``generator`` or in order.

        The permutation is drawn exactly as model/data.py's batch_indices draws it.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.images.device, non_blocking=True)
        for start in range(0, n, batch_size):
            positions = order[start:start + batch_size]
            yield positions, self.images.index_select(0, positions), self.scores.index_select(0, positions)


def split_nbytes(split: ImageSplit) -> int:
    return len(split) * split.image_size * split.image_size * 3


def load_to_device(split: ImageSplit, device: torch.device) -> DeviceSplit:
    """Copy the split's cached pixels (CRC-checked on the way) into one tensor on ``device``."""
    shape = (len(split), split.image_size, split.image_size, 3)
    images = torch.empty(shape, dtype=torch.uint8, device=device)
    per_image = max(1, int(np.prod(shape[1:])))
    chunk = max(1, LOAD_CHUNK_BYTES // per_image)
    for start in range(0, len(split), chunk):
        positions = np.arange(start, min(start + chunk, len(split)))
        host = torch.from_numpy(split.images(positions))
        if device.type == "cuda":
            host = host.pin_memory()
        images[start:start + len(positions)].copy_(host, non_blocking=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the pinned chunks are freed after this
    scores = torch.from_numpy(np.ascontiguousarray(split.scores)).to(device)
    return DeviceSplit(images, scores)


def resident_split(split: ImageSplit, device: torch.device) -> DeviceSplit:
    """load_to_device, once per process for a given cache file, build and device."""
    key = ("pixels", str(split.cache.path), split.cache.build_id, str(device))
    return keep_resident(key, lambda: load_to_device(split, device))
