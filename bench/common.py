"""Helpers shared by the benchmarks: throwaway study files and curve tables."""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path


def grid_of(n_lr: int, n_batch: int) -> dict[str, list]:
    return {"lr": [10.0 ** -(i + 1) for i in range(n_lr)],
            "batch_size": [2 ** (j + 1) for j in range(n_batch)]}


def write_study(path: Path, name: str, grid: dict, kind: str = "sync-halving",
                schedule: str = "cumulative", eta: int = 2, rungs: int = 5,
                storage: str | None = None, lease_seconds: float = 30) -> Path:
    lines = ["[study]", f'name = "{name}"', 'metric = "srcc"', f"lease_seconds = {lease_seconds}",
             f'artifacts = "{path.parent / (name + "-artifacts")}"']
    if storage:
        lines.append(f'storage = "{storage}"')
    lines += ["[grid]"] + [f"{k} = {v!r}" for k, v in grid.items()]
    lines += ["[scheduler]", f'kind = "{kind}"', f'schedule = "{schedule}"', f"eta = {eta}",
              f"rungs = {rungs}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_random_curves(path: Path, grid: dict, epochs: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*grid, "epoch", "value"])
        for values in itertools.product(*grid.values()):
            slope = rng.uniform(0.005, 0.03)
            for epoch in range(1, epochs + 1):
                writer.writerow([*values, epoch, min(1.0, slope * epoch + rng.uniform(0, 0.05))])
    return path
