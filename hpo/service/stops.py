"""Stop requests: what SIGTERM / SIGINT mean to a worker or a launcher.

The handlers only set flags; the code that owns the work decides at safe
points what a flag means, so a signal never lands inside a database write or a
checkpoint write (Python would otherwise raise KeyboardInterrupt wherever the
main thread happens to be).

* The first signal is a **graceful** stop: the epoch in flight finishes, is
  checkpointed and recorded, the trial is released, the process exits 0.
* A second signal is a **hard** stop: training stops at the next batch
  boundary, the epoch in flight is abandoned, the trial is released (resumable
  from its last durable checkpoint) and the process exits non-zero.

``launch`` forwards a hard stop to its workers as SIGUSR1 (HARD_STOP_SIGNAL),
never as a second SIGTERM: Unix does not queue a signal that is already
pending, so two SIGTERMs sent close together -- while a worker is busy in C
code, importing torch or building a trainer -- can reach it as one.

A worker started by ``launch`` also stops gracefully when its launcher dies
(SIGKILL included), so no worker is ever left unsupervised: on Linux the
kernel sends it SIGTERM (PR_SET_PDEATHSIG); everywhere, the heartbeat notices
that its parent process changed (``parent_gone``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HARD_STOP_SIGNAL = signal.SIGUSR1  # a hard stop in one signal (what launch forwards second)
ENV_PARENT_PID = "SAAN_HPO_PARENT_PID"  # set by launch for the workers it supervises
HARD_STOP_EXIT = 3


class StopRequests:
    """Flags set by signals (or by code: tests, a dead parent)."""

    def __init__(self) -> None:
        self.graceful = threading.Event()
        self.hard = threading.Event()
        self.signals = 0
        self._on_signal: list[Callable[[int], None]] = []

    def request(self, signum: int | None = None) -> None:
        """One stop request: the first is graceful, any later one hard."""
        self.signals += 1
        if self.graceful.is_set():
            self.hard.set()
        self.graceful.set()
        for callback in self._on_signal:
            callback(signum or 0)

    def request_hard(self, signum: int | None = None) -> None:
        """A hard stop at once, whether or not a graceful one came first."""
        if not self.graceful.is_set():
            self.signals += 1
            self.graceful.set()
        self.request(signum)

    def on_signal(self, callback: Callable[[int], None]) -> None:
        """Also call ``callback(signum)`` (it must only set flags or write a line)."""
        self._on_signal.append(callback)

    def install(self) -> Callable[[], None]:
        """Handle SIGTERM, SIGINT and HARD_STOP_SIGNAL in this (main) thread; returns a
        function restoring the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, _frame):
            self.request(signum)

        def hard_handler(signum, _frame):
            self.request_hard(signum)

        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        previous[HARD_STOP_SIGNAL] = signal.signal(HARD_STOP_SIGNAL, hard_handler)
        return lambda: [signal.signal(s, h) for s, h in previous.items()]


def announce(signum: int) -> None:
    """What a stop signal will do, as one line on stderr (written directly: safe in a handler)."""
    name = signal.Signals(signum).name if signum else "stop"
    try:
        os.write(sys.stderr.fileno(), f"saan-hpo: {name} received\n".encode())
    except (OSError, ValueError):
        pass


def die_with_parent() -> None:
    """Ask the kernel to send SIGTERM when the launching process dies (Linux only)."""
    if not os.environ.get(ENV_PARENT_PID) or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: parent_gone() still notices
        pass


def parent_gone() -> bool:
    """True when this worker was started by a launcher that has since died."""
    expected = os.environ.get(ENV_PARENT_PID)
    return bool(expected) and os.getppid() != int(expected)
