"""Which study a free worker serves next, when one worker pool serves several studies.

A pure function of where each study stands, so the rule is testable without a
database and the service (hpo/service/fleet_worker.py) only gathers the
numbers. The order, from the issue that asked for it:

1. higher ``[study] priority`` first (default 0);
2. then the study furthest behind its fair share of epochs. A study's fair
   share is proportional to its plan: every unfinished study of the same
   priority should have the same fraction of its planned epochs committed, so
   the one with the lowest fraction is furthest behind. Committed epochs are
   those trained plus those promised to stints in flight (a claimed trial's
   ``target_epoch - epochs_done``); counting only trained epochs would send
   every worker that starts at once to the same study;
3. then the study whose next claimable trial has the lowest number, then by
   name, so the order is total and the same on every worker.

Only *which study* is chosen here. Which trial of that study is claimed stays
the study's own rule (hpo/service/coordination.py: highest rung first, then
lowest number), and each study's rung decisions depend only on its own trials'
values, so serving studies together changes no study's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class StudyLoad:
    """One unfinished study, as the claim rule sees it."""

    name: str
    priority: int
    planned_epochs: int
    committed_epochs: int  # trained, plus what claimed stints still have to train
    next_trial: int | None  # lowest claimable trial number; None: nothing claimable now

    @property
    def progress(self) -> float:
        """Fraction of the plan committed (may pass 1 when trials are retrained)."""
        return self.committed_epochs / max(1, self.planned_epochs)


def claim_order(loads: Sequence[StudyLoad]) -> list[str]:
    """Names of the studies with claimable work, in the order a free worker tries them."""
    ready = [load for load in loads if load.next_trial is not None]
    ready.sort(key=lambda s: (-s.priority, s.progress, s.next_trial, s.name))
    return [load.name for load in ready]
