"""What the trainer feeds the model: input batches on the device, and the style statistics with them.

Two paths for the pixels (model/device_data.py decides, the log says which):
the memory-mapped decode-once cache read per batch (optionally by DataLoader
workers, pinned, copied non-blocking), or the whole split held on the device
and gathered there. And two for AdaIN's style statistics: the VGG run inside
the model every step, or the table computed once (model/style_cache.py) and
gathered by the same positions and flips.

Randomness is drawn here, in one order on every path: the epoch's permutation
(torch.randperm on the trainer's generator), then per batch the flips
(torch.rand(B) < 0.5 on the same generator). That order is what the trainer's
checkpoints save, so both paths give the same batches and resume exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from model.config import DataConfig
from model.data import ImageSplit, flip_batch, iterate_batches, normalise_batch, open_split
from model.device_data import (DeviceSplit, device_resident, free_memory, keep_resident,
                               resident_split, split_nbytes)
from model.saan import SAAN
from model.style_cache import StyleTable, encoder_fingerprint, open_style_table


@dataclass
class Batch:
    x: torch.Tensor                                        # normalised float (B, 3, H, W) on the device
    scores: torch.Tensor                                   # (B,) 0-10 on the device
    style: tuple[torch.Tensor, torch.Tensor] | None        # AdaIN style (mean, std), or None: run the VGG

    def __len__(self) -> int:
        return len(self.scores)


class Feed:
    def __init__(self, cfg: DataConfig, model: SAAN, device: torch.device,
                 memory_format: torch.memory_format, log):
        self.cfg, self.model, self.device, self.memory_format, self.log = cfg, model, device, memory_format, log
        self.splits: dict[str, ImageSplit] = {}
        self.resident: dict[str, DeviceSplit | None] = {}
        self.tables: dict[str, StyleTable | None] = {}
        self.use_style_cache = cfg.style_cache and cfg.cache and model.style is not None
        if cfg.style_cache and not cfg.cache and model.style is not None:
            log.info("style statistics: the VGG runs every step (data.style_cache needs data.cache)")

    def split(self, name: str) -> ImageSplit:
        if name not in self.splits:
            self.splits[name] = open_split(self.cfg, name, self.log)
        return self.splits[name]

    def clear(self) -> None:
        """Forget opened splits (the next use opens them again, e.g. after the cache was deleted)."""
        self.splits.clear()
        self.resident.clear()
        self.tables.clear()

    # ---- which path -------------------------------------------------------------
    def device_split(self, name: str) -> DeviceSplit | None:
        """The split held on the device, or None for the memory-mapped path (decided once, logged)."""
        if name not in self.resident:
            data = self.split(name)
            need = split_nbytes(data)
            mode, fraction = self.cfg.device_cache, self.cfg.device_cache_fraction
            if data.cache is None or mode == "off" or (mode == "auto" and self.device.type != "cuda"):
                on, why = False, "data.cache is off" if data.cache is None else f"data.device_cache = {mode!r}"
            else:
                free = free_memory(self.device)
                on = device_resident(mode, self.device.type, need, free, fraction)
                why = (f"{need / 2**20:.1f} MiB {'<=' if on else '>'} {fraction:g} x "
                       f"{free / 2**20:.0f} MiB free on {self.device}")
            self.resident[name] = resident_split(data, self.device) if on else None
            self.log.info("%s split: %d images %s (%s)", name, len(data),
                          f"held on {self.device}, batches gathered there" if on
                          else "read from the memory-mapped cache per batch", why)
        return self.resident[name]

    def style_table(self, name: str) -> StyleTable | None:
        """The split's style statistics on the device (computed once), or None: the VGG runs."""
        if not self.use_style_cache:
            return None
        if name not in self.tables:
            data = self.split(name)
            flips = name == "train"
            encoder = encoder_fingerprint(self.model.style)
            key = ("style", str(data.cache.path), data.cache.build_id, encoder, flips, str(self.device))
            table = keep_resident(key, lambda: open_style_table(
                data, self.model.style, flips, self.device, self.memory_format, self.log, encoder))
            self.tables[name] = table
            self.log.info("%s split: style statistics from %s (the VGG is not run for this split)",
                          name, table.path)
        return self.tables[name]

    # ---- batches ----------------------------------------------------------------
    def batches(self, name: str, batch_size: int, generator: torch.Generator | None = None,
                num_workers: int = 0) -> Iterator[Batch]:
        """Batches of split ``name``: shuffled and randomly flipped with ``generator``, else in order."""
        resident = self.device_split(name)
        table = self.style_table(name)
        if resident is not None:
            source = resident.batches(batch_size, generator)
        else:
            source = iterate_batches(self.split(name), batch_size, generator, num_workers,
                                     pin_memory=self.device.type == "cuda", with_positions=True)
        for positions, images, scores in source:
            flip = None
            if generator is not None:
                flip = (torch.rand(len(images), generator=generator) < 0.5).to(self.device, non_blocking=True)
            x = normalise_batch(images.to(self.device, non_blocking=True))
            if flip is not None:
                x = flip_batch(x, flip)
            style = table.gather(positions.to(self.device, non_blocking=True), flip) if table else None
            yield Batch(x.contiguous(memory_format=self.memory_format),
                        scores.to(self.device, non_blocking=True), style)
