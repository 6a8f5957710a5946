"""One log format for every command, and where each kind of message goes.

- Without ``-v``: saan-hpo's own messages at INFO; other libraries (optuna,
  kaleido, choreographer, ...) only from WARNING up. With ``-v``: everything
  from DEBUG, third parties included.
- Log files, under ``runs/<study>/logs/`` (beside the checkpoint folder), once
  the command's checks have passed:
  ``launch.log``, always written by ``launch`` (its own lines and those of its
  in-process worker), while stderr shows only warnings and errors unless ``-v``
  (the results, and what to run next, are printed on stdout);
  ``worker-PID.log``, one per worker process: a worker started by ``launch``
  writes everything it prints there (:func:`redirect_output`); a ``worker``
  started by hand writes the full log there too, and keeps INFO on stderr off a
  terminal (a cluster job's or container's log), warnings only when it draws
  the progress line on one.

Optuna's own handler (its ``[I 2026-...]`` format) is replaced by ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

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


@contextlib.contextmanager
def log_file(path: Path, quiet_terminal: bool) -> Iterator[Path]:
    """Send the full log to ``path`` (appended) for the duration; with ``quiet_terminal``
    (and without ``-v``) the terminal shows only warnings meanwhile.

    Removed again at the end, so that an in-process caller (``hpo.launch`` from a
    script) does not go on writing one study's lines into another's file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_QuietThirdParties())
    root = logging.getLogger()
    root.addHandler(handler)
    terminal, level = _terminal, _terminal.level if _terminal is not None else logging.NOTSET
    if terminal is not None and quiet_terminal and not _verbose:
        terminal.setLevel(logging.WARNING)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        if terminal is not None:
            terminal.setLevel(level)


ENV_WORKER_LOG_DIR = "SAAN_HPO_WORKER_LOG_DIR"  # set by launch for the workers it starts


def worker_log_path(folder: Path, pid: int) -> Path:
    return Path(folder) / f"worker-{pid}.log"


def redirect_output() -> Path | None:
    """In a worker started by ``launch``: point this process's stdout and stderr (file
    descriptors 1 and 2, so tracebacks and C libraries' output too) at
    ``worker-PID.log`` in the folder launch named, appended. None elsewhere.

    The child does it itself because only it knows its PID before it writes;
    what it printed before (nothing, unless Python itself failed to start) is in
    launch.log, where launch pointed its output.
    """
    folder = os.environ.get(ENV_WORKER_LOG_DIR)
    if not folder:
        return None
    path = worker_log_path(Path(folder), os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    return path
