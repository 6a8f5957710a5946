"""``saan-hpo refine (STUDY.toml | --study NAME) [--budget EPOCHS] [-o FILE]``.

Writes a hyperband-sync study file whose [space] is one grid step either side
of a finished grid study's winner (log scale for lr), with as many brackets as
the budget buys (default: the grid study's own planned epochs). Launch it as
any study file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from model.errors import SaanError
from hpo.cli.options import add_study_ref, study_ref


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_ref(parser)
    parser.add_argument("--budget", type=int, metavar="N", default=None,
                        help="epochs the new study may spend (default: the grid study's planned epochs)")
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                        help="how each bracket's configurations are drawn (default tpe)")
    parser.add_argument("--seed", type=int, metavar="N", default=0, help="the sampler's seed")
    parser.add_argument("--name", metavar="NAME", default=None,
                        help="the new study's name (default: <study>-refined)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="study file to write (default: runs/<study>/refined.toml)")


def run(args: argparse.Namespace) -> int:
    from hpo.readers.refine import refine_text  # reads the storage: imported when run

    if args.budget is not None and args.budget < 1:
        raise SaanError(f"refine: --budget: expected an integer >= 1, got {args.budget}")
    name, storage = study_ref(args)
    text, summary = refine_text(name, storage, args.budget, args.sampler, args.seed, args.name)
    output = Path(args.output) if args.output else Path("runs") / name / "refined.toml"
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, output)
    space = ", ".join(f"{k} {d.to_mapping()}" for k, d in summary["space"].items())
    print(f"wrote {output}: study {summary['name']!r} around trial {summary['winner']} "
          f"{summary['params']}: {space}; {summary['brackets']} brackets, "
          f"{summary['planned']} epochs planned")
    print(f"next: saan-hpo launch {output}")
    return 0
