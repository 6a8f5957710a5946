"""What ``launch`` and ``worker`` share: running one worker in this process with its
progress line and log file, the device it really uses, and the commands to run next."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpo.cli.logs import ENV_WORKER_LOG_DIR, log_file, worker_log_path
from hpo.cli.options import data_option_argv
from hpo.cli.progress import ProgressLine
from hpo.scheduling.spec import StudySpec
from hpo.service import db
from hpo.service.stops import ENV_PARENT_PID, HARD_STOP_SIGNAL


def log_dir(spec: StudySpec) -> Path:
    """runs/<study>/logs/ beside the checkpoint store."""
    return Path(spec.artifacts).parent / "logs" if spec.artifacts else Path("runs") / spec.name / "logs"


def nvidia_driver_present() -> bool:
    """False where no NVIDIA driver is loaded (Linux; no CUDA on macOS): then no GPU can be
    seen, and saying so needs no torch. Importing torch to ask costs a process about two
    CPU-seconds, most of what a launcher or a worker that finds nothing to claim spends."""
    if sys.platform == "darwin":
        return False
    if not sys.platform.startswith("linux"):
        return True  # nothing cheap to look at: ask torch
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


def concrete_device(name: str | None, replay: bool) -> str:
    """The device a worker really trains on: ``auto`` and ``cuda`` resolved (cuda:K or cpu).

    Stored with the worker, so ``status`` shows what each worker uses. Replayed
    curves train nothing and need no torch: they run on the CPU.
    """
    if name in (None, "", "auto", "cuda"):
        if replay:
            return "cpu"
        if nvidia_driver_present():
            import torch

            if torch.cuda.is_available():
                return f"cuda:{torch.cuda.current_device()}"
        return "cpu" if name != "cuda" else "cuda"  # asked for cuda without one: the trainer says so
    return name


def run_worker(args: argparse.Namespace, spec: StudySpec, curves, log_path: Path | None = None,
               stops=None) -> int:
    """One worker in this process until the study is finished (or it is stopped).

    ``log_path``: the file that gets the full log while it runs (hpo/cli/logs.py);
    None when the caller already sends it somewhere (launch's launch.log, or a
    launch child's own output). ``stops`` (hpo/service/stops.py): the stop flags
    the command installed first thing; None lets the Worker install its own.
    """
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    device = concrete_device(args.device or spec.run.trainer.device, replay=curves is not None)
    make_run = run_factory(spec, device=device, curves=curves, epoch_seconds=args.replay_epoch_seconds,
                           gang_efficiency=getattr(args, "replay_gang_efficiency", 1.0))
    worker = Worker.attach(spec, spec.storage, make_run, device=device, stops=stops)
    try:
        with ProgressLine(spec) as line, contextlib.ExitStack() as logging_to:
            if log_path is not None:
                logging_to.enter_context(log_file(log_path, quiet_terminal=line.drawn))
                line.note(f"log: {log_path}")
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
    count = 0
    if nvidia_driver_present():
        try:
            import torch

            count = torch.cuda.device_count()
        except ImportError:
            pass
    if count == 0:
        return ["cpu"] * n_workers
    return [f"cuda:{i % count}" for i in range(n_workers)]


def print_outcome(spec, seconds: float) -> None:
    from hpo.readers.status import progress_snapshot
    from hpo.readers.results import best_trial

    snapshot = progress_snapshot(spec, spec.storage)
    best = best_trial(spec.name, spec.storage)
    everything = "every configuration drawn, to the end" if spec.sampled else "full grid"
    print(f"epochs spent: {snapshot['epochs_spent']} (plan {spec.planned_epochs()}, "
          f"{everything} {spec.full_grid_epochs()}); wall time {seconds:.1f}s")
    if best is None:
        print("no trial completed")
    else:
        print(f"winner: trial {best.number} {best.params} "
              f"{spec.metric}={best.value:.4f} after {best.user_attrs.get('epochs')} epochs")


class Child:
    """A worker process launch started, and the log it writes (logs/worker-PID.log)."""

    def __init__(self, process: subprocess.Popen, log_folder: Path):
        self.process, self.pid = process, process.pid
        self.log = worker_log_path(log_folder, process.pid)


def children_exit_code(children: list[Child], study_finished) -> int:
    """Launch's exit code once every worker child has exited, with one line on stderr for each
    that did not exit 0 (see README Promises).

    0 when all exited 0. A worker killed by a signal launch did not send (SIGKILL from
    the OOM killer or a user) loses at most its epoch in flight: its trial resumes from
    its last checkpoint, taken over by another worker once its lease expires, or by the
    next launch. So when ``study_finished()`` says the other workers finished the study,
    launch exits 0 all the same; otherwise 1 (run launch again). Nothing of the killed
    worker's log is shown: it ends with the noise of the kill (its DataLoader
    processes' broken-connection tracebacks), not a cause. A worker that exited with a
    code of its own (2: an environment fault it named; 3: a hard stop) makes that the
    exit code, with the line it stopped with.
    """
    code, killed = 0, []
    for child in children:
        returncode = child.process.returncode
        if returncode < 0:
            killed.append(child)
        elif returncode != 0:
            code = returncode
            print(f"worker PID {child.pid} exited {returncode}: {last_error_line(child.log)} "
                  f"(log {child.log})", file=sys.stderr)
    if killed:
        finished = code == 0 and study_finished()
        for child in killed:
            fate = ("was taken over from its last checkpoint and the study finished" if finished
                    else "resumes from its last checkpoint: run the same launch command again")
            print(f"worker PID {child.pid} was killed ({signal_name(-child.process.returncode)}); "
                  f"its trial {fate} (log {child.log})", file=sys.stderr)
        if not finished and code == 0:
            code = 1
    return code


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def last_error_line(path: Path) -> str:
    """The line a worker stopped with: its last ``error:`` / ERROR line, else its last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if " ERROR " in line or ": error: " in line:
            return line
    return lines[-1] if lines else "(empty log)"


def start_children(commands: list[list[str]], log_folder: Path, env: dict,
                   startup_output) -> list[Child]:
    """Worker children in their own session (process group), each writing its own
    ``worker-PID.log`` in ``log_folder`` (hpo/cli/logs.py ``redirect_output``).

    ``startup_output``: an open file for what a child prints before it has redirected
    its output (nothing, unless Python itself fails to start): launch.log.
    Own session: a signal to launch's process group (Ctrl-C, ``timeout``, systemd,
    SLURM, ``docker stop``) reaches launch alone, which forwards it once
    (:func:`supervise`). ENV_PARENT_PID makes each child stop by itself when
    launch is gone, even after a SIGKILL (hpo/service/stops.py).
    """
    env = dict(env, **{ENV_PARENT_PID: str(os.getpid()), ENV_WORKER_LOG_DIR: str(log_folder)})
    return [Child(subprocess.Popen(command, stdout=startup_output, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True), log_folder)
            for command in commands]


def supervise(children: list[Child], stops, study_finished) -> int:
    """Wait for the children, passing ONE stop request to each per signal launch got.

    The first signal (forwarded as SIGTERM) lets every worker finish its epoch
    in flight, checkpoint it and release its trial; a second is forwarded as a
    hard stop (HARD_STOP_SIGNAL, hpo/service/stops.py). Returns
    :func:`children_exit_code`.
    """
    forwarded = 0
    while any(c.process.poll() is None for c in children):
        if stops.signals > forwarded and forwarded < 2:
            forwarded += 1
            what = "stop" if forwarded == 1 else "hard stop"
            print(f"signal received: passing a {what} to the workers", file=sys.stderr, flush=True)
            # The hard stop is its own signal: a second SIGTERM could merge with the first.
            sent = signal.SIGTERM if forwarded == 1 else HARD_STOP_SIGNAL
            for c in children:
                if c.process.poll() is None:
                    c.process.send_signal(sent)
            continue
        time.sleep(0.1)
    return children_exit_code(children, study_finished)
