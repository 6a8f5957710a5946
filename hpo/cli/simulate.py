"""``saan-hpo simulate STUDY.toml --curves FILE [--json]``: choose eta, rungs and
schedule on recorded curves before spending GPU hours."""

from __future__ import annotations

import argparse
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.toml",
                        help="study file whose grid and scheduler to replay")
    parser.add_argument("--curves", required=True, metavar="FILE",
                        help="CSV: one column per grid axis, then epoch and value")
    parser.add_argument("--order-seed", type=int, default=None, metavar="N",
                        help="claim trials in a shuffled order (default: grid order)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.service.surrogate_curves import load_replay
    from hpo.readers.simulate import simulate
    from hpo.scheduling.spec import load_spec

    spec = load_spec(args.study_file)
    curves = load_replay(args.curves, spec)
    result = simulate(spec, curves, claim_seed=args.order_seed)
    if args.json:
        print(result.to_json_text())
        return 0
    print(f"study {spec.name}: {spec.scheduler.kind}, eta {spec.scheduler.eta}, "
          f"boundaries {spec.boundaries}")
    for rung in result.rungs:
        compared = ", ".join(f"#{c['trial']}={_number(c['value'])}" for c in rung.compared)
        print(f"  rung {rung.rung} @ epoch {rung.epoch}: {len(rung.compared)} compared, "
              f"survivors {rung.survivors}  [{compared}]")
    print(f"epochs spent: {result.epochs_spent} (plan {result.planned_epochs}, "
          f"full grid {result.full_grid_epochs})")
    if result.outside_grid_rows:
        print(f"curve rows outside this grid (ignored): {result.outside_grid_rows}")
    if result.non_finite_values:
        print(f"non-finite values in the grid's curves (rank last at their rung): "
              f"{result.non_finite_values}")
    # a space study's configurations are the ones its brackets drew, not a grid
    where = "of the configurations drawn" if spec.sampled else "in full grid"
    print(f"best {where}: {result.best} = {_number(result.best_value)}")
    if result.winner is None:
        print("winner: none (no trial completed)")
    else:
        print(f"winner: {result.winner} = {_number(result.winner_value)}, "
              f"regret {_number(result.regret)}")
    return 0


def _number(value: float | None) -> str:
    """A value as printed: 4 decimals, or non-finite (NaN, inf, or stored as NULL)."""
    if value is None or not math.isfinite(value):
        return "non-finite"
    return f"{value:.4f}"
