"""What ``launch`` and ``worker`` share: running one worker in this process with its
progress line and log file, the device it really uses, and the commands to run next."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpo.cli.logs import attach_log_file
from hpo.cli.options import data_option_argv
from hpo.cli.progress import ProgressLine
from hpo.scheduling.spec import StudySpec
from hpo.service import db
from hpo.service.stops import ENV_PARENT_PID, HARD_STOP_SIGNAL


def log_dir(spec: StudySpec) -> Path:
    """runs/<study>/logs/ beside the checkpoint store."""
    return Path(spec.artifacts).parent / "logs" if spec.artifacts else Path("runs") / spec.name / "logs"


def concrete_device(name: str | None, replay: bool) -> str:
    """The device a worker really trains on: ``auto`` and ``cuda`` resolved (cuda:K or cpu).

    Stored with the worker, so ``status`` shows what each worker uses. Replayed
    curves train nothing and need no torch: they run on the CPU.
    """
    if name in (None, "", "auto", "cuda"):
        if replay:
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        return "cpu" if name != "cuda" else "cuda"  # asked for cuda without one: the trainer says so
    return name


def run_worker(args: argparse.Namespace, spec: StudySpec, curves, log_name: str = "worker.log",
               stops=None) -> int:
    """One worker in this process until the study is finished (or it is stopped).

    ``stops`` (hpo/service/stops.py): the stop flags the command installed first thing;
    None lets the Worker install its own while it runs.
    """
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    device = concrete_device(args.device or spec.run.trainer.device, replay=curves is not None)
    make_run = run_factory(spec, device=device, curves=curves, epoch_seconds=args.replay_epoch_seconds)
    worker = Worker.attach(spec, spec.storage, make_run, device=device, stops=stops)
    try:
        with ProgressLine(spec) as line:
            if line.drawn:
                path = attach_log_file(log_dir(spec) / log_name)
                line.note(f"log: {path}")
            return worker.run()
    finally:
        worker.close()


def next_commands(args: argparse.Namespace, spec: StudySpec) -> str:
    """The commands to run next, with this study's name and real storage URL."""
    from hpo.readers.status import progress_snapshot

    storage = spec.storage

    ref = f"--study {shlex.quote(spec.name)} --storage {shlex.quote(db.mask_url(storage))}"
    lines = ["next:",
             f"  saan-hpo status {ref}",
             f"  saan-hpo report {ref}                 # reports/{spec.name}.html",
             f"  saan-hpo export {ref} --evaluate      # runs/{spec.name}/best.toml"]
    if not progress_snapshot(spec, storage)["finished"]:
        attach = ["saan-hpo", "worker", args.study_file, "--storage", db.mask_url(storage),
                  *data_option_argv(args)]
        lines.append(f"  {shlex.join(attach)}      # attach a worker (any machine)")
    return "\n".join(lines)


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


def print_outcome(spec, seconds: float) -> None:
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


def children_exit_code(children) -> int:
    """Close the (process, log path, log handle) triples of finished worker children; 0 when all
    exited 0, else the last failing code, with the tail of each failing worker's log on stderr."""
    code = 0
    for child, log_path, handle in children:
        handle.close()
        if child.returncode != 0:
            code = child.returncode if child.returncode > 0 else 1
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            print(f"worker log {log_path} (exit {child.returncode}):", *tail, sep="\n  ",
                  file=sys.stderr)
    return code


def start_children(commands: list[list[str]], log_paths: list[Path], env: dict) -> list:
    """Worker children, each logging to its file, in their own session (process group).

    Own session: a signal to launch's process group (Ctrl-C, ``timeout``, systemd,
    SLURM, ``docker stop``) reaches launch alone, which forwards it once
    (:func:`supervise`). ENV_PARENT_PID makes each child stop by itself when
    launch is gone, even after a SIGKILL (hpo/service/stops.py).
    """
    env = dict(env, **{ENV_PARENT_PID: str(os.getpid())})
    children = []
    for command, log_path in zip(commands, log_paths):
        handle = open(log_path, "ab")
        children.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True), log_path, handle))
    return children


def supervise(children: list, stops) -> int:
    """Wait for the children, passing ONE stop request to each per signal launch got.

    The first signal (forwarded as SIGTERM) lets every worker finish its epoch
    in flight, checkpoint it and release its trial; a second is forwarded as a
    hard stop (HARD_STOP_SIGNAL, hpo/service/stops.py). Returns
    :func:`children_exit_code`.
    """
    forwarded = 0
    while any(p.poll() is None for p, _, _ in children):
        if stops.signals > forwarded and forwarded < 2:
            forwarded += 1
            what = "stop" if forwarded == 1 else "hard stop"
            print(f"signal received: passing a {what} to the workers", file=sys.stderr, flush=True)
            # The hard stop is its own signal: a second SIGTERM could merge with the first.
            sent = signal.SIGTERM if forwarded == 1 else HARD_STOP_SIGNAL
            for p, _, _ in children:
                if p.poll() is None:
                    p.send_signal(sent)
            continue
        time.sleep(0.1)
    return children_exit_code(children)
