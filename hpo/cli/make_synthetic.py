"""``saan-hpo make-synthetic DIR --n N --size S [--seed K]``: a synthetic BAID-shaped folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.errors import DataError


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="folder to create (must not exist)")
    parser.add_argument("--n", type=_positive, default=400, help="number of images (default 400)")
    parser.add_argument("--size", type=_positive, default=96, help="image side in pixels (default 96)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from model.synthetic import make_synthetic_baid  # numpy and PIL: only for this command

    root = Path(args.dir)
    if root.exists():
        raise DataError(f"{root}: already exists; make-synthetic never writes into an existing folder")
    if args.n < 3:
        raise DataError(f"--n: expected at least 3 images (one per split), got {args.n}")
    make_synthetic_baid(root, args.n, args.size, args.seed)
    print(f"{root}: {args.n} synthetic images of {args.size}x{args.size} with train/val/test CSVs")
    return 0
