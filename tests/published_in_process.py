"""``saan-hpo ...`` run in the test process (``hpo.cli.main``) for the published-study tests.

Each process that imports torch and trains costs seconds of start-up, so launches, scoring and
exports whose output these tests only read run here; the checks of a command's own process
(its exit code and what it prints there) keep a real subprocess (studyfiles.cli).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hpo.cli import main

# main replaces the root logger's handlers and sets optuna's logging up (hpo/cli/logs.py).
_LOGGERS = ("", "optuna")


@dataclass
class Done:
    """What ``subprocess.run`` would have returned: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def run_here(capsys, *args) -> Done:
    """``main([...])`` with its output (log lines included) read from ``capsys``; the loggers
    it reconfigures get their handlers, level and propagation back afterwards."""
    saved = [(logging.getLogger(n), list(logging.getLogger(n).handlers), logging.getLogger(n).level,
              logging.getLogger(n).propagate) for n in _LOGGERS]
    capsys.readouterr()  # only this command's output
    try:
        code = main([str(a) for a in args])
    finally:
        for logger, handlers, level, propagate in saved:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
    out = capsys.readouterr()
    return Done(code, out.out, out.err)
