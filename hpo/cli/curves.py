"""``saan-hpo curves (STUDY.toml | --study NAME) [--storage URL] -o FILE``: the study's
learning curves as a CSV, in the format ``simulate --curves`` replays."""

from __future__ import annotations

import argparse

from hpo.cli.options import add_study_ref, study_ref


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_ref(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="CSV file to write (one column per grid axis, then epoch, value)")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.curves import write_curves
    from hpo.readers.results import stored_spec

    name, storage = study_ref(args)
    stored_spec(name, storage)  # a clear error for an unknown study
    rows = write_curves(name, storage, args.output)
    print(f"wrote {args.output}: {rows} rows")
    return 0
