"""``saan-hpo export --study NAME --storage URL -o best.toml [--evaluate]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hpo.cli.options import add_study_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_name(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE.toml")
    parser.add_argument("--evaluate", action="store_true",
                        help="load the winner's checkpoint (or retrain it) and score the test split")
    parser.add_argument("--artifacts", metavar="DIR", help="checkpoint store (default: the study's)")
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.export import evaluate_winner, export_text, winner

    spec, best = winner(args.study, args.storage)
    scores = None
    if args.evaluate:
        scores = evaluate_winner(spec, args.storage, best, artifacts=args.artifacts, device=args.device)
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)))
    text = export_text(spec, best, args.storage, scores)
    # Write beside, then rename: a failed export never leaves half a file.
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, output)
    print(f"wrote {output}: trial {best.number} {best.params} {spec.metric}={best.value:.4f}")
    return 0
