"""Study files with a [space] (kind hyperband-sync) and their replay surrogates, for the tests."""

from __future__ import annotations

import json
from pathlib import Path

SPACE = {"lr": "{ log_uniform = [1e-6, 1e-2] }", "batch_size": "{ choice = [8, 16, 32, 64] }",
         "weight_decay": "{ uniform = [0.0, 0.001] }"}


def write_space_study(path: Path, name: str = "cont", space: dict | None = None,
                      sampler: str = "tpe", eta: int = 2, rungs: int = 3, brackets: int = 0,
                      seed: int = 0, schedule: str = "geometric", storage: str | None = None,
                      extra: str = "") -> Path:
    space = SPACE if space is None else space
    lines = ["[study]", f'name = "{name}"', 'metric = "srcc"']
    if storage:
        lines.append(f'storage = "{storage}"')
    lines.append(f'artifacts = "{path.parent / (name + "-artifacts")}"')
    lines += ["", "[space]"] + [f"{k} = {v}" for k, v in space.items()]
    lines += ["", "[scheduler]", 'kind = "hyperband-sync"', f"eta = {eta}", f"rungs = {rungs}",
              f'schedule = "{schedule}"', f'sampler = "{sampler}"', f"seed = {seed}"]
    if brackets:
        lines.append(f"brackets = {brackets}")
    lines.append(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_surrogate(path: Path) -> Path:
    """A smooth surrogate: best near lr 10**-3.5, batch 16, weight decay 0; rising with epochs."""
    path.write_text(json.dumps({
        "format": "saan-hpo-surrogate/1",
        "metric": "srcc",
        "inputs": [{"name": "lr", "transform": "log10"},
                   {"name": "batch_size", "transform": "log2"},
                   {"name": "weight_decay", "transform": "scale", "scale": 1000.0}],
        # quadratic terms: 1, x_i, then x_i * x_j for i <= j
        "asymptote": [-1.925, -0.7, 0.8, -0.1, -0.1, 0.0, 0.0, -0.1, 0.0, -0.05],
        "amplitude": [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "log_rate": [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    }))
    return path
