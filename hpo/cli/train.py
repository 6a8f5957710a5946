"""``saan-hpo train CONFIG.toml [--out DIR] [--resume]``: train one run config.

Trains ``trainer.epochs`` epochs, writing ``last.pt`` (atomically and durably) and
``history.json`` into the output folder after every epoch (while the next one trains), so an interrupted
run continues with ``--resume``. A folder that already holds a checkpoint is
never overwritten without ``--resume``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.config import RunConfig, dump_toml
from model.errors import CheckpointError
from hpo.cli.options import add_device_option

CHECKPOINT = "last.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="FILE", help="run config (TOML with [data], [model], [trainer])")
    parser.add_argument("--out", metavar="DIR", help="output folder (default runs/<config stem>)")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    add_device_option(parser, "training")


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointWriter, write_durable
    from model.dataset_index import check_dataset
    from model.train import Trainer  # torch: only for the commands that train

    cfg = RunConfig.load(args.config)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    checkpoint = out / CHECKPOINT
    check_dataset(cfg.data)  # bad data is found before anything is written
    if args.resume:
        trainer = Trainer.from_checkpoint(checkpoint, device=args.device, log=print, config=cfg)
    else:
        if checkpoint.exists():
            raise CheckpointError(f"{checkpoint}: a checkpoint exists already; "
                                  f"pass --resume or choose another --out")
        trainer = Trainer(cfg, device=args.device, log=print)
    config_text = dump_toml(cfg.to_mapping(), header=f"saan-hpo train {args.config}")

    def write(snapshot: dict, history: list[dict], first: bool) -> None:
        # The folder appears with the first checkpoint: a run that fails in its
        # first epoch (an image that does not decode) leaves no half-made folder.
        write_durable(snapshot, checkpoint)
        if first:
            (out / "config.toml").write_text(config_text)
        (out / "history.json").write_text(json.dumps(history, indent=1))

    # Each epoch's files are written while the next epoch trains (model/checkpoint.py);
    # the next epoch end, and the end of the run, wait for them.
    writer, pending = CheckpointWriter(), []

    def save(epoch: int, metrics: dict) -> None:
        snapshot = trainer.snapshot()
        for done in pending:
            done.result()  # the previous epoch's files are on disk (its error is raised here)
        pending[:] = [writer.submit(write, snapshot, [dict(m) for m in trainer.history],
                                    not args.resume and epoch == 1)]

    if trainer.epoch >= cfg.trainer.epochs:
        print(f"{checkpoint}: already at epoch {trainer.epoch} of {cfg.trainer.epochs}")
    try:
        trainer.fit(cfg.trainer.epochs, on_epoch_end=save)
    finally:
        writer.close(wait=True)  # also when an epoch raised: the last trained epoch is kept
    for done in pending:
        done.result()
    if trainer.history:
        last = trainer.history[-1]
        print(f"epoch {trainer.epoch}: val srcc {last['srcc']:.4f} plcc {last['plcc']:.4f} "
              f"accuracy {last['accuracy']:.4f} (constant {last['constant_accuracy']:.4f}); "
              f"checkpoint {checkpoint}")
    return 0
