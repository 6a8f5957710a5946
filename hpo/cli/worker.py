"""``saan-hpo worker STUDY.toml [--storage URL] [--device DEVICE]``: attach one worker.

A worker never creates a study: the study must have been created by
``saan-hpo launch`` with the same spec, else it is refused (exit 2) and
nothing is stored.
"""

from __future__ import annotations

import argparse
import os

from hpo.cli.options import (add_data_option, add_device_option, add_replay, add_study_file,
                             replay_curves, study_spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_file(parser)
    add_device_option(parser, "this worker")
    add_data_option(parser)
    add_replay(parser)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.cli.session import next_commands, run_worker
    from hpo.service.study import attach

    spec = study_spec(args)  # storage and artifacts resolved
    curves = replay_curves(args, spec)
    attach(spec, spec.storage)
    code = run_worker(args, spec, curves, log_name=f"worker-{os.getpid()}.log")
    if code == 0:
        print(next_commands(args, spec))
    return code
