"""``saan-hpo worker STUDY.toml [--storage URL] [--device DEVICE]``: attach one worker.

A worker never creates a study: the study must have been created by
``saan-hpo launch`` with the same spec, else it is refused (exit 2) and
nothing is stored.

Without a study file, ``saan-hpo worker --storage URL [--study NAME ...]`` serves
every unfinished study in the storage (or the named ones), with this machine's
paths from its options or environment (hpo/service/machine.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from hpo.cli.options import (STORAGE_ENV, add_data_option, add_replay, add_study_file,
                             replay_curves, storage_option, study_spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_file(parser, optional=True)
    parser.add_argument("--device", metavar="DEVICE", default=None,
                        help="cpu, cuda or cuda:K (default: the trainer config's, auto; "
                             "without a study file $SAAN_HPO_DEVICE, else auto)")
    add_data_option(parser)
    add_fleet_options(parser)
    add_replay(parser)


def add_fleet_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "serving a storage (no study file): this machine's paths, never the stored ones")
    group.add_argument("--study", action="append", metavar="NAME", dest="studies",
                       help="serve only this study (repeatable; default: every unfinished one)")
    group.add_argument("--data-root", metavar="DIR",
                       help="BAID folder on this machine (default $SAAN_HPO_DATA_ROOT)")
    group.add_argument("--cache-dir", metavar="DIR",
                       help="decoded-image cache (default $SAAN_HPO_CACHE_DIR, else DATA_ROOT/.saan-cache)")
    group.add_argument("--weights-dir", metavar="DIR",
                       help="ImageNet weight files (default $SAAN_HPO_WEIGHTS_DIR, else $TORCH_HOME)")
    group.add_argument("--stint-epochs", type=int, default=None, metavar="N",
                       help="give a trial of a study without rungs back after N epochs, so long "
                            "trials share the pool (default 11; 0: train each to its end)")


def run(args: argparse.Namespace) -> int:
    from hpo.cli.logs import redirect_output
    from hpo.service.stops import StopRequests, die_with_parent, parent_gone

    # First thing: a worker started by launch writes everything to its worker-PID.log
    # (hpo/cli/logs.py); from here a signal only sets a flag (the Worker decides at a
    # safe point), and a worker whose launcher dies stops as on a first signal.
    args.redirected = redirect_output() is not None
    stops = StopRequests()
    restore = stops.install()
    die_with_parent(stops)
    if parent_gone():
        stops.request_parent_gone()
    try:
        if args.study_file is None:
            return run_fleet(args, stops)
        return _run(args, stops)
    finally:
        restore()


def _run(args: argparse.Namespace, stops) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from model.errors import SaanError
    from hpo.cli.logs import worker_log_path
    from hpo.cli.session import log_dir, next_commands, run_worker
    from hpo.service import db
    from hpo.service.preflight import check_before_creating, check_data
    from hpo.service.study import attach

    for flag, value in (("--study", args.studies), ("--data-root", args.data_root),
                        ("--cache-dir", args.cache_dir), ("--weights-dir", args.weights_dir),
                        ("--stint-epochs", args.stint_epochs)):
        if value is not None:
            raise SaanError(f"worker: {flag}: only without a study file (the file says it)")
    spec = study_spec(args)  # storage and artifacts resolved
    curves = replay_curves(args, spec)
    check_before_creating(spec, spec.storage, trains_here=False)
    if curves is None:
        check_data(spec, generate=False)  # bad data on disk is named before a missing study
    with db.naming(spec.storage):
        attach(spec, spec.storage)  # a worker never creates a study
    if curves is None:
        check_data(spec)  # only now: a refused worker generates no synthetic data either
    with db.naming(spec.storage):
        # A child of launch already writes everything to its worker-PID.log.
        log_path = None if args.redirected else worker_log_path(log_dir(spec), os.getpid())
        code = run_worker(args, spec, curves, log_path=log_path, stops=stops)
    if code == 0:
        print(next_commands(args, spec))
    return code


def run_fleet(args: argparse.Namespace, stops) -> int:
    """No study file: serve the storage's studies."""
    from model.errors import SaanError
    from hpo.service.fleet_worker import DEFAULT_STINT_EPOCHS, FleetWorker
    from hpo.service.machine import MachinePaths
    from hpo.service.trial_runs import run_factory

    storage = storage_option(args) or os.environ.get(STORAGE_ENV)
    if not storage:
        raise SaanError("worker: expected STUDY.toml, or --storage URL (or $SAAN_HPO_STORAGE) "
                        "to serve the studies stored there")
    if args.data != "study" or args.epochs is not None:
        raise SaanError("worker: --data/--epochs: only with a study file (launch creates the "
                        "synthetic study; workers then serve it by name)")
    stint = DEFAULT_STINT_EPOCHS if args.stint_epochs is None else args.stint_epochs
    if stint < 0:
        raise SaanError(f"worker: --stint-epochs: expected an integer >= 0, got {stint}")
    machine = MachinePaths.from_options({
        "data_root": args.data_root, "cache_dir": args.cache_dir, "weights_dir": args.weights_dir,
        "artifacts": args.artifacts, "device": args.device})
    replay = args.replay_curves
    if replay:  # a replaying worker trains nothing, so needs no data root
        machine = dataclasses.replace(machine, trains=False)
    _open_existing(storage)

    def make_factory(spec):
        curves = None
        if replay:
            from hpo.service.surrogate_curves import load_replay

            curves = load_replay(replay, spec)
        return run_factory(spec, device=spec.run.trainer.device, curves=curves,
                           epoch_seconds=args.replay_epoch_seconds,
                           gang_efficiency=args.replay_gang_efficiency)

    return FleetWorker(storage, machine, make_factory, names=args.studies,
                       stint_epochs=stint or None, stops=stops).run()


def _open_existing(storage: str) -> None:
    """A typo in the URL is one clear error, and creates no empty database."""
    from hpo.service import db

    with db.reading(storage):
        pass
