"""Optuna's own asynchronous pruners (kinds ``asha`` and ``hyperband``), used unchanged.

A trial is sent straight to the full budget. After each epoch at which the
pruner can decide (its rung steps, :meth:`OptunaPruned.pruner_may_prune_at`),
once that epoch's checkpoint is durable and its value reported, the worker
asks the study's pruner (``SuccessiveHalvingPruner`` with
``min_early_stopping_rate=0`` for asha, ``HyperbandPruner`` for hyperband, both
with ``min_resource=min_epochs`` and ``reduction_factor=eta``) and prunes the
trial when it says so -- except at the final epoch: Optuna's pruners never see
it, so a fully trained trial completes rather than being pruned. Nothing waits
at a rung and nothing is recorded per rung; readers infer the rungs from the
reported values (:func:`hpo.scheduling.policy.rungs_from_reports`).

>>> asha = OptunaPruned.asha(eta=2, rungs=3, min_epochs=1, schedule="geometric")
>>> asha.boundaries, asha.first_target()
((1, 2, 4), 4)
>>> asha.after_epoch(2, lambda: True), asha.after_epoch(4, lambda: True)
('prune', 'continue')
>>> [e for e in range(1, 5) if asha.pruner_may_prune_at(e)]  # its rung steps, not the last
[1, 2]
>>> asha.optuna_pruner()
('SuccessiveHalvingPruner', {'min_resource': 1, 'reduction_factor': 2, 'min_early_stopping_rate': 0})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from hpo.scheduling.halving import HalvingPolicy
from hpo.scheduling.policy import CONTINUE, PRUNE


@dataclass(frozen=True)
class OptunaPruned(HalvingPolicy):
    pruner: str = "NopPruner"  # a class of optuna.pruners
    pruner_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def asha(cls, eta: int, rungs: int, min_epochs: int, schedule: str) -> "OptunaPruned":
        return cls("asha", eta, rungs, min_epochs, schedule, "SuccessiveHalvingPruner",
                   {"min_resource": min_epochs, "reduction_factor": eta, "min_early_stopping_rate": 0})

    @classmethod
    def hyperband(cls, eta: int, rungs: int, min_epochs: int, schedule: str) -> "OptunaPruned":
        final = cls("hyperband", eta, rungs, min_epochs, schedule).final_epoch
        return cls("hyperband", eta, rungs, min_epochs, schedule, "HyperbandPruner",
                   {"min_resource": min_epochs, "max_resource": final, "reduction_factor": eta})

    def after_epoch(self, epoch: int, pruner_says_prune: Callable[[], bool]) -> str:
        # Optuna's pruner never sees the final epoch: a fully trained trial must
        # complete, not be pruned (Optuna 5 pitfall).
        if epoch < self.final_epoch and pruner_says_prune():
            return PRUNE
        return CONTINUE

    def optuna_pruner(self) -> tuple[str, dict[str, Any]]:
        return self.pruner, dict(self.pruner_args)

    def pruner_may_prune_at(self, epoch: int) -> bool:
        """Optuna's SuccessiveHalvingPruner (each Hyperband bracket is one, with a higher
        ``min_early_stopping_rate``) looks at a trial only when its last step reaches a rung,
        ``min_resource * reduction_factor ** k``; at any other step it answers no without
        reading or writing anything. A trial reports every epoch, so those are its only
        deciding epochs (the final one never asks: see ``after_epoch``)."""
        if epoch >= self.final_epoch:
            return False
        args = self.pruner_args
        step = args.get("min_resource", 1) * args.get("reduction_factor", 1) ** args.get(
            "min_early_stopping_rate", 0)
        while step < epoch and args.get("reduction_factor", 1) > 1:
            step *= args["reduction_factor"]
        return step == epoch
