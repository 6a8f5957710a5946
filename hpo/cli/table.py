"""``saan-hpo table --study NAME --storage URL [--format markdown|csv]``: the comparison table.

One row per trial: the grid axes, state, epochs, then test accuracy (and the
constant predictor's), PLCC, SRCC and MSE of each finished trial's checkpoint.
Scores are computed once and stored on the Optuna trial (hpo/readers/table.py); later
calls only read them.
"""

from __future__ import annotations

import argparse
import sys

from hpo.cli.options import add_study_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_name(parser)
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown",
                        help="output format (default markdown)")
    parser.add_argument("--artifacts", metavar="DIR", help="checkpoint store (default: the study's)")
    parser.add_argument("--device", default=None,
                        help="device for scoring checkpoints not scored yet (default: the trainer config's)")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.table import study_table, to_csv, to_markdown

    frame = study_table(args.study, args.storage, artifacts=args.artifacts, device=args.device)
    sys.stdout.write(to_markdown(frame) if args.format == "markdown" else to_csv(frame))
    return 0
