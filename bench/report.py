"""Seconds to render ``saan-hpo report`` for the blog study (16 trials, 5 rungs, eta 2).

    python bench/report.py [--repeat 3]

Replays random rising learning curves through the real worker on a temporary
SQLite study (80 epochs), then times :func:`hpo.report.output.render` (read the study,
build the figures, write the page) and prints the page size. The last line is
the best render time in seconds. A number to watch, never an assertion.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SAAN_HPO_NO_PROGRESS", "1")

STUDY = """[study]
name = "bench-report"
metric = "srcc"
storage = "{storage}"
artifacts = "{artifacts}"

[grid]
lr = [1e-3, 1e-4, 1e-5, 1e-6]
batch_size = [64, 32, 16, 8]

[scheduler]
kind = "sync-halving"
eta = 2
rungs = 5
schedule = "cumulative"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("optuna").setLevel(logging.WARNING)

    from hpo.report.output import render, write_atomically
    from hpo.scheduling.spec import load_spec
    from hpo.service.learning_curves import LearningCurves
    from hpo.service.study import open_or_create
    from hpo.service.trial_runs import run_factory
    from hpo.service.worker import Worker

    with tempfile.TemporaryDirectory(prefix="saan-hpo-bench-report-") as tmp:
        tmp = Path(tmp)
        storage = f"sqlite:///{tmp / 'study.db'}"
        study_file = tmp / "study.toml"
        study_file.write_text(STUDY.format(storage=storage, artifacts=tmp / "artifacts"))
        spec = load_spec(study_file)
        rng = random.Random(0)
        with open(tmp / "curves.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["lr", "batch_size", "epoch", "value"])
            for params in spec.grid_points():
                slope = rng.uniform(0.005, 0.03)
                for epoch in range(1, 32):
                    value = min(1.0, slope * epoch + rng.uniform(0, 0.05))
                    writer.writerow([params["lr"], params["batch_size"], epoch, value])
        curves = LearningCurves.load(tmp / "curves.csv", spec)
        open_or_create(spec, storage)
        Worker.attach(spec, storage, run_factory(spec, curves=curves), poll_seconds=0.0).run()

        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            page, data, _ = render(spec.name, storage)
            write_atomically(tmp / "report.html", page)
            times.append(time.perf_counter() - started)
        size = (tmp / "report.html").stat().st_size
        print(f"{len(data.trials)} trials, {len(data.rungs)} rungs, {len(data.epochs)} epochs: "
              f"page {size / 1e6:.2f} MB; renders {', '.join(f'{t:.2f}s' for t in times)}")
        print(f"render seconds: {min(times):.3f}")


if __name__ == "__main__":
    main()
