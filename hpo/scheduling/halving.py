"""What the halving kinds share: eta, rungs, a schedule and where their rungs sit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hpo.scheduling.policy import Policy
from hpo.scheduling.rungs import rung_epochs, rungs_within


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
