"""Synchronous successive halving (kind ``sync-halving``, the default), decided in memory.

Algorithm. ``n`` configurations enter rung 0. A trial trains to its rung's
boundary (``boundaries[k]`` cumulative epochs, see hpo/scheduling/rungs.py) and
waits there (``PAUSE``). When every trial of the rung's cohort that has not
failed waits at the boundary, the rung is decided, once: the best
``max(1, n // eta)`` are promoted to rung ``k + 1`` (ties broken by the lower
trial number, NaN last, so the verdict depends only on the reported values, never
on arrival order or the number of workers) and the others are pruned at that
epoch; at the last rung everyone has trained the full budget and completes.
With ``rungs`` larger than the grid can halve, the single survivor goes on
alone until the last rung.

>>> policy = SyncHalving(kind="sync-halving", eta=2, rungs=3, min_epochs=1,
...                      schedule="cumulative", direction="maximize")
>>> policy.boundaries
(1, 3, 7)
>>> cohort = [RungMember(n, v, epochs_done=1, paused=True) for n, v in enumerate([.2, .9, .5, .9])]
>>> verdict = policy.decide_rung(0, cohort)
>>> verdict.promote, verdict.prune, verdict.next_rung, verdict.next_target
((1, 3), (0, 2), 1, 3)
>>> policy.decide_rung(0, cohort[:3] + [RungMember(3, None, epochs_done=0, paused=False)]) is None
True
>>> policy.planned_epochs(4)   # 4*1 + 2*2 + 1*4
12
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from hpo.scheduling.halving import HalvingPolicy, synchronous_verdict
from hpo.scheduling.policy import (PAUSE, LadderEntry, LadderRung, RungMember, RungVerdict)
from hpo.scheduling.rungs import RungDecision, planned_epochs


@dataclass(frozen=True)
class SyncHalving(HalvingPolicy):
    direction: str = "maximize"

    plan_is_exact = True
    pauses_at_rungs = True

    def first_target(self) -> int:
        return self.boundaries[0]

    def at_target(self) -> str:
        return PAUSE

    def decide_rung(self, rung: int, cohort: Sequence[RungMember]) -> RungVerdict | None:
        boundaries = self.boundaries
        following = boundaries[rung + 1] if rung + 1 < len(boundaries) else None
        return synchronous_verdict(rung, boundaries[rung], cohort, self.eta, self.direction, following)

    def planned_epochs(self, n_trials: int) -> int:
        return planned_epochs(n_trials, self.eta, self.boundaries)

    def history(self, stored, reported) -> list[RungDecision]:
        """The stored decisions: this kind records every verdict."""
        return list(stored)

    def ladder(self, history, values, states) -> list[LadderRung]:
        """Decided rungs as stored; a rung still filling up lists who waits there."""
        last = len(self.boundaries) - 1
        rungs: dict[int, LadderRung] = {}
        for record in history:
            kept = "finished" if record.rung == last else "survived"
            rungs[record.rung] = LadderRung(record.rung, record.epoch, True, [
                LadderEntry(n, v, kept if n in record.survivors else "pruned")
                for n, v in sorted(record.values.items())])
        for k, boundary in enumerate(self.boundaries):
            waiting = [LadderEntry(n, values[n][boundary], "pending")
                       for n in sorted(values) if boundary in values[n]]
            if k not in rungs and waiting:
                rungs[k] = LadderRung(k, boundary, False, waiting)
        return [rungs[k] for k in sorted(rungs)]
