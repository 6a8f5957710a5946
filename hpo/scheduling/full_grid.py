"""Every configuration trained to the full budget (kind ``none``): the grid search baseline.

One boundary, ``epochs`` (or the trainer's epochs when it is 0); nothing is
paused or pruned, so a trial trains straight to the end and completes.

>>> FullGrid(epochs=31).boundaries, FullGrid(epochs=31).planned_epochs(16)
((31,), 496)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hpo.scheduling.policy import Policy


@dataclass(frozen=True)
class FullGrid(Policy):
    epochs: int
    kind: str = "none"

    @property
    def boundaries(self) -> tuple[int, ...]:
        return (self.epochs,)

    def describe(self) -> str:
        return f"none (every configuration trains {self.epochs} epochs)"

    def within(self, scheduler: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        return {**scheduler, "epochs": epochs}
