"""``saan-hpo train CONFIG.toml [--out DIR] [--resume]``: train one run config.

Trains ``trainer.epochs`` epochs, writing ``last.pt`` (atomically) and
``history.json`` into the output folder after every epoch, so an interrupted
run continues with ``--resume``. A folder that already holds a checkpoint is
never overwritten without ``--resume``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.config import RunConfig, dump_toml
from model.errors import CheckpointError

CHECKPOINT = "last.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config (TOML with [data], [model], [trainer])")
    parser.add_argument("--out", help="output folder (default runs/<config stem>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: trainer.device)")


def run(args: argparse.Namespace) -> int:
    from model.train import Trainer  # torch: only for the commands that train

    cfg = RunConfig.load(args.config)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    checkpoint = out / CHECKPOINT
    if args.resume:
        trainer = Trainer.from_checkpoint(checkpoint, device=args.device, log=print, config=cfg)
    else:
        if checkpoint.exists():
            raise CheckpointError(f"{checkpoint}: a checkpoint exists already; "
                                  f"pass --resume or choose another --out")
        trainer = Trainer(cfg, device=args.device, log=print)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(dump_toml(cfg.to_mapping(), header=f"saan-hpo train {args.config}"))

    def save(epoch: int, metrics: dict) -> None:
        trainer.save_checkpoint(checkpoint)
        (out / "history.json").write_text(json.dumps(trainer.history, indent=1))

    if trainer.epoch >= cfg.trainer.epochs:
        print(f"{checkpoint}: already at epoch {trainer.epoch} of {cfg.trainer.epochs}")
    trainer.fit(cfg.trainer.epochs, on_epoch_end=save)
    if trainer.history:
        last = trainer.history[-1]
        print(f"epoch {trainer.epoch}: val srcc {last['srcc']:.4f} plcc {last['plcc']:.4f} "
              f"accuracy {last['accuracy']:.4f} (constant {last['constant_accuracy']:.4f}); "
              f"checkpoint {checkpoint}")
    return 0
