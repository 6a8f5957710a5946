"""Options shared by the study commands: study file, storage, replay, ``--data synthetic``."""

from __future__ import annotations

import argparse
import dataclasses
import os

from model.config import ConfigError
from hpo.scheduling.spec import StudySpec, load_spec
from hpo.scheduling.synthetic_twin import DEFAULT_EPOCHS, synthetic_override
from hpo.service.learning_curves import LearningCurves


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


def add_study_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, metavar="NAME", help="study name")
    parser.add_argument("--storage", required=True, metavar="URL", help="storage URL")


STORAGE_ENV = "SAAN_HPO_STORAGE"


def study_spec(args: argparse.Namespace) -> StudySpec:
    """The study file after ``--data``, its storage and artifacts resolved (:func:`apply_data_option`)."""
    return apply_data_option(args, load_spec(args.study_file))


def replay_curves(args: argparse.Namespace, spec: StudySpec):
    if not getattr(args, "replay_curves", None):
        return None
    return LearningCurves.load(args.replay_curves, spec)


# ---- --data synthetic, shared by launch and worker ---------------------------------
def add_data_option(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("small runs (CI, laptops)")
    group.add_argument("--data", choices=("study", "synthetic"), default="study",
                       help="synthetic: run the study as <name>-synthetic on tiny synthetic data "
                            "with a resnet18 SAAN (default: the study file's data)")
    group.add_argument("--epochs", type=int, default=None, metavar="N",
                       help=f"with --data synthetic: epochs per configuration (default {DEFAULT_EPOCHS})")


def apply_data_option(args: argparse.Namespace, spec: StudySpec) -> StudySpec:
    """``spec`` after ``--data`` (its synthetic twin, or itself), with storage and artifacts
    resolved for that name: flags, then $SAAN_HPO_STORAGE, then the study's own.

    launch hands its URL to child workers through the environment, so a
    password in it never shows in a process list.
    """
    if getattr(args, "data", "study") == "synthetic":
        spec = synthetic_override(spec, DEFAULT_EPOCHS if args.epochs is None else args.epochs)
    elif getattr(args, "epochs", None) is not None:
        raise ConfigError(spec.source, "--epochs", "only with --data synthetic")
    return dataclasses.replace(spec, storage=args.storage or os.environ.get(STORAGE_ENV) or spec.storage,
                               artifacts=args.artifacts or spec.artifacts)


def data_option_argv(args: argparse.Namespace) -> list[str]:
    """The same ``--data``/``--epochs`` for a child worker's command line."""
    if getattr(args, "data", "study") != "synthetic":
        return []
    argv = ["--data", "synthetic"]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    return argv
