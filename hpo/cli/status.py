"""``saan-hpo status --study NAME --storage URL`` (or ``status STUDY.toml``)."""

from __future__ import annotations

import argparse

from model.errors import SaanError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", nargs="?", metavar="STUDY.toml",
                        help="study file (or give --study and --storage)")
    parser.add_argument("--study", metavar="NAME")
    parser.add_argument("--storage", metavar="URL")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.results import stored_spec
    from hpo.scheduling.spec import load_spec
    from hpo.readers.status import render_status

    if args.study_file:
        spec = load_spec(args.study_file)
        name, storage = spec.name, args.storage or spec.storage
    elif args.study and args.storage:
        name, storage = args.study, args.storage
    else:
        raise SaanError("status: expected STUDY.toml, or --study NAME and --storage URL")
    print(render_status(stored_spec(name, storage), storage))
    return 0
