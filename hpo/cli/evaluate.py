"""``saan-hpo evaluate CHECKPOINT --split test|val|train [--json]``: score a checkpoint."""

from __future__ import annotations

import argparse
import json

from hpo.cli.options import add_device_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="FILE", help="a checkpoint written by train or a study worker")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test",
                        help="which split to score (default test)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_device_option(parser, "scoring")


def run(args: argparse.Namespace) -> int:
    from model import checkpoint_file

    # A missing or damaged file is refused in a fraction of a second, before torch is imported.
    checkpoint_file.read(args.checkpoint)
    from model.train import Trainer  # torch: only for the commands that train

    trainer = Trainer.from_checkpoint(args.checkpoint, device=args.device)
    metrics = trainer.evaluate(args.split)
    metrics = {"checkpoint": str(args.checkpoint), "split": args.split, "epoch": trainer.epoch,
               "n": len(trainer.split(args.split)), **metrics}
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.checkpoint} (epoch {trainer.epoch}), {args.split} split, {metrics['n']} images:")
        for key in ("srcc", "plcc", "accuracy", "constant_accuracy", "mse"):
            print(f"  {key:<18} {metrics[key]:.4f}")
    return 0
