"""``saan-hpo simulate STUDY.toml --curves FILE [--json]``: choose eta, rungs and
schedule on recorded curves before spending GPU hours."""

from __future__ import annotations

import argparse
import json


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
    from hpo.service.learning_curves import LearningCurves
    from hpo.readers.simulate import simulate
    from hpo.scheduling.spec import load_spec

    spec = load_spec(args.study_file)
    curves = LearningCurves.load(args.curves, spec)
    result = simulate(spec, curves, claim_seed=args.order_seed)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"study {spec.name}: {spec.scheduler.kind}, eta {spec.scheduler.eta}, "
          f"boundaries {spec.boundaries}")
    for rung in result.rungs:
        compared = ", ".join(f"#{c['trial']}={c['value']:.4f}" for c in rung.compared)
        print(f"  rung {rung.rung} @ epoch {rung.epoch}: {len(rung.compared)} compared, "
              f"survivors {rung.survivors}  [{compared}]")
    print(f"epochs spent: {result.epochs_spent} (plan {result.planned_epochs}, "
          f"full grid {result.full_grid_epochs})")
    print(f"best in full grid: {result.best} = {result.best_value:.4f}")
    if result.winner is None:
        print("winner: none (no trial completed)")
    else:
        print(f"winner: {result.winner} = {result.winner_value:.4f}, regret {result.regret:.4f}")
    return 0
