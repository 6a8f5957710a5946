"""What the halving kinds share: eta, rungs, a schedule and where their rungs sit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hpo.scheduling.policy import Policy, RungMember, RungVerdict
from hpo.scheduling.rungs import decide_rung, rung_epochs, rungs_within


@dataclass(frozen=True)
class HalvingPolicy(Policy):
    kind: str
    eta: int
    rungs: int
    min_epochs: int
    schedule: str  # cumulative | geometric (hpo/scheduling/rungs.py)

    @property
    def boundaries(self) -> tuple[int, ...]:
        return tuple(rung_epochs(self.schedule, self.eta, self.rungs, self.min_epochs))

    def describe(self) -> str:
        return (f"{self.kind}, eta {self.eta}, {self.rungs} rungs, schedule {self.schedule}, "
                f"min epochs {self.min_epochs}")

    def within(self, scheduler: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        """Keep eta, schedule and min_epochs; only as many rungs as end by ``epochs``."""
        return {**scheduler, "epochs": 0,
                "rungs": rungs_within(self.schedule, self.eta, self.rungs, self.min_epochs, epochs)}


def synchronous_verdict(rung: int, epoch: int, cohort: Sequence[RungMember], eta: int,
                        direction: str, next_target: int | None) -> RungVerdict | None:
    """A synchronous rung's verdict once every member waits at ``epoch`` (None before):
    the best go on to ``next_target``, or, at a ladder's last rung (``next_target`` None),
    complete. Shared by sync-halving and each hyperband-sync bracket, which differ only in
    where their rungs sit."""
    if not cohort or any(not m.paused or m.epochs_done != epoch for m in cohort):
        return None  # someone is still training towards the boundary
    last = next_target is None
    decision = decide_rung(rung, epoch, {m.number: m.value for m in cohort}, eta, direction, last)
    if last:
        return RungVerdict(decision, promote=(), prune=decision.pruned,
                           complete=decision.survivors, next_rung=None, next_target=None)
    return RungVerdict(decision, promote=decision.survivors, prune=decision.pruned,
                       complete=(), next_rung=rung + 1, next_target=next_target)
