"""``saan-hpo launch STUDY.toml [--storage URL] [--workers N]``: create or resume a
study and run N local workers until it is finished.

The only command that creates a study. One worker runs in this process.
Several run as child processes (one per GPU when there are GPUs, round-robin),
each writing runs/<study>/logs/worker-PID.log. ``--workers 0`` only creates the
study (workers attach with ``saan-hpo worker``). Once the checks have passed,
launch writes its own full log (and its in-process worker's) to
runs/<study>/logs/launch.log; stderr shows only warnings and errors unless
``-v`` (hpo/cli/logs.py). On a terminal a live progress line shows the whole
study; at the end the winner and the commands to run next, on stdout.

``launch A.toml B.toml ... --workers N`` creates or resumes every study in one
storage and runs one pool of N workers serving them all (hpo/cli/launch_many.py).

Supervision: the children run in their own session (process group), so a
signal to launch's process group -- Ctrl-C, ``timeout``, systemd, SLURM,
``docker stop`` -- reaches launch alone, and launch passes exactly ONE stop
request (SIGTERM) to each child per signal it gets: the first signal lets every
worker finish its epoch in flight, checkpoint it and release its trial, then
launch exits 0; a second one is forwarded as a hard stop (epochs abandoned,
trials released, non-zero exit). A launch that dies without forwarding
(SIGKILL) still leaves no orphan: each child gets a parent-death signal from
the kernel (Linux PR_SET_PDEATHSIG) or notices its parent is gone, and stops as
on a first signal (hpo/service/stops.py). A child killed by a signal launch did
not send is one line; launch's exit code is then 0 only if the others finished
the study (hpo/cli/session.py ``children_exit_code``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from model.errors import SaanError
from hpo.cli.options import (add_data_option, add_replay, add_study_file, data_option_argv,
                             replay_argv, replay_curves, study_spec)

# The service, the readers, tqdm and torch are imported inside the functions that
# use them: building the parser imports every command module (hpo/cli/__init__.py).

log = logging.getLogger(__name__)


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
    from hpo.cli import session
    from hpo.cli.logs import log_file

    with db.naming(spec.storage), log_file(session.log_dir(spec) / "launch.log",
                                           quiet_terminal=True) as path:
        return _launch(args, spec, curves, stops, path)


def _launch(args, spec, curves, stops, log_path) -> int:
    from hpo.cli.session import next_commands, print_outcome
    from hpo.service.study import open_or_create

    created = open_or_create(spec, spec.storage)
    what = (f"{'created' if created else 'resuming'} study {spec.name!r}: "
            f"{spec.n_configurations()} configurations, {spec.scheduler.kind}, "
            f"boundaries {spec.boundaries}, {spec.planned_epochs()} epochs planned")
    if spec.sampled:  # the plan of a space study, bracket by bracket, before anything trains
        what += f"; sampler {spec.policy.sampler}, brackets {spec.policy.plan_summary()}"
    log.info("%s", what)
    print(f"{what}; log {log_path}", flush=True)
    started = time.monotonic()
    if stops.graceful.is_set() or args.workers == 0:
        code = 0
    elif _finished(spec):
        # Nothing left to train or to finish: starting workers would only import torch
        # to find no work. The outcome and the next commands are printed as after a run.
        log.info("study %r is finished: no worker started", spec.name)
        print(f"study {spec.name!r} is already finished: no worker started", flush=True)
        code = 0
    elif args.workers == 1:
        code = _run_in_process(args, spec, curves, stops)
    else:
        code = _run_children(args, spec, stops, log_path)
    if stops.graceful.is_set():
        print(f"stopped by a signal (exit {code}); trials in flight were released: run the same "
              "launch command again to resume the study", flush=True)
    elif code == 0:
        if args.workers:
            print_outcome(spec, time.monotonic() - started)
        print(next_commands(args, spec))
    return code


def _finished(spec) -> bool:
    """Every trial in a final state and finalized (told to Optuna, checkpoints cleaned up)."""
    from hpo.service import db
    from hpo.service.coordination import Coordinator

    coordinator = Coordinator(db.create_service_engine(spec.storage), spec)
    try:
        return coordinator.open_count() == 0 and not coordinator.unfinalized()
    finally:
        coordinator.engine.dispose()


def _run_in_process(args, spec, curves, stops) -> int:
    from hpo.cli.session import run_worker

    return run_worker(args, spec, curves, log_path=None, stops=stops)  # into launch.log


def _run_children(args, spec, stops, log_path) -> int:
    from hpo.cli import session
    from hpo.cli.progress import ProgressLine
    from hpo.readers.status import progress_snapshot

    log_dir = session.log_dir(spec)
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
            command += replay_argv(args)
        commands.append(command)
    with open(log_path, "ab") as startup_output:
        children = session.start_children(commands, log_dir, env, startup_output)
    pids = ", ".join(str(c.pid) for c in children)
    log.info("%d workers started (PIDs %s); logs in %s/", len(children), pids, log_dir)
    print(f"{len(children)} workers started (PIDs {pids}); logs in {log_dir}/", flush=True)
    with ProgressLine(spec):
        return session.supervise(children, stops,
                                 lambda: progress_snapshot(spec, spec.storage)["finished"])
