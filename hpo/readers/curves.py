"""A study's learning curves as the CSV that ``simulate`` replays.

Columns: one per grid axis, then ``epoch`` and ``value``; one row per trial and
reported epoch. Record curves once with a full-grid study (scheduler ``none``),
then try eta, rungs and schedules on them with ``saan-hpo simulate``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import optuna

from hpo.service import optuna_link


def write_curves(name: str, storage_url: str, path: str | Path) -> int:
    study = optuna.load_study(study_name=name, storage=optuna_link.optuna_storage(storage_url))
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    axes = sorted({axis for t in trials for axis in t.params})
    rows = 0
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*axes, "epoch", "value"])
        for trial in sorted(trials, key=lambda t: t.number):
            for epoch, value in sorted(trial.intermediate_values.items()):
                writer.writerow([*(trial.params[a] for a in axes), epoch, repr(value)])
                rows += 1
    return rows
