"""``saan-hpo table (STUDY.toml | --study NAME) [--storage URL] [--format markdown|csv]``: the comparison table.

One row per trial: the grid axes, state, epochs, then test accuracy (and the
constant predictor's), PLCC, SRCC and MSE of each finished trial's checkpoint.
Scores are computed once and stored on the Optuna trial (hpo/readers/table.py); later
calls only read them. A study that reproduces a published experiment also gets
the published row and the difference (hpo/readers/published_table.py).
"""

from __future__ import annotations

import argparse
import sys

from hpo.cli.options import add_device_option, add_study_ref, study_ref


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_ref(parser)
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown",
                        help="output format (default markdown)")
    parser.add_argument("--artifacts", metavar="DIR", help="checkpoint store (default: the study's)")
    add_device_option(parser, "scoring checkpoints not scored yet")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.published import load_published_if_any
    from hpo.readers.published_table import with_published
    from hpo.readers.results import stored_spec
    from hpo.readers.table import study_table, to_csv, to_markdown

    name, storage = study_ref(args)
    published = load_published_if_any()  # a bad figures file fails before any scoring
    frame = study_table(name, storage, artifacts=args.artifacts, device=args.device)
    frame = with_published(frame, stored_spec(name, storage), published)
    sys.stdout.write(to_markdown(frame) if args.format == "markdown" else to_csv(frame))
    return 0
