"""A small Python API: run, watch and export a study from a script or a notebook.

    import hpo

    hpo.launch("studies/demo.toml", workers=2)          # create or resume, run to the end
    hpo.status("studies/demo.toml")                     # where it stands, the winner so far
    hpo.report("studies/demo.toml")                     # the HTML report, its path
    hpo.export("studies/demo.toml")                     # the winner as a train config, its path
    hpo.attach_worker("studies/demo.toml", background=True)  # one more worker, any machine

Every function takes the study file (its storage is the file's, or ``storage=``)
or, for the reading ones, a study name with ``storage=``. They run the same code
as the ``saan-hpo`` commands; nothing here keeps state between calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The service and torch are imported inside the functions: ``import hpo`` stays light.


@dataclass(frozen=True)
class StudyStatus:
    """Where a study stands (what ``saan-hpo status`` prints, as values)."""

    name: str
    storage: str  # password masked
    finished: bool
    epochs_spent: int
    epochs_planned: int
    trials: dict[str, int]  # service state -> count (waiting, running, paused, pruned, complete, failed)
    rungs_decided: int
    winner: dict[str, Any] | None  # {"trial", "params", "value", "epochs"}: best completed trial


def _spec(study: str | os.PathLike, storage: str | None):
    """(spec, storage URL) from a study file, or from a stored study's name and ``storage``."""
    from hpo.readers.results import stored_spec
    from hpo.scheduling.spec import load_spec

    path = Path(study)
    if path.suffix == ".toml" or path.exists():
        spec = load_spec(path)
        return spec, storage or os.environ.get("SAAN_HPO_STORAGE") or spec.storage
    if storage is None:
        raise ValueError(f"{study!r}: a study name needs storage= (or pass the study file)")
    return stored_spec(str(study), storage), storage


def _replay_argv(replay_curves, replay_epoch_seconds) -> list[str]:
    if replay_curves is None:
        return []
    return ["--replay-curves", str(replay_curves), "--replay-epoch-seconds", str(replay_epoch_seconds)]


def launch(study_file: str | os.PathLike, *, workers: int = 1, storage: str | None = None,
           device: str | None = None, replay_curves: str | os.PathLike | None = None,
           replay_epoch_seconds: float = 0.0) -> StudyStatus:
    """Create (or resume) the study and run ``workers`` local workers until it is finished.

    ``replay_curves`` replays recorded learning curves (a CSV, as ``bench/demo-curves.csv``)
    instead of training: the whole service runs, in seconds. Raises on a bad study file
    (the same one-line error the command prints) and returns :func:`status` at the end.
    """
    from hpo.cli import main

    argv = ["launch", str(study_file), "--workers", str(workers)]
    argv += ["--storage", storage] if storage else []
    argv += ["--device", device] if device else []
    argv += _replay_argv(replay_curves, replay_epoch_seconds)
    code = main(argv)
    if code != 0:
        raise RuntimeError(f"saan-hpo launch {study_file}: exit {code} (see the messages above)")
    return status(study_file, storage=storage)


def attach_worker(study_file: str | os.PathLike, *, storage: str | None = None,
                  device: str | None = None, background: bool = False,
                  replay_curves: str | os.PathLike | None = None, replay_epoch_seconds: float = 0.0,
                  tracker=None):
    """One more worker on an existing study (it never creates one).

    In this process until the study is finished (returns 0), or with ``background=True``
    as a ``saan-hpo worker`` child process (returns its :class:`subprocess.Popen`).
    ``tracker`` (in-process only): an :class:`hpo.service.trackers.Tracker` to receive every
    epoch's metrics; the default is what the study file enables (TensorBoard, MLflow).
    """
    if background:
        argv = [sys.executable, "-m", "hpo.cli", "worker", str(study_file)]
        argv += ["--storage", storage] if storage else []
        argv += ["--device", device] if device else []
        return subprocess.Popen(argv + _replay_argv(replay_curves, replay_epoch_seconds))
    import dataclasses

    from hpo.service.surrogate_curves import load_replay
    from hpo.service.study import open_or_create
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    spec, url = _spec(study_file, storage)
    spec = dataclasses.replace(spec, storage=url)
    curves = load_replay(str(replay_curves), spec) if replay_curves is not None else None
    open_or_create(spec, url)
    device = device or spec.run.trainer.device
    make_run = run_factory(spec, device=device, curves=curves, epoch_seconds=replay_epoch_seconds)
    options = {"device": device} if tracker is None else {"device": device, "tracker": tracker}
    worker = Worker.attach(spec, url, make_run, **options)
    try:
        return worker.run()
    finally:
        worker.close()


def status(study: str | os.PathLike, *, storage: str | None = None) -> StudyStatus:
    """Where the study stands: epochs spent of planned, trials per state, the winner so far."""
    from collections import Counter

    from hpo.readers.results import best_trial
    from hpo.readers.status import progress_snapshot
    from hpo.service import db

    spec, url = _spec(study, storage)
    snapshot = progress_snapshot(spec, url)
    best = best_trial(spec.name, url)
    winner = None if best is None else {
        "trial": best.number, "params": dict(best.params), "value": best.value,
        "epochs": best.user_attrs.get("epochs")}
    return StudyStatus(
        name=spec.name, storage=db.mask_url(url), finished=snapshot["finished"],
        epochs_spent=snapshot["epochs_spent"], epochs_planned=snapshot["planned"],
        trials=dict(Counter(t.state for t in snapshot["trials"])),
        rungs_decided=snapshot["rungs_decided"], winner=winner)


def report(study: str | os.PathLike, *, storage: str | None = None,
           output: str | os.PathLike | None = None) -> Path:
    """Write the HTML report (default ``reports/<study>.html``) and return its path."""
    from hpo.report.output import default_output, render, write_atomically

    spec, url = _spec(study, storage)
    page, _, _ = render(spec.name, url)
    path = Path(output) if output else default_output(spec.name)
    write_atomically(path, page)
    return path


def export(study: str | os.PathLike, *, storage: str | None = None,
           output: str | os.PathLike | None = None) -> Path:
    """Write the winner as a config ``saan-hpo train`` accepts (default ``runs/<study>/best.toml``)."""
    from hpo.readers.export import export_text, winner
    from hpo.report.output import write_atomically

    spec, url = _spec(study, storage)
    stored, best = winner(spec.name, url)
    path = Path(output) if output else Path("runs") / spec.name / "best.toml"
    write_atomically(path, export_text(stored, best, url))
    return path
