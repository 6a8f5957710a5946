"""Checkpoint size and how long it blocks training: full state vs what changes, sync vs background.

    python bench/checkpoint.py [--backbone resnet50] [--head-hidden 2048] [--device cpu] [--repeats 3]

Builds the SAAN variant (random init), takes one optimizer step so Adam's
moments exist, then measures, each the fastest of --repeats:
- size of a checkpoint holding every tensor (frozen VGG and generic weights
  too) against the trainer's (only what changes: trained weights, optimizer
  moments, running statistics, RNG, epoch);
- a synchronous durable save (snapshot + torch.save + fsync + rename), what
  blocks the training loop today;
- snapshot() alone (host copy), what blocks it with model/checkpoint.py's
  CheckpointWriter, and the background write that follows.
Last line: blocking seconds sync vs background. A figure, never an assertion.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SAAN_HPO_NO_PROGRESS", "1")

import torch  # noqa: E402

from model.checkpoint import CheckpointWriter, checkpoint_bytes, write_durable  # noqa: E402
from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig  # noqa: E402
from model.synthetic import make_synthetic_baid  # noqa: E402
from model.train import Trainer  # noqa: E402


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet50", choices=("resnet50", "resnet18"))
    p.add_argument("--head-hidden", type=int, default=2048)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="saan-ckpt-") as tmp:
        root = make_synthetic_baid(Path(tmp) / "baid", n=20, size=24, seed=0)
        cfg = RunConfig(data=DataConfig(root=str(root), image_size=32),
                        model=ModelConfig(backbone=args.backbone, head_hidden=args.head_hidden),
                        trainer=TrainerConfig(device=args.device, batch_size=4))
        trainer = Trainer(cfg)
        x = torch.randn(2, 3, 32, 32, device=trainer.device).contiguous(memory_format=trainer.memory_format)
        trainer.model(x).float().mean().backward()
        trainer.optimizer.step()
        print(f"settings: {args.backbone} SAAN (head_hidden {args.head_hidden}), device {trainer.device}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}, folder {tmp}", flush=True)

        slim = trainer.snapshot()
        full = dict(slim, model={k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()})
        full_mb, slim_mb = len(checkpoint_bytes(full)) / 1e6, len(checkpoint_bytes(slim)) / 1e6
        print(f"size: every tensor {full_mb:.1f} MB, only what changes {slim_mb:.1f} MB "
              f"({slim_mb / full_mb:.0%})")

        folder = Path(tmp)
        full_sync = best_of(args.repeats, lambda: write_durable(
            dict(full, model={k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}),
            folder / "full.pt"))
        sync = best_of(args.repeats, lambda: trainer.save_checkpoint(folder / "sync.pt"))
        snap = best_of(args.repeats, trainer.snapshot)
        with CheckpointWriter() as writer:
            snapshot = trainer.snapshot()
            start = time.perf_counter()
            writer.save(snapshot, folder / "bg.pt").result()
            background = time.perf_counter() - start
        print(f"full checkpoint, written synchronously (durable): {full_sync:.3f} s")
        print(f"slim checkpoint, written synchronously (durable): {sync:.3f} s")
        print(f"slim checkpoint, snapshot only (blocks training): {snap:.3f} s; "
              f"then written in the background: {background:.3f} s")
        print(f"blocking per checkpoint: full sync {full_sync:.3f} s, slim sync {sync:.3f} s, "
              f"slim background {snap:.3f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
