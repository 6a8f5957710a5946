"""``saan-hpo ...`` called in the test process (``hpo.cli.main``), for checks of values that do
not need a process of their own: each process that imports torch costs seconds of start-up."""

from __future__ import annotations

import logging

from hpo.cli import main


def in_process(*args) -> int:
    """``main([...])``'s exit code; the root logger's handlers and level, which main replaces
    (hpo/cli/logs.py), are put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main([str(a) for a in args])
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
