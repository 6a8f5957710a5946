"""``saan-hpo launch STUDY.toml [--storage URL] [--workers N]``: create or resume a
study and run N local workers until it is finished.

One worker runs in this process. Several run as child processes (one per GPU
when there are GPUs, round-robin), each logging to runs/<study>/logs/; this
process shows the study's progress and prints the winner at the end.

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
import signal
import subprocess
import sys
import time
from pathlib import Path

from model.errors import SaanError
from hpo.cli.options import (add_data_option, add_replay, add_study_file, data_option_argv,
                              replay_curves, study_spec)

# The service, the readers, tqdm and torch are imported inside the functions that
# use them: building the parser imports every command module (hpo/cli/__init__.py).


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_file(parser)
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="local workers (default 1)")
    parser.add_argument("--device", default=None,
                        help="device for every worker (default: one GPU each, else CPU)")
    add_data_option(parser)
    add_replay(parser)


def run(args: argparse.Namespace) -> int:
    from hpo.service.stops import StopRequests

    stops = StopRequests()
    restore = stops.install()  # first thing: a signal from now on only sets a flag
    try:
        return _launch(args, stops)
    finally:
        restore()


def _launch(args: argparse.Namespace, stops) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.service.study import open_or_create

    if args.workers < 1:
        raise SaanError(f"--workers: expected an integer >= 1, got {args.workers}")
    spec = study_spec(args)  # storage and artifacts resolved: spec.storage, spec.artifacts
    curves = replay_curves(args, spec)  # read (and checked) before anything is stored
    created = open_or_create(spec, spec.storage)
    print(f"{'created' if created else 'resuming'} study {spec.name!r}: "
          f"{len(spec.grid_points())} configurations, {spec.scheduler.kind}, "
          f"boundaries {spec.boundaries}, {spec.planned_epochs()} epochs planned", flush=True)
    started = time.monotonic()
    if stops.graceful.is_set():
        code = 0
    elif args.workers == 1:
        code = _run_in_process(args, spec, curves, stops)
    else:
        code = _run_children(args, spec, stops)
    if stops.graceful.is_set():
        print(f"stopped by a signal (exit {code}); trials in flight were released: run the same "
              "launch command again to resume the study", flush=True)
    elif code == 0:
        _print_outcome(spec, time.monotonic() - started)
    return code


def _run_in_process(args, spec, curves, stops) -> int:
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    device = args.device or spec.run.trainer.device
    make_run = run_factory(spec, device=device, curves=curves,
                           epoch_seconds=args.replay_epoch_seconds)
    return Worker.attach(spec, spec.storage, make_run, device=device, stops=stops).run()


def local_devices(n_workers: int, device: str | None, configured: str) -> list[str]:
    """One GPU per worker, round-robin over the visible ones; CPU when there are none."""
    if device:
        return [device] * n_workers
    if configured not in ("auto", "cuda"):
        return [configured] * n_workers
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    if count == 0:
        return ["cpu"] * n_workers
    return [f"cuda:{i % count}" for i in range(n_workers)]


def _run_children(args, spec, stops) -> int:
    from hpo.readers.status import progress_snapshot
    from hpo.service.stops import ENV_PARENT_PID

    log_dir = Path(spec.artifacts).parent / "logs" if spec.artifacts else Path("runs") / spec.name / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SAAN_HPO_NO_PROGRESS="1", SAAN_HPO_STORAGE=spec.storage)
    env[ENV_PARENT_PID] = str(os.getpid())
    devices = local_devices(args.workers, args.device, spec.run.trainer.device)
    if all(d == "cpu" for d in devices) and "SAAN_HPO_THREADS" not in env:
        # CPU workers share the cores: oversubscribed OpenMP threads spin
        # against each other and epochs get many times slower.
        env["SAAN_HPO_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(devices)))
    children = []
    for i, device in enumerate(devices):
        command = [sys.executable, "-m", "hpo.cli", "worker", args.study_file,
                   "--artifacts", spec.artifacts, "--device", device]
        command += data_option_argv(args)
        if args.replay_curves:
            command += ["--replay-curves", args.replay_curves,
                        "--replay-epoch-seconds", str(args.replay_epoch_seconds)]
        log_path = log_dir / f"worker-{i}.log"
        handle = open(log_path, "ab")
        # Own session: the group's signals reach launch only, which forwards them once.
        children.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True), log_path, handle))
    print(f"{len(children)} workers started; logs in {log_dir}/", flush=True)
    bar = _progress_bar(spec)
    forwarded = 0
    next_update = time.monotonic() + 1.0
    try:
        while any(p.poll() is None for p, _, _ in children):
            if stops.signals > forwarded and forwarded < 2:
                forwarded += 1
                what = "stop" if forwarded == 1 else "hard stop"
                print(f"signal received: passing a {what} to the workers", file=sys.stderr, flush=True)
                for p, _, _ in children:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                continue
            time.sleep(0.1)
            if time.monotonic() >= next_update:
                next_update = time.monotonic() + 1.0
                _update_bar(bar, progress_snapshot(spec, spec.storage))
    finally:
        if bar is not None:
            _update_bar(bar, progress_snapshot(spec, spec.storage))
            bar.close()
    code = 0
    for p, log_path, handle in children:
        handle.close()
        if p.returncode != 0:
            code = p.returncode if p.returncode > 0 else 1
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            print(f"worker log {log_path} (exit {p.returncode}):", *tail, sep="\n  ", file=sys.stderr)
    return code


def _progress_bar(spec):
    from tqdm import tqdm

    from model.cache import progress_disabled  # the one SAAN_HPO_NO_PROGRESS check in hpo/

    if progress_disabled():
        return None

    return tqdm(total=spec.planned_epochs(), unit="epoch", desc=spec.name)


def _update_bar(bar, snapshot) -> None:
    if bar is None:
        return
    bar.n = snapshot["epochs_spent"]
    bar.set_postfix_str(f"rungs decided {snapshot['rungs_decided']}, running {snapshot['running']}")
    bar.refresh()


def _print_outcome(spec, seconds: float) -> None:
    from hpo.readers.status import progress_snapshot
    from hpo.readers.results import best_trial

    snapshot = progress_snapshot(spec, spec.storage)
    best = best_trial(spec.name, spec.storage)
    print(f"epochs spent: {snapshot['epochs_spent']} (plan {spec.planned_epochs()}, "
          f"full grid {spec.full_grid_epochs()}); wall time {seconds:.1f}s")
    if best is None:
        print("no trial completed")
    else:
        print(f"winner: trial {best.number} {best.params} "
              f"{spec.metric}={best.value:.4f} after {best.user_attrs.get('epochs')} epochs")
