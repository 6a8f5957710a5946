"""``saan-hpo launch A.toml B.toml ... [--workers N]``: several studies, one pool of workers.

Every study is created or resumed in one storage (``--storage``, else
$SAAN_HPO_STORAGE, else the files' own, which must then agree). Then N local
workers serve them all as one pool: each is ``saan-hpo worker --study A
--study B ...`` (hpo/service/fleet_worker.py), so a worker idle at one study's
narrow rung takes another study's waiting trial. ``--workers 0`` stops after
creating or resuming: a fleet started elsewhere (SLURM, Kubernetes) attaches.
The workers are supervised as single-study launch's are (hpo/cli/launch.py):
own session, one forwarded stop per signal, none orphaned.

The local workers use this machine's paths from the study files (they run
where the files are); ``--artifacts DIR`` is one checkpoint store for every
study (ids start with the study's name), as a fleet worker given
``--artifacts DIR`` uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from model.errors import SaanError
from hpo.cli.options import apply_data_option, replay_argv, replay_curves
from hpo.scheduling.spec import StudySpec, load_spec


def launch_many(args: argparse.Namespace, stops) -> int:
    from hpo.service.study import open_or_create

    specs, storage = _specs(args)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise SaanError(f"launch: the same study name twice in {', '.join(names)}")
    machine_args = _machine_argv(specs)
    for spec in specs:
        replay_curves(args, spec)  # validate every file before anything is stored
    for spec in specs:
        created = open_or_create(spec, storage)
        print(f"{'created' if created else 'resuming'} study {spec.name!r}: "
              f"{spec.n_configurations()} configurations, {spec.scheduler.kind}, "
              f"{spec.planned_epochs()} epochs planned, priority {spec.priority}", flush=True)
    if args.workers == 0 or stops.graceful.is_set():
        return 0
    started = time.monotonic()
    code = _run_pool(args, names, storage, machine_args, specs, stops)
    if stops.graceful.is_set():
        print(f"stopped by a signal (exit {code}); trials in flight were released: run the same "
              "launch command again to resume the studies", flush=True)
    elif code == 0:
        from hpo.cli.session import print_outcome

        for spec in specs:
            print(f"== {spec.name}")
            print_outcome(spec, time.monotonic() - started)
    return code


def _specs(args: argparse.Namespace) -> tuple[list[StudySpec], str]:
    specs = []
    for path in [args.study_file, *args.more_study_files]:
        # storage: --storage, else $SAAN_HPO_STORAGE, else the file's (checked equal below)
        specs.append(apply_data_option(args, load_spec(path)))
    storages = sorted({spec.storage for spec in specs})
    if len(storages) > 1:
        raise SaanError(f"launch: one pool serves one storage, but the files name "
                        f"{len(storages)} ({', '.join(s.split('?')[0] for s in storages)}): "
                        "give --storage URL")
    return specs, storages[0]


def _machine_argv(specs: list[StudySpec]) -> list[str]:
    """This machine's paths for the pool's workers, from the files (they must agree)."""
    argv = []
    real = [s for s in specs if not s.run.data.synthetic]
    for flag, get in (("--data-root", lambda s: s.run.data.root),
                      ("--cache-dir", lambda s: s.run.data.cache_dir),
                      ("--weights-dir", lambda s: s.run.model.weights_dir)):
        values = sorted({get(s) for s in real})
        if len(values) > 1:
            raise SaanError(f"launch: {flag[2:].replace('-', '_')}: the studies disagree "
                            f"({', '.join(map(repr, values))}); one pool reads one dataset")
        if values and values[0]:
            argv += [flag, values[0]]
    return argv


def _run_pool(args, names, storage, machine_argv, specs, stops) -> int:
    """N local fleet workers, supervised like single-study launch's (hpo/cli/session.py)."""
    from hpo.cli.session import local_devices, start_children, supervise
    from hpo.readers.status import progress_snapshot

    log_dir = Path("runs") / "fleet-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SAAN_HPO_NO_PROGRESS="1", SAAN_HPO_STORAGE=storage)
    devices = local_devices(args.workers, args.device, specs[0].run.trainer.device)
    base = [sys.executable, "-m", "hpo.cli", "worker"] + [f"--study={n}" for n in names]
    base += machine_argv
    if args.artifacts:
        base += ["--artifacts", args.artifacts]
    if args.replay_curves:
        base += replay_argv(args)
    with open(log_dir / "launch.log", "ab") as startup_output:
        children = start_children([base + ["--device", device] for device in devices],
                                  log_dir, env, startup_output)
    print(f"{len(children)} workers serving {', '.join(names)} (PIDs "
          f"{', '.join(str(c.pid) for c in children)}); logs in {log_dir}/", flush=True)
    return supervise(children, stops, lambda: all(
        progress_snapshot(spec, storage)["finished"] for spec in specs))
