"""``saan-hpo export (STUDY.toml | --study NAME) [--storage URL] [-o FILE] [--evaluate]``.

Writes the winner as a train config, by default to runs/<study>/best.toml.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hpo.cli.options import add_device_option, add_study_ref, study_ref


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_ref(parser)
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="train config to write (default: runs/<study>/best.toml)")
    parser.add_argument("--evaluate", action="store_true",
                        help="load the winner's checkpoint (or retrain it) and score the test split")
    parser.add_argument("--artifacts", metavar="DIR", help="checkpoint store (default: the study's)")
    add_device_option(parser, "--evaluate")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.readers.export import evaluate_winner, export_text, winner

    name, storage = study_ref(args)
    spec, best = winner(name, storage)
    scores = None
    if args.evaluate:
        scores = evaluate_winner(spec, storage, best, artifacts=args.artifacts, device=args.device)
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)))
    text = export_text(spec, best, storage, scores)
    # Write beside, then rename: a failed export never leaves half a file.
    output = Path(args.output) if args.output else Path("runs") / name / "best.toml"
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, output)
    print(f"wrote {output}: trial {best.number} {best.params} {spec.metric}={best.value:.4f}")
    if scores is not None:  # the report shows them beside the published winner's
        from hpo.readers.stored_scores import store_export_scores

        store_export_scores(storage, name, best.number, scores)  # the study's, resolved
    return 0
