"""The demo's rung cuts and how far apart they are, from recorded learning curves.

A synchronous-halving cut keeps the best 1/eta of the trials at a boundary; its
*margin* is the gap between the worst trial kept and the best trial cut. A cut
whose margin is smaller than the differences between CPU kernels (AVX2 against
AVX-512, see README "Reproducibility") can go either way on another machine;
this script shows which cuts are safe. With two CSVs (the same study run on two
machines, or with forced AVX2 kernels) it also prints the largest difference of
any shared (configuration, epoch) value: the cross-machine noise.

    python bench/demo_margins.py [--study studies/demo.toml] [CURVES.csv [OTHER.csv]]

CURVES.csv is a full-grid recording (default bench/demo-curves.csv) or the
output of ``saan-hpo curves --study demo`` for one run (only the survivors'
epochs: enough, since a cut only compares the trials that reached it).
The decisions use the service's own ranking (hpo/scheduling/rungs.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpo.scheduling.rungs import decide_rung, rank  # noqa: E402
from hpo.scheduling.spec import load_spec  # noqa: E402
from hpo.service.learning_curves import LearningCurves  # noqa: E402

HERE = Path(__file__).resolve().parent


def cuts(spec, curves: LearningCurves) -> tuple[list[dict], int]:
    """One row per cut (boundary, kept, margin, ...) and the winner's trial number."""
    points = spec.grid_points()
    alive = list(range(len(points)))
    rows = []
    boundaries = spec.boundaries
    for rung, epoch in enumerate(boundaries):
        last = rung == len(boundaries) - 1
        values = {n: curves.curve(points[n]).get(epoch) for n in alive}
        decision = decide_rung(rung, epoch, values, spec.scheduler.eta, spec.direction, last)
        if not last:
            # survivors are best first; the best cut trial is the first of the rest by rank
            worst_kept = values[decision.survivors[-1]]
            best_cut = values[rank({n: values[n] for n in decision.pruned}, spec.direction)[0]]
            rows.append({"epoch": epoch, "trials": len(alive), "kept": len(decision.survivors),
                         "survivors": sorted(decision.survivors),
                         "worst_kept": worst_kept, "best_cut": best_cut,
                         "margin": abs(worst_kept - best_cut)})
        alive = list(decision.survivors)
    return rows, alive[0]


def noise(spec, a: LearningCurves, b: LearningCurves) -> float:
    """The largest difference between two recordings' values of a shared (configuration, epoch)."""
    worst = 0.0
    for params in spec.grid_points():
        ca, cb = a.curve(params), b.curve(params)
        for epoch in set(ca) & set(cb):
            worst = max(worst, abs(ca[epoch] - cb[epoch]))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="*", default=[str(HERE / "demo-curves.csv")])
    parser.add_argument("--study", default=str(HERE.parent / "studies" / "demo.toml"))
    args = parser.parse_args(argv)
    spec = load_spec(args.study)
    recordings = [LearningCurves.load(path, spec) for path in args.curves]
    for path, curves in zip(args.curves, recordings):
        rows, winner = cuts(spec, curves)
        print(f"{path}:")
        for row in rows:
            print(f"  cut at epoch {row['epoch']:>2}: {row['trials']:>2} -> {row['kept']:>2} trials, "
                  f"worst kept {row['worst_kept']:.4f}, best cut {row['best_cut']:.4f}, "
                  f"margin {row['margin']:.4f}")
        params = spec.grid_points()[winner]
        final = curves.curve(params).get(spec.final_epoch)
        print(f"  winner: trial {winner} {params} {spec.metric} {final:.4f} after "
              f"{spec.final_epoch} epochs; smallest margin {min(r['margin'] for r in rows):.4f}")
    if len(recordings) == 2:
        measured = noise(spec, *recordings)
        smallest = min(r["margin"] for curves in recordings for r in cuts(spec, curves)[0])
        print(f"cross-recording noise (largest difference of a shared value): {measured:.4f}; "
              f"smallest margin {smallest:.4f} = {smallest / measured:.0f} x the noise"
              if measured else "cross-recording noise: none (the recordings are equal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
