"""``saan-hpo curves --study NAME --storage URL -o FILE.csv``: the study's learning
curves, in the format ``simulate --curves`` replays."""

from __future__ import annotations

import argparse

from hpo.cli.options import add_study_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_name(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE.csv")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.curves import write_curves
    from hpo.readers.results import stored_spec

    stored_spec(args.study, args.storage)  # a clear error for an unknown study
    rows = write_curves(args.study, args.storage, args.output)
    print(f"wrote {args.output}: {rows} rows")
    return 0
