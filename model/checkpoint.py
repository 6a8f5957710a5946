"""Checkpoints off the critical path: a fast host snapshot now, the slow write in the background.

At an epoch boundary the trainer's state (trained weights, optimizer moments,
running statistics, RNG states, epoch; never the frozen VGG / generic weights,
which are rebuilt from the config) must be saved before the epoch's value is
recorded. Serialising and writing it (~225 MB for full SAAN, most of it Adam's
two moments) takes far longer than copying it: so

1. snapshot_to_host(state) copies every tensor to the host *now* (CUDA tensors
   by non-blocking copies into pinned memory and one synchronize), after which
   training may go on and change the live tensors;
2. CheckpointWriter writes snapshots on one background thread, in order, each
   to a temporary file that is flushed, fsynced and renamed into place (and
   the directory fsynced): when its Future resolves, the checkpoint is durable;
3. the caller records the value only after ``future.result()`` returns.

Typical use (what hpo's worker can do per epoch):

    writer = CheckpointWriter()
    future = writer.submit(store_bytes, trainer.snapshot())   # returns at once
    ...                                                        # the next epoch trains meanwhile
    artifact = future.result()                                 # durable from here on: record the value
"""

from __future__ import annotations

import io
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from model import checkpoint_file
from model.ordered_writer import OrderedWriter


def snapshot_to_host(state: Any) -> Any:
    """A copy of a nested state (dicts, lists, tuples, tensors, plain values) with every tensor on the host.

    The copy is complete when this returns: later changes to the live tensors do not reach it.
    """
    pending = []

    def copy(value):
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.device.type == "cuda":
                host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                host.copy_(value, non_blocking=True)
                pending.append(value.device)
                return host
            return value.clone()
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        if isinstance(value, tuple):
            return tuple(copy(v) for v in value)
        return value

    result = copy(state)
    for device in set(pending):
        torch.cuda.synchronize(device)  # one wait for all the copies on that device
    return result


def checkpoint_bytes(state: dict) -> bytes:
    """torch.save of ``state``, as bytes (what an artifact store keeps)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def write_durable(data: bytes | dict, path: str | Path) -> Path:
    """Write ``data`` (bytes, or a state dict to torch.save) to ``path`` atomically and durably.

    The file carries its checksum header and is written to a temporary file in
    the same folder, fsynced, renamed over ``path`` and the folder fsynced
    (model/checkpoint_file.py): a crash leaves the old file or the new one, never half of one.
    """
    payload = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else checkpoint_bytes(data)
    return checkpoint_file.write(path, payload)


class CheckpointWriter(OrderedWriter):
    """Checkpoint writes on one background thread, in submission order (model/ordered_writer.py).

    ``submit(fn, snapshot)`` runs e.g. an artifact store's save of
    ``checkpoint_bytes(snapshot)``; ``save`` is write_durable: its Future
    resolves once the checkpoint is on disk.
    """

    def __init__(self):
        super().__init__("saan-checkpoint")

    def save(self, snapshot: dict, path: str | Path) -> "Future[Path]":
        """write_durable(snapshot, path) in the background."""
        return self.submit(write_durable, snapshot, path)


# For type hints of callers that keep snapshots around.
HostSnapshot = dict
