"""Which policy runs a study: the one place that maps ``scheduler.kind`` to code.

To add a scheduler kind, write a :class:`hpo.scheduling.policy.Policy` and add
it here; the study file accepts every kind listed (docs/design.md).
"""

from __future__ import annotations

from typing import Any, Callable

from hpo.scheduling.full_grid import FullGrid
from hpo.scheduling.hyperband_sync import HyperbandSync
from hpo.scheduling.optuna_pruned import OptunaPruned
from hpo.scheduling.policy import Policy
from hpo.scheduling.sync_halving import SyncHalving


def _sync_halving(s: Any, trainer_epochs: int, direction: str) -> Policy:
    return SyncHalving("sync-halving", s.eta, s.rungs, s.min_epochs, s.schedule, direction)


def _asha(s: Any, trainer_epochs: int, direction: str) -> Policy:
    return OptunaPruned.asha(s.eta, s.rungs, s.min_epochs, s.schedule)


def _hyperband(s: Any, trainer_epochs: int, direction: str) -> Policy:
    return OptunaPruned.hyperband(s.eta, s.rungs, s.min_epochs, s.schedule)


def _hyperband_sync(s: Any, trainer_epochs: int, direction: str) -> Policy:
    return HyperbandSync("hyperband-sync", s.eta, s.rungs, s.min_epochs, s.schedule, direction,
                         s.brackets, s.sampler or "random", s.seed)


def _full_grid(s: Any, trainer_epochs: int, direction: str) -> Policy:
    return FullGrid(s.epochs or trainer_epochs)


# kind -> policy from (scheduler settings, trainer epochs, study direction)
POLICIES: dict[str, Callable[[Any, int, str], Policy]] = {
    "sync-halving": _sync_halving,
    "asha": _asha,
    "hyperband": _hyperband,
    "hyperband-sync": _hyperband_sync,
    "none": _full_grid,
}


def policy_for(scheduler: Any, trainer_epochs: int, direction: str = "maximize") -> Policy:
    """The policy of a ``[scheduler]`` table (kind, eta, rungs, min_epochs, schedule, epochs)."""
    return POLICIES[scheduler.kind](scheduler, trainer_epochs, direction)
