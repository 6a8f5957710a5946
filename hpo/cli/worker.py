"""``saan-hpo worker STUDY.toml [--storage URL] [--device DEVICE]``: attach one worker.

A worker never creates a study: the study must have been created by
``saan-hpo launch`` with the same spec, else it is refused (exit 2) and
nothing is stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from hpo.cli.options import (add_data_option, add_device_option, add_replay, add_study_file,
                             apply_data_option, replay_curves, resolve_spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_file(parser)
    add_device_option(parser, "this worker")
    add_data_option(parser)
    add_replay(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the parser imports every command (start-up time).
    from hpo.cli.session import next_commands, run_worker
    from hpo.service.study import attach

    spec, storage, artifacts = resolve_spec(args)
    spec, storage, artifacts = apply_data_option(args, spec, storage, artifacts)
    spec = dataclasses.replace(spec, storage=storage, artifacts=artifacts)
    curves = replay_curves(args, spec)
    attach(spec, storage)
    code = run_worker(args, spec, storage, artifacts, curves, log_name=f"worker-{os.getpid()}.log")
    if code == 0:
        print(next_commands(args, spec, storage))
    return code
