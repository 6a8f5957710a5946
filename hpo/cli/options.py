"""The CLI grammar shared by every command: which study, where it is stored, small runs.

- ``add_global_options``: ``-v``, accepted before or after the subcommand;
- ``add_study_file`` (launch, worker): a study file, ``--storage URL``, ``--artifacts DIR``;
- ``add_study_ref`` / ``study_ref`` (status, report, export, curves, table): the study
  file *or* ``--study NAME``; storage defaults to the study's own
  (``sqlite:///runs/NAME/study.db``), ``--storage URL`` overrides it;
- ``add_data_option`` / ``apply_data_option`` (launch, worker): ``--data synthetic``;
- ``add_replay`` (launch, worker): replayed learning curves instead of training.

Metavars name the kind of value: FILE, DIR, URL, NAME, N, SECONDS, DEVICE.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from model.config import ConfigError
from model.errors import SaanError
from hpo.scheduling.spec import StudySpec, default_storage, load_spec
from hpo.scheduling.synthetic_twin import synthetic_override

STORAGE_ENV = "SAAN_HPO_STORAGE"
METAVARS = {"FILE", "DIR", "URL", "NAME", "N", "SECONDS", "FRACTION", "DEVICE", "STUDY.toml"}


# ---- global options ---------------------------------------------------------------
def add_global_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """``-v`` on the top-level parser and again on every subcommand.

    On a subcommand the default is SUPPRESS, so ``saan-hpo -v status`` is not
    undone by the subcommand's own (absent) ``-v``.
    """
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if top_level else argparse.SUPPRESS,
                        help="debug logging, per-epoch lines on the terminal and "
                             "third-party libraries' messages")


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--device", metavar="DEVICE", default=None,
                        help=f"cpu, cuda or cuda:K for {what} (default: the trainer config's)")


# ---- a study file (launch, worker) -----------------------------------------------------
def add_study_file(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:
        parser.add_argument("study_file", metavar="STUDY.toml", nargs="?",
                            help="study file (see studies/); without one, serve the storage's studies")
    else:
        parser.add_argument("study_file", metavar="STUDY.toml", help="study file (see studies/)")
    parser.add_argument("--storage", metavar="URL",
                        help="storage URL (default: the study file's, else sqlite:///runs/NAME/study.db)")
    parser.add_argument("--artifacts", metavar="DIR",
                        help="checkpoint store directory, shared by all workers (default: the study file's)")


def storage_option(args: argparse.Namespace) -> str | None:
    """``--storage URL`` as given, None when left out; an empty one is refused (it would
    otherwise silently mean the study's own storage)."""
    value = getattr(args, "storage", None)
    if value is not None and not value.strip():
        from hpo.service.db import URL_EXAMPLES  # imports Optuna: only on this error

        raise SaanError(f"--storage: empty URL (expected e.g. {URL_EXAMPLES}; leave --storage "
                        "out for the study's own storage)")
    return value


def study_spec(args: argparse.Namespace) -> StudySpec:
    """The study file after ``--data``, its storage and artifacts resolved (:func:`apply_data_option`)."""
    return apply_data_option(args, load_spec(args.study_file))


# ---- a stored study (status, report, export, curves, table) ---------------------------
def add_study_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", nargs="?", metavar="STUDY.toml",
                        help="the study file (or give --study NAME)")
    parser.add_argument("--study", metavar="NAME",
                        help="study name, instead of the study file")
    parser.add_argument("--storage", metavar="URL",
                        help="storage URL (default: the study file's storage, or "
                             "sqlite:///runs/NAME/study.db with --study)")


def study_ref(args: argparse.Namespace) -> tuple[str, str]:
    """(study name, storage URL) from the study file or ``--study NAME``."""
    if args.study_file and args.study:
        raise SaanError("give the study file or --study NAME, not both")
    storage = storage_option(args)
    if args.study_file:
        spec = load_spec(args.study_file)
        return spec.name, storage or spec.storage
    if args.study:
        return args.study, storage or default_storage(args.study)
    raise SaanError("expected the study file (STUDY.toml) or --study NAME")


# ---- replay ------------------------------------------------------------------------------
def add_replay(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("replay (tests, benchmarks: train nothing)")
    group.add_argument("--replay-curves", metavar="FILE",
                       help="replay recorded learning curves (CSV) instead of training SAAN")
    group.add_argument("--replay-epoch-seconds", type=float, default=0.0, metavar="SECONDS",
                       help="sleep this long per replayed epoch (default 0)")
    group.add_argument("--replay-gang-efficiency", type=float, default=1.0, metavar="FRACTION",
                       help="with [study] data_parallel: a gang of k replay workers sleeps "
                            "SECONDS / (k x FRACTION) per epoch (default 1.0: a perfect speed-up)")


def replay_argv(args: argparse.Namespace) -> list[str]:
    """The replay options for a worker that launch starts."""
    return ["--replay-curves", args.replay_curves,
            "--replay-epoch-seconds", str(args.replay_epoch_seconds),
            "--replay-gang-efficiency", str(getattr(args, "replay_gang_efficiency", 1.0))]


def replay_curves(args: argparse.Namespace, spec: StudySpec):
    if not getattr(args, "replay_curves", None):
        return None
    from hpo.service.surrogate_curves import load_replay  # imported when replaying only

    return load_replay(args.replay_curves, spec)


# ---- --data synthetic, shared by launch and worker ---------------------------------
def add_data_option(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("small runs (CI, laptops)")
    group.add_argument("--data", choices=("study", "synthetic"), default="study",
                       help="synthetic: run the study as <name>-synthetic on tiny synthetic data "
                            "with a resnet18 SAAN, same grid and rung ladder (default: the study "
                            "file's data)")
    group.add_argument("--epochs", type=int, default=None, metavar="N",
                       help="with --data synthetic: at most N epochs per configuration, keeping "
                            "the rungs that fit (default: all the study's rung ladder needs)")
    group.add_argument("--name", metavar="NAME", default=None,
                       help="with --data synthetic: the twin's study name (default <name>-synthetic)")


def apply_data_option(args: argparse.Namespace, spec: StudySpec) -> StudySpec:
    """``spec`` after ``--data`` (its synthetic twin, or itself), with storage and artifacts
    resolved for that name: flags, then $SAAN_HPO_STORAGE, then the study's own.

    launch hands its URL to child workers through the environment, so a
    password in it never shows in a process list.
    """
    if getattr(args, "data", "study") == "synthetic":
        spec = synthetic_override(spec, args.epochs, getattr(args, "name", None))
    else:
        for flag, value in (("--epochs", getattr(args, "epochs", None)),
                            ("--name", getattr(args, "name", None))):
            if value is not None:
                raise ConfigError(spec.source, flag, "only with --data synthetic")
    storage = storage_option(args)
    return dataclasses.replace(spec, storage=storage or os.environ.get(STORAGE_ENV) or spec.storage,
                               artifacts=getattr(args, "artifacts", None) or spec.artifacts)


def data_option_argv(args: argparse.Namespace) -> list[str]:
    """The same ``--data``/``--epochs``/``--name`` for a child worker's command line."""
    if getattr(args, "data", "study") != "synthetic":
        return []
    argv = ["--data", "synthetic"]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if getattr(args, "name", None):
        argv += ["--name", args.name]
    return argv
