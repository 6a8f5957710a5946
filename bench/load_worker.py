"""One fleet worker of bench/load.py, timing its claims and lease renewals from outside.

    python bench/load_worker.py TIMINGS GO -- worker --storage URL --replay-curves CSV ...

Runs the real ``saan-hpo`` command line (``hpo.cli.main``) with
``Coordinator.claim`` and ``Coordinator.renew`` wrapped in a timer, so the
service carries no benchmark code. Each call appends one line to TIMINGS:
``claim SECONDS GOT TAKEOVER`` or ``renew SECONDS HELD`` (1/0 flags), written
at once, so a worker SIGKILLed by the benchmark loses at most the call in
flight. The imports come first and the worker then waits for the file GO to
exist: 64 processes importing Optuna on a few cores take a minute, and the
benchmark measures the fleet at work, not its start-up (TIMINGS is created once
the imports are done, which bench/load.py waits for; a replacement started
after a kill finds GO there and starts at once, as a restarted node would).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Everything the worker command imports, before the barrier.
import hpo.cli  # noqa: E402
import hpo.cli.worker  # noqa: E402,F401
import hpo.service.fleet_worker  # noqa: E402,F401
import hpo.service.learning_curves  # noqa: E402,F401
import hpo.service.trial_runs  # noqa: E402,F401
from hpo.service.coordination import Coordinator  # noqa: E402

POLL_SECONDS = 0.05


class Timings:
    """Appends one line per call; the heartbeat thread and the main thread both call."""

    def __init__(self, path: str):
        self.file = open(path, "a", buffering=1)  # line-buffered: each line written at once
        self.lock = threading.Lock()

    def write(self, *fields) -> None:
        with self.lock:
            self.file.write(" ".join(map(str, fields)) + "\n")


def timed(timings: Timings) -> None:
    claim, renew = Coordinator.claim, Coordinator.renew

    def timed_claim(self, *args, **kwargs):
        started = time.perf_counter()
        got = claim(self, *args, **kwargs)
        timings.write("claim", f"{time.perf_counter() - started:.6f}", int(got is not None),
                      int(got is not None and got.takeover))
        return got

    def timed_renew(self, *args, **kwargs):
        started = time.perf_counter()
        held = renew(self, *args, **kwargs)
        timings.write("renew", f"{time.perf_counter() - started:.6f}", int(held))
        return held

    Coordinator.claim, Coordinator.renew = timed_claim, timed_renew


def main(argv: list[str]) -> int:
    timings_path, go, separator, *command = argv
    if separator != "--" or not command:
        print("usage: load_worker.py TIMINGS GO -- worker ARGS...", file=sys.stderr)
        return 2
    timed(Timings(timings_path))  # creates the file: this worker has imported (bench/load.py waits)
    while not os.path.exists(go):
        time.sleep(POLL_SECONDS)
    return hpo.cli.main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
