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
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.service.study import open_or_create
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    spec = study_spec(args)
    curves = replay_curves(args, spec)
    open_or_create(spec, spec.storage)
    device = args.device or spec.run.trainer.device
    make_run = run_factory(spec, device=device, curves=curves,
                           epoch_seconds=args.replay_epoch_seconds)
    return Worker.attach(spec, spec.storage, make_run, device=device).run()
