"""Arguments and helpers shared by the study commands."""

from __future__ import annotations

import argparse
import os

from hpo.spec import StudySpec, load_spec


def add_study_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.toml", help="study file (see studies/)")
    parser.add_argument("--storage", metavar="URL",
                        help="storage URL (default: the study file's, else sqlite:///runs/NAME/study.db)")
    parser.add_argument("--artifacts", metavar="DIR",
                        help="checkpoint store directory, shared by all workers (default: the study file's)")


def add_replay(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("replay (tests, benchmarks: train nothing)")
    group.add_argument("--replay-curves", metavar="CSV",
                       help="replay recorded learning curves instead of training SAAN")
    group.add_argument("--replay-epoch-seconds", type=float, default=0.0, metavar="S",
                       help="sleep this long per replayed epoch")
    group.add_argument("--claim-seed", type=int, default=None, help=argparse.SUPPRESS)


def add_study_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, metavar="NAME", help="study name")
    parser.add_argument("--storage", required=True, metavar="URL", help="storage URL")


STORAGE_ENV = "SAAN_HPO_STORAGE"


def resolve_spec(args: argparse.Namespace) -> tuple[StudySpec, str, str]:
    """Spec, storage URL and artifact store: flags, then $SAAN_HPO_STORAGE, then the file.

    launch hands its URL to child workers through the environment, so a
    password in it never shows in a process list.
    """
    spec = load_spec(args.study_file)
    storage = args.storage or os.environ.get(STORAGE_ENV) or spec.storage
    return spec, storage, args.artifacts or spec.artifacts


def replay_curves(args: argparse.Namespace, spec: StudySpec):
    if not getattr(args, "replay_curves", None):
        return None
    from hpo.objective import LearningCurves

    return LearningCurves.load(args.replay_curves, spec)
