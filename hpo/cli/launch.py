"""``saan-hpo launch STUDY.toml [--storage URL] [--workers N]``: create or resume a
study and run N local workers until it is finished.

The only command that creates a study. One worker runs in this process.
Several run as child processes (one per GPU when there are GPUs, round-robin),
each logging to runs/<study>/logs/. ``--workers 0`` only creates the study
(workers attach with ``saan-hpo worker``). On a terminal a live progress line
shows the whole study; at the end the winner and the commands to run next.

``launch A.toml B.toml ... --workers N`` creates or resumes every study in one
storage and runs one pool of N workers serving them all (hpo/cli/launch_many.py).

Supervision: the children run in their own session (process group), so a
signal to launch's process group -- Ctrl-C, ``timeout``, systemd, SLURM,
``docker stop`` -- reaches launch alone, and launch passes exactly ONE stop
request (SIGTERM) to each child per signal it gets: the first signal lets every
worker finish its epoch in flight, checkpoint it and release its trial, then
launch exits 0; a second one is forwarded as a hard stop (epochs abandoned,
trials released, non-zero exit). A launch that dies without forwarding
(SIGKILL) still leaves no orphan: each child gets SIGTERM from the kernel
(Linux PR_SET_PDEATHSIG) or notices its parent is gone (hpo/service/stops.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from model.errors import SaanError
from hpo.cli.options import (add_data_option, add_replay, add_study_file, data_option_argv,
                             replay_curves, study_spec)

# The service, the readers, tqdm and torch are imported inside the functions that
# use them: building the parser imports every command module (hpo/cli/__init__.py).


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_file(parser)
    parser.add_argument("more_study_files", metavar="STUDY.toml", nargs="*",
                        help="more studies for the same pool of workers, in the same storage")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="local workers (default 1, in this process; 0: only create or resume the studies)")
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="device for every worker (default: one GPU each, else CPU)")
    add_data_option(parser)
    add_replay(parser)


def run(args: argparse.Namespace) -> int:
    from hpo.service.stops import StopRequests

    stops = StopRequests()
    restore = stops.install()  # first thing: a signal from now on only sets a flag
    try:
        return _check_and_launch(args, stops)
    finally:
        restore()


def _check_and_launch(args: argparse.Namespace, stops) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.service import db
    from hpo.service.preflight import check_before_creating

    if args.workers < 0:
        raise SaanError(f"--workers: expected an integer >= 0, got {args.workers}")
    if args.more_study_files:
        from hpo.cli.launch_many import launch_many

        return launch_many(args, stops)
    spec = study_spec(args)  # storage and artifacts resolved: spec.storage, spec.artifacts
    curves = replay_curves(args, spec)  # read (and checked) before anything is stored
    check_before_creating(spec, spec.storage, trains_here=curves is None and args.workers > 0)
    with db.naming(spec.storage):
        return _launch(args, spec, curves, stops)


def _launch(args, spec, curves, stops) -> int:
    from hpo.cli.session import next_commands, print_outcome
    from hpo.service.study import open_or_create

    created = open_or_create(spec, spec.storage)
    print(f"{'created' if created else 'resuming'} study {spec.name!r}: "
          f"{len(spec.grid_points())} configurations, {spec.scheduler.kind}, "
          f"boundaries {spec.boundaries}, {spec.planned_epochs()} epochs planned", flush=True)
    started = time.monotonic()
    if stops.graceful.is_set() or args.workers == 0:
        code = 0
    elif args.workers == 1:
        code = _run_in_process(args, spec, curves, stops)
    else:
        code = _run_children(args, spec, stops)
    if stops.graceful.is_set():
        print(f"stopped by a signal (exit {code}); trials in flight were released: run the same "
              "launch command again to resume the study", flush=True)
    elif code == 0:
        if args.workers:
            print_outcome(spec, time.monotonic() - started)
        print(next_commands(args, spec))
    return code


def _run_in_process(args, spec, curves, stops) -> int:
    from hpo.cli.session import run_worker

    return run_worker(args, spec, curves, log_name="launch.log", stops=stops)


def _run_children(args, spec, stops) -> int:
    from hpo.cli import session
    from hpo.cli.progress import ProgressLine

    log_dir = session.log_dir(spec)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Children log to files and draw no bars; each CPU trial uses the trainer's
    # fixed thread count (model/train.py), whatever the number of workers.
    env = dict(os.environ, SAAN_HPO_NO_PROGRESS="1", SAAN_HPO_STORAGE=spec.storage)
    devices = session.local_devices(args.workers, args.device, spec.run.trainer.device)
    commands = []
    for device in devices:
        command = [sys.executable, "-m", "hpo.cli", "worker", args.study_file,
                   "--artifacts", spec.artifacts, "--device", device]
        command += data_option_argv(args)
        if args.replay_curves:
            command += ["--replay-curves", args.replay_curves,
                        "--replay-epoch-seconds", str(args.replay_epoch_seconds)]
        commands.append(command)
    children = session.start_children(commands, [log_dir / f"worker-{i}.log" for i in range(len(devices))],
                                      env)
    print(f"{len(children)} workers started; logs in {log_dir}/", flush=True)
    with ProgressLine(spec):
        return session.supervise(children, stops)
