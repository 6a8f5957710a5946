"""Break five core rules by hand, one at a time, and show which test catches each.

    python bench/mutations.py            # all five, about 3 minutes on 2 cores
    python bench/mutations.py M1 M5      # some of them

Each mutation replaces one exact piece of the source (it must match once, so a moved
line fails here instead of silently testing nothing), runs the tests named for it with
``pytest -x -n0``, and puts the file back whatever happens. A rule is "caught" when
pytest fails; the failing test is printed. Not a test itself: the suite proves the rules
hold, this script proves the suite would notice if one stopped holding.

The mutated file is restored from its text as read before the change (uncommitted edits
survive). M3 and M4 start real workers: run it with nothing else heavy on the machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    key: str
    rule: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("M1", "ties are broken by trial number (lower first)", "hpo/scheduling/rungs.py",
             "return (0, sign * value, number)", "return (0, sign * value, -number)",
             ("tests/test_rungs.py", "tests/test_policies.py")),
    Mutation("M2", "the blog grid's plan is 80 epochs", "hpo/scheduling/rungs.py",
             "total += size * (boundary - previous)", "total += size * (boundary - previous) + 1",
             ("tests/test_demo_study.py::test_every_shipped_study_file_validates", "tests/test_rungs.py")),
    Mutation("M3", "a value reaches Optuna only after its checkpoint is durable", "hpo/service/worker.py",
             "        checkpoint = worker.checkpoints.save(number, epoch, self.trial_run.snapshot_bytes(snapshot))\n"
             "        self._report(epoch, value, metrics)\n",
             "        self._report(epoch, value, metrics)\n"
             "        checkpoint = worker.checkpoints.save(number, epoch, self.trial_run.snapshot_bytes(snapshot))\n",
             ("tests/test_bad_places.py::test_no_value_reaches_optuna_before_its_checkpoint_is_durable",)),
    Mutation("M4", "a first stop signal releases the trial, never fails it", "hpo/service/worker.py",
             "        if ended in (ABORTED, STOPPED):\n",
             "        if ended == STOPPED:\n            ended = FAILED\n        if ended in (ABORTED, STOPPED):\n",
             ("tests/test_stops.py",)),
    Mutation("M5", "a non-finite value ranks last", "hpo/scheduling/rungs.py",
             "return (1, 0.0, number)", "return (-1, 0.0, number)",
             ("tests/test_rungs.py", "tests/test_policies.py")),
)


def run(mutation: Mutation) -> tuple[bool, str, float]:
    path = ROOT / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"bench/mutations.py: {mutation.key}: {mutation.path} no longer holds the "
                         f"piece to change exactly once: update the mutation")
    started = time.monotonic()
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-n0", "-p", "no:cacheprovider",
                               *mutation.tests], cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        path.write_text(original)
    failed = re.findall(r"^FAILED (\S+)", done.stdout, re.M)
    return done.returncode == 1 and bool(failed), (failed[0] if failed else "(none)"), time.monotonic() - started


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or m.key in argv]
    missed = 0
    for mutation in chosen:
        caught, test, seconds = run(mutation)
        missed += not caught
        print(f"{mutation.key} {'caught' if caught else 'MISSED'} in {seconds:.0f} s: {mutation.rule}\n"
              f"   broken in {mutation.path}; failing test: {test}", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} broken rules caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
