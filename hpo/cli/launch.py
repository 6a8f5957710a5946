"""``saan-hpo launch STUDY.toml [--storage URL] [--workers N]``: create or resume a
study and run N local workers until it is finished.

One worker runs in this process. Several run as child processes (one per GPU
when there are GPUs, round-robin), each logging to runs/<study>/logs/; this
process shows the study's progress and prints the winner at the end.
"""

from __future__ import annotations

import argparse
import os
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
    if args.workers == 1:
        code = _run_in_process(args, spec, curves)
    else:
        code = _run_children(args, spec)
    if code == 0:
        _print_outcome(spec, time.monotonic() - started)
    return code


def _run_in_process(args, spec, curves) -> int:
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    device = args.device or spec.run.trainer.device
    make_run = run_factory(spec, device=device, curves=curves,
                           epoch_seconds=args.replay_epoch_seconds)
    return Worker.attach(spec, spec.storage, make_run, device=device).run()


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


def _run_children(args, spec) -> int:
    from hpo.readers.status import progress_snapshot

    log_dir = Path(spec.artifacts).parent / "logs" if spec.artifacts else Path("runs") / spec.name / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SAAN_HPO_NO_PROGRESS="1", SAAN_HPO_STORAGE=spec.storage)
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
        children.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env),
                         log_path, handle))
    print(f"{len(children)} workers started; logs in {log_dir}/", flush=True)
    bar = _progress_bar(spec)
    try:
        while any(p.poll() is None for p, _, _ in children):
            time.sleep(1.0)
            _update_bar(bar, progress_snapshot(spec, spec.storage))
    except KeyboardInterrupt:
        for p, _, _ in children:
            p.terminate()  # workers checkpoint the epoch in flight and release their trials
        for p, _, _ in children:
            p.wait()
        raise
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
