"""Wall time, median epoch, fixed per-epoch cost and winner of a finished study (bench/gpu-study.sh).

    python bench/study_summary.py --db runs/x/study.db --study NAME --train-images N [--wall S]

Reads the service's epoch log (table saan_epochs of the study's SQLite file):
every kept epoch has its start and finish time (a stint's first epoch starts
when the trial was taken up, so it includes the model rebuild and checkpoint
load of a resume) and the trainer's metrics, among them the training loop's
images/s. Per epoch:

    epoch wall   = finished_at - started_at
    training     = train images / images_per_s   (the training loop alone)
    fixed cost   = epoch wall - training          (validation, checkpoint,
                                                   bookkeeping, rebuild on resume)

Prints the medians and the winner (the best trial's params by the last value
of the trials that reached the most epochs, as Optuna's best_trial).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--train-images", type=int, required=True)
    p.add_argument("--wall", type=float, default=None, help="wall seconds of the launch")
    args = p.parse_args()
    con = sqlite3.connect(args.db)
    rows = con.execute("SELECT number, epoch, started_at, finished_at, value, metrics_json FROM "
                       "saan_epochs WHERE study = ? AND kept ORDER BY finished_at", (args.study,)).fetchall()
    if not rows:
        raise SystemExit(f"{args.db}: no epochs of study {args.study!r}")
    walls, fixed, first_of_stint = [], [], []
    for number, epoch, started, finished, value, metrics_json in rows:
        metrics = json.loads(metrics_json or "{}")
        wall = finished - started
        walls.append(wall)
        if metrics.get("images_per_s"):
            fixed.append(wall - args.train_images / metrics["images_per_s"])
    last = {}
    for number, epoch, _, _, value, _ in rows:
        if number not in last or epoch >= last[number][0]:
            last[number] = (epoch, value)
    top_epoch = max(e for e, _ in last.values())
    winner = max((n for n, (e, _) in last.items() if e == top_epoch), key=lambda n: (last[n][1], -n))
    params = con.execute("SELECT params_json FROM saan_trials WHERE study = ? AND number = ?",
                         (args.study, winner)).fetchone() if _has_table(con, "saan_trials") else None
    if args.wall is not None:
        print(f"wall time: {args.wall:.0f} s ({args.wall / 60:.1f} min) for {len(rows)} epochs")
    print(f"median epoch: {statistics.median(walls):.2f} s (epoch wall, {len(walls)} epochs)")
    if fixed:
        print(f"fixed per-epoch cost: median {statistics.median(fixed):.2f} s "
              f"(epoch wall - {args.train_images} train images / training images/s)")
    print(f"winner: trial {winner} at epoch {top_epoch}, value {last[winner][1]:.4f}"
          + (f", params {params[0]}" if params and params[0] else ""))


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


if __name__ == "__main__":
    main()
