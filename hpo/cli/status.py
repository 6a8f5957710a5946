"""``saan-hpo status (STUDY.toml | --study NAME) [--storage URL]``: where a study stands.

``saan-hpo status --storage URL`` without a study: every study and every worker
of the storage (hpo/readers/fleet_status.py).
"""

from __future__ import annotations

import argparse

from hpo.cli.options import add_study_ref, study_ref


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_ref(parser)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.results import stored_spec
    from hpo.readers.status import render_status

    if not args.study_file and not args.study and args.storage:
        return _fleet(args.storage)
    name, storage = study_ref(args)
    print(render_status(stored_spec(name, storage), storage))
    return 0


def _fleet(storage: str) -> int:
    from hpo.readers.fleet_status import render_fleet_status

    print(render_fleet_status(storage))
    return 0
