"""Epochs spent and the winner's regret per scheduler, over shuffled trial orders.

Replays recorded learning curves of the 4x4 demo grid (bench/demo-curves.csv,
recorded from studies/demo-full-grid.toml with `saan-hpo curves`) through
`saan-hpo simulate`'s machinery for: synchronous halving (cumulative and
geometric rungs), ASHA, Hyperband and the full grid, each over N shuffled
claim orders. Regret is measured against the best configuration after the
scheduler's own final epoch. The last line compares synchronous halving's
budget with ASHA's spread.

    python bench/budget.py [--curves bench/demo-curves.csv] [--orders 20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from bench.common import write_study  # noqa: E402
from hpo.readers.simulate import simulate  # noqa: E402
from hpo.scheduling.spec import load_spec  # noqa: E402
from hpo.service.learning_curves import LearningCurves  # noqa: E402

# The demo's grid, read from its study file so the curves and the grid never disagree.
GRID = load_spec(Path(__file__).resolve().parent.parent / "studies" / "demo.toml").grid
SCHEDULERS = [  # (label, kind, schedule)
    ("sync-halving cumulative", "sync-halving", "cumulative"),
    ("sync-halving geometric", "sync-halving", "geometric"),
    ("asha geometric", "asha", "geometric"),
    ("hyperband", "hyperband", "geometric"),
    ("full grid (none)", "none", "cumulative"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", default=str(Path(__file__).parent / "demo-curves.csv"))
    parser.add_argument("--orders", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, kind, schedule in SCHEDULERS:
            path = write_study(tmp / f"{kind}-{schedule}.toml", f"budget-{kind}-{schedule}", GRID,
                               kind=kind, schedule=schedule)
            if kind == "none":
                path.write_text(path.read_text() + "epochs = 31\n")
            spec = load_spec(path)
            curves = LearningCurves.load(args.curves, spec)
            spent, regret = [], []
            for order in range(args.orders):
                result = simulate(spec, curves, claim_seed=order, workdir=str(tmp))
                spent.append(result.epochs_spent)
                regret.append(result.regret if result.regret is not None else float("nan"))
            rows[label] = (spec.final_epoch, spent, regret)
            print(f"{label:<24} final epoch {spec.final_epoch:>2}: epochs mean {statistics.mean(spent):6.1f} "
                  f"(min {min(spent)}, max {max(spent)}), regret mean {statistics.mean(regret):.4f} "
                  f"max {max(regret):.4f}, best found {sum(r == 0 for r in regret)}/{len(regret)}",
                  flush=True)
    sync = rows["sync-halving cumulative"][1]
    asha = rows["asha geometric"][1]
    print(f"sync-halving spends {min(sync)}-{max(sync)} epochs in every order; "
          f"ASHA {min(asha)}-{max(asha)}; full grid {rows['full grid (none)'][1][0]}")


if __name__ == "__main__":
    main()
