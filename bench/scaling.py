"""Makespan of a synchronous-halving study with 1, 2, 4, 8 workers against the ideal schedule.

Epochs are simulated (a fixed sleep, no training) so only the service's own
scheduling shows: pauses at rungs, claims, decisions, resumes. The ideal for
synchronous halving with W workers is sum over rungs of
ceil(trials in rung / W) x epochs of that rung x seconds per epoch. The
makespan is measured from the first epoch's start to the last epoch's end
(worker start-up is reported separately). Prints one line per worker count
and the worst ratio last.

    python bench/scaling.py [--epoch-seconds 0.25] [--workers 1 2 4 8]

``--fleet``: the published studies on one pool (studies/blog-grid.toml alone, then
blog-grid + variants + ablation together, 740 epochs), replayed with simulated
epoch times. Per worker count it prints makespan / ideal (ideal: every epoch
packed perfectly, epochs x seconds / workers) and the share of worker time
busy (the workers' epoch time over workers x makespan), and checks that each
study's rung decisions and results equal those of the study run alone.

    python bench/scaling.py --fleet [--epoch-seconds 0.05] [--workers 1 2 4 8]

``--data-parallel``: studies/blog-grid.toml alone, replayed, once with gangs
(``[study] data_parallel = "on"``: idle workers join running trials at epoch
boundaries, a gang of k sleeping epoch_seconds / (k x efficiency) per epoch) and
once without, side by side: busy, makespan / ideal and whether the decisions are
identical (bench/gang_scaling.py).

    python bench/scaling.py --data-parallel [--epoch-seconds 0.5] [--workers 4 8]
        [--gang-efficiency 1.0] [--min-rank-batch N]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.common import grid_of, write_random_curves, write_study  # noqa: E402
from hpo.service import db  # noqa: E402
from hpo.scheduling.rungs import rung_epochs, rung_sizes  # noqa: E402


def ideal_makespan(n_trials: int, eta: int, boundaries: list[int], workers: int, seconds: float) -> float:
    total, previous = 0.0, 0
    for size, boundary in zip(rung_sizes(n_trials, eta, len(boundaries)), boundaries):
        total += math.ceil(size / workers) * (boundary - previous) * seconds
        previous = boundary
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-seconds", type=float, default=None,
                        help="simulated seconds per epoch (default 0.25; --fleet 0.05; "
                             "--data-parallel 0.5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--fleet", action="store_true",
                        help="blog-grid alone and blog-grid + variants + ablation on one pool")
    parser.add_argument("--data-parallel", action="store_true",
                        help="blog-grid alone with gangs of idle workers, and without")
    parser.add_argument("--gang-efficiency", type=float, default=1.0,
                        help="with --data-parallel: a gang's speed-up over its size (default 1.0)")
    parser.add_argument("--min-rank-batch", type=int, default=None,
                        help="with --data-parallel: [study] min_rank_batch (default the study's, 2)")
    args = parser.parse_args()
    if args.data_parallel:
        from bench.gang_scaling import run_gang_benchmark

        run_gang_benchmark(args.workers, 0.5 if args.epoch_seconds is None else args.epoch_seconds,
                           args.gang_efficiency, args.min_rank_batch)
        return
    if args.fleet:
        from bench.fleet import run_fleet_benchmark

        run_fleet_benchmark(args.workers, 0.05 if args.epoch_seconds is None else args.epoch_seconds)
        return
    args.epoch_seconds = 0.25 if args.epoch_seconds is None else args.epoch_seconds
    grid = grid_of(4, 4)
    boundaries = rung_epochs("cumulative", 2, 5, 1)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        curves = write_random_curves(tmp / "curves.csv", grid, boundaries[-1])
        for workers in args.workers:
            storage = f"sqlite:///{tmp / f'w{workers}.db'}"
            study = write_study(tmp / f"w{workers}.toml", f"scaling-{workers}", grid, storage=storage)
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "hpo.cli", "launch", str(study), "--workers",
                            str(workers), "--replay-curves", str(curves), "--replay-epoch-seconds",
                            str(args.epoch_seconds)], check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.monotonic() - started
            engine = db.create_service_engine(storage)
            with engine.connect() as conn:
                first, last, count = conn.execute(sa.select(
                    sa.func.min(db.epochs.c.started_at), sa.func.max(db.epochs.c.finished_at),
                    sa.func.count())).one()
            engine.dispose()
            makespan = last - first
            ideal = ideal_makespan(16, 2, boundaries, workers, args.epoch_seconds)
            ratios.append(makespan / ideal)
            print(f"{workers} workers: {count} epochs, makespan {makespan:.2f}s, ideal {ideal:.2f}s, "
                  f"ratio {makespan / ideal:.3f} (wall with start-up {wall:.1f}s)", flush=True)
    print(f"worst makespan/ideal over {args.workers} workers: {max(ratios):.3f}")


if __name__ == "__main__":
    main()
