"""One log format for every command, and where each kind of message goes.

- Without ``-v``: saan-hpo's own messages at INFO; other libraries (optuna,
  kaleido, choreographer, ...) only from WARNING up. With ``-v``: everything
  from DEBUG, third parties included.
- On a terminal with a progress line (``launch``, ``worker``), the terminal
  shows only warnings (everything with ``-v``) and the full INFO log, per-epoch
  lines included, goes to a file under ``runs/<study>/logs/``
  (``attach_log_file``). Elsewhere (pipes, files, tests, launch's child
  workers) stderr *is* the log and gets it all.

Optuna's own handler (its ``[I 2026-...]`` format) is replaced by ours.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OWN_LOGGERS = ("hpo", "model", "__main__")

_terminal: logging.Handler | None = None
_verbose = False


class _QuietThirdParties(logging.Filter):
    """Other libraries' records pass from WARNING up, unless -v."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _verbose or record.levelno >= logging.WARNING:
            return True
        return record.name.split(".")[0] in OWN_LOGGERS


class _AboveProgressLine(logging.StreamHandler):
    """stderr, written through tqdm so a message never breaks the progress line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def configure_logging(verbose: bool) -> None:
    global _terminal, _verbose
    _verbose = verbose
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _terminal = _AboveProgressLine(sys.stderr)
    _terminal.setFormatter(logging.Formatter(FORMAT))
    _terminal.addFilter(_QuietThirdParties())
    root.addHandler(_terminal)
    try:
        import optuna.logging as optuna_logging
    except ImportError:  # pragma: no cover - optuna is a dependency
        return
    optuna_logging.disable_default_handler()
    optuna_logging.enable_propagation()
    optuna_logging.set_verbosity(logging.DEBUG if verbose else logging.INFO)


def attach_log_file(path: Path) -> Path:
    """Send the full log to ``path`` (appended) and keep only warnings on the terminal.

    Called once a progress line is drawn: the line is the terminal's picture
    of the run, the file keeps every epoch.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_QuietThirdParties())
    logging.getLogger().addHandler(handler)
    if _terminal is not None and not _verbose:
        _terminal.setLevel(logging.WARNING)
    return path
