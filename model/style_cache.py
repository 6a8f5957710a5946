"""Style statistics computed once: AdaIN's VGG mean and std per image and flip, beside the pixel cache.

Why: the style branch's VGG-19 is frozen and runs in inference mode, and only
its per-channel mean and std reach the network (docs/saan.md, "What the style
branch takes from the VGG"). They depend only on an image's pixels and on
whether it is flipped, yet the VGG forward is a quarter of a training step at
224 px (7.2 of 29.0 ms on an H200). So they are computed once per split:

- train: both orientations (the trainer flips each sample at random; no other
  augmentation exists: no crop, no colour jitter, so the two orientations are
  every input the model can see); val and test: as is (never flipped);
- in fp32, on the training device, with the model's own VGG
  (StyleSpecificBranch.style_stats), on exactly the pixels the trainer feeds
  (the cache's uint8 rows, normalised, flipped, in the model's memory format).
  The cached path therefore matches the uncached one to fp32 rounding (batch
  composition may change a convolution's summation order); under bf16 autocast
  it is at least as accurate as the bf16 VGG it replaces.

Stored as ``<pixel cache name>.style-<key>.npy``: float32 (N, F, 2, C) for the
split's N usable images, F orientations (0 as is, 1 flipped), mean and std, C
channels. The key hashes the pixel cache's key, the VGG's weights (so another
seed or pretrained file gets another file), F and the version; the metadata
also records the pixel cache's build id, so a rebuilt pixel cache makes its
statistics stale and they are recomputed. Storage, damage checks and the
build-once lock are model/rowfile.py's; every row's CRC is checked when the
table is loaded (it is read whole), and a damaged file is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch

from model import rowfile
from model.data import ImageSplit, normalise_batch
from model.errors import DataError
from model.saan import StyleSpecificBranch

STYLE_VERSION = 1
BUILD_BATCH = {"cuda": 128, "cpu": 32}


class StyleTable:
    """A split's style statistics as one tensor on the training device: (N, F, 2, C) float32."""

    def __init__(self, values: torch.Tensor, path=None, built: bool = False):
        self.values, self.path, self.built = values, path, built

    @property
    def flips(self) -> int:
        return self.values.shape[1]

    def gather(self, positions: torch.Tensor, flip: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (B, C, 1, 1), of the images at ``positions`` (flipped where ``flip``)."""
        rows = self.values.index_select(0, positions)                  # B, F, 2, C
        if flip is None:
            picked = rows[:, 0]
        else:
            picked = rows[torch.arange(len(rows), device=rows.device), flip.long()]
        return picked[:, 0, :, None, None], picked[:, 1, :, None, None]


def encoder_fingerprint(branch: StyleSpecificBranch) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(branch.vgg.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def open_style_table(split: ImageSplit, branch: StyleSpecificBranch, flips: bool,
                     device: torch.device, memory_format: torch.memory_format,
                     logger: logging.Logger, fingerprint: str | None = None) -> StyleTable:
    """The split's statistics, loaded onto ``device``; computed first when missing, stale or damaged.

    ``fingerprint``: encoder_fingerprint(branch), when the caller has it already.
    """
    if split.cache is None:
        raise DataError(f"{split.split} split: style statistics need the pixel cache (data.cache = true)")
    n_flips = 2 if flips else 1
    channels = branch.out_channels
    key = hashlib.sha256(json.dumps([STYLE_VERSION, split.cache.key,
                                     fingerprint or encoder_fingerprint(branch),
                                     n_flips]).encode()).hexdigest()
    for attempt in range(2):
        cache = split.cache
        path = cache.path.with_name(f"{cache.path.stem}.style-{key[:16]}.npy")
        found = rowfile.open_or_build(
            path, key, STYLE_VERSION, (len(split), n_flips, 2, channels), "float32",
            lambda out: _compute_into(out, split, branch, n_flips, device, memory_format),
            logger, f"computing style statistics of {len(split)} {split.split} images",
            expect={"pixels_build_id": cache.build_id})
        values = np.array(found.array)  # read whole: the table lives on the device
        bad = found.bad_rows(np.arange(len(values)), values)
        if not bad:
            return StyleTable(torch.from_numpy(values).to(device), path, found.built)
        logger.warning("cache %s: %d row(s) fail their checksum (first: row %d); rebuilding it",
                       path, len(bad), bad[0])
        rowfile.invalidate(found)
    raise DataError(f"{path}: rows {bad[:5]} fail their checksum after a rebuild")


@torch.inference_mode()
def _compute_into(out: np.ndarray, split: ImageSplit, branch: StyleSpecificBranch, n_flips: int,
                  device: torch.device, memory_format: torch.memory_format) -> dict:
    batch = BUILD_BATCH.get(device.type, 32)
    crc = np.zeros(len(out), np.uint32)
    for start in range(0, len(split), batch):
        positions = np.arange(start, min(start + batch, len(split)))
        # split.images checks each pixel row's CRC (and rebuilds a damaged pixel cache)
        x = normalise_batch(torch.from_numpy(split.images(positions)).to(device))
        for f in range(n_flips):
            view = (x.flip(-1) if f else x).contiguous(memory_format=memory_format)
            mean, std = branch.style_stats(view)
            out[positions, f, 0] = mean.flatten(1).float().cpu().numpy()
            out[positions, f, 1] = std.flatten(1).float().cpu().numpy()
        for i in positions:
            crc[i] = rowfile.row_crc(out[i])
    return {"row_crc": crc.tolist(), "split": split.split}
