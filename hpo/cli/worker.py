"""``saan-hpo worker STUDY.toml --storage URL [--device cuda:K]``: attach one worker."""

from __future__ import annotations

import argparse

from hpo.cli.options import add_data_option, add_replay, add_study_file, replay_curves, study_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_file(parser)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:K (default: the trainer config's, auto)")
    add_data_option(parser)
    add_replay(parser)


def run(args: argparse.Namespace) -> int:
    from hpo.service.stops import StopRequests, die_with_parent, parent_gone

    # First thing: from here a signal only sets a flag (the Worker decides at a
    # safe point), and a worker whose launcher dies stops like on SIGTERM.
    stops = StopRequests()
    restore = stops.install()
    die_with_parent()
    if parent_gone():
        stops.request()
    try:
        return _run(args, stops)
    finally:
        restore()


def _run(args: argparse.Namespace, stops) -> int:
    # Imported here, not at the top: the parser imports every command (start-up time).
    from hpo.service.study import open_or_create
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    spec = study_spec(args)
    curves = replay_curves(args, spec)
    open_or_create(spec, spec.storage)
    device = args.device or spec.run.trainer.device
    make_run = run_factory(spec, device=device, curves=curves,
                           epoch_seconds=args.replay_epoch_seconds)
    return Worker.attach(spec, spec.storage, make_run, device=device, stops=stops).run()
