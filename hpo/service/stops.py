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
kernel sends it PARENT_GONE_SIGNAL (PR_SET_PDEATHSIG); everywhere, the
heartbeat notices that its parent process changed (``parent_gone``) and sends
the same signal to its own process. That signal is a stop request of its own,
never counted as a second one: the kernel sends the parent-death signal again
each time the child is handed on to another thread of the dying launcher (a
launcher with threads gives its children two or more), and the heartbeat may
notice the same death, so a SIGTERM used for it turned one launcher death into
a hard stop that lost every epoch in flight. However many times it comes, the
worker stops as on a first signal; a user's SIGTERM after it is still a
second signal (a hard stop). Those repeats can come late -- a thread of the
dying launcher stuck in a disk write exits after the others -- even after the
worker has finished its stop and put its handlers back; the signal's default
action would then end a worker that stopped cleanly (exit -12), so a process
that asked for it ignores it from then on instead of restoring the default.
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
PARENT_GONE_SIGNAL = signal.SIGUSR2  # the launcher died: a graceful stop, however often it comes
ENV_PARENT_PID = "SAAN_HPO_PARENT_PID"  # set by launch for the workers it supervises
HARD_STOP_EXIT = 3


class StopRequests:
    """Flags set by signals (or by code: tests, a dead parent)."""

    def __init__(self) -> None:
        self.graceful = threading.Event()
        self.hard = threading.Event()
        self.parent_gone = threading.Event()  # the launcher died (told once, see the module doc)
        self.signals = 0
        self.installed = False  # handlers in place: notice_parent_gone may signal this process
        self.parent_death_asked = False  # the kernel may send PARENT_GONE_SIGNAL (die_with_parent)
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

    def request_parent_gone(self, signum: int | None = None) -> None:
        """The launcher is gone: a graceful stop unless one is under way; repeats do nothing."""
        if self.parent_gone.is_set():
            return
        self.parent_gone.set()
        if not self.graceful.is_set():
            self.request(signum if signum is not None else int(PARENT_GONE_SIGNAL))

    def notice_parent_gone(self) -> None:
        """From any thread (the heartbeat): the launcher is gone. With the handlers
        installed this goes through PARENT_GONE_SIGNAL, so it is handled on the main
        thread after any signal being handled there, never racing one."""
        if self.parent_gone.is_set():
            return
        if self.installed:
            os.kill(os.getpid(), PARENT_GONE_SIGNAL)
        else:
            self.request_parent_gone()

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

        def parent_handler(signum, _frame):
            self.request_parent_gone(signum)

        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        previous[HARD_STOP_SIGNAL] = signal.signal(HARD_STOP_SIGNAL, hard_handler)
        previous[PARENT_GONE_SIGNAL] = signal.signal(PARENT_GONE_SIGNAL, parent_handler)
        self.installed = True

        def restore() -> None:
            self.installed = False
            if self.parent_death_asked:  # a late repeat must not end a worker that stopped
                previous[PARENT_GONE_SIGNAL] = signal.SIG_IGN
            for s, h in previous.items():
                signal.signal(s, h)

        return restore


def announce(signum: int) -> None:
    """What a stop signal will do, as one line on stderr (written directly: safe in a handler)."""
    name = signal.Signals(signum).name if signum else "stop"
    try:
        os.write(sys.stderr.fileno(), f"saan-hpo: {name} received\n".encode())
    except (OSError, ValueError):
        pass


def die_with_parent(stops: StopRequests) -> None:
    """Ask the kernel to send PARENT_GONE_SIGNAL when the launching process dies (Linux only;
    call it after ``stops.install()``: the signal's default action ends the process, and
    from now on ``stops``' restore leaves it ignored)."""
    if not os.environ.get(ENV_PARENT_PID) or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(PARENT_GONE_SIGNAL), 0, 0, 0)
        stops.parent_death_asked = True
    except (OSError, AttributeError):  # no libc prctl: parent_gone() still notices
        pass


def parent_gone() -> bool:
    """True when this worker was started by a launcher that has since died."""
    expected = os.environ.get(ENV_PARENT_PID)
    return bool(expected) and os.getppid() != int(expected)
