"""``saan-hpo``: one subcommand per module, each with ``add_arguments`` and ``run``.

Building the parser imports every command module, so each imports the service,
readers, report or trainer it needs inside ``run``: ``saan-hpo status`` does not
pay for torch, nor ``saan-hpo train`` for Optuna (about 1 s each). Bad input
raises a :class:`model.errors.SaanError`; it is printed as one line and the exit
code is 2. The grammar every command shares (study file or ``--study NAME``,
``-v`` anywhere, metavars) lives in ``hpo/cli/options.py``; logging in
``hpo/cli/logs.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from model.errors import SaanError
from hpo.cli.logs import configure_logging
from hpo.cli.options import add_global_options

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "launch": ("hpo.cli.launch", "create or resume a study and run local workers"),
    "worker": ("hpo.cli.worker", "attach one more worker to a study"),
    "status": ("hpo.cli.status", "rungs, trials, workers, budget and ETA of a study"),
    "simulate": ("hpo.cli.simulate", "replay recorded learning curves through a scheduler"),
    "curves": ("hpo.cli.curves", "write a study's learning curves as a CSV for simulate"),
    "export": ("hpo.cli.export", "write the best configuration as a train config"),
    "report": ("hpo.cli.report", "write an HTML report of a study"),
    "train": ("hpo.cli.train", "train one SAAN config, checkpointing every epoch"),
    "evaluate": ("hpo.cli.evaluate", "evaluate a checkpoint on a split"),
    "make-synthetic": ("hpo.cli.make_synthetic", "write a synthetic BAID-shaped folder"),
    "table": ("hpo.cli.table", "test-set comparison table of a study's trials"),
    "refine": ("hpo.cli.refine", "write a continuous study around a grid study's winner"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saan-hpo",
        description="Hyperparameter search for SAAN (artistic image aesthetics) on Optuna: "
                    "successive halving over a grid, workers that attach from any machine.")
    add_global_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_global_options(command, top_level=False)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.run(args) or 0)
    except SaanError as err:
        print(f"saan-hpo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

