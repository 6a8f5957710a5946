"""``saan-hpo status (STUDY.toml | --study NAME) [--storage URL]``: where a study stands."""

from __future__ import annotations

import argparse

from hpo.cli.options import add_study_ref, study_ref


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_ref(parser)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.results import stored_spec
    from hpo.readers.status import render_status

    name, storage = study_ref(args)
    print(render_status(stored_spec(name, storage), storage))
    return 0
