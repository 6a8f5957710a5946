"""What a scheduler decides, as plain data, and the small interface every scheduler kind has.

A policy is pure: it is given numbers (epochs, reported values, the trials of a
rung) and returns what happens next. Nothing here reads or writes storage; the
service persists what a policy returns (hpo/service/coordination.py, inside its
transaction), the worker acts on it, and the readers (simulate, status, the
report) ask the same policy how to read a study back. docs/design.md says how
the kinds plug in:

==============  ============================================  ==========================
kind            policy                                        module
==============  ============================================  ==========================
sync-halving    :class:`SyncHalving` (decides its own rungs)  hpo/scheduling/sync_halving.py
asha            :class:`OptunaPruned` (SuccessiveHalving)     hpo/scheduling/optuna_pruned.py
hyperband       :class:`OptunaPruned` (Hyperband)             hpo/scheduling/optuna_pruned.py
none            :class:`FullGrid` (every trial to the end)    hpo/scheduling/full_grid.py
==============  ============================================  ==========================

The decisions: after an epoch a trial goes on (``CONTINUE``) or is pruned
(``PRUNE``); at the epoch it was sent to it waits for its rung (``PAUSE``) or
is done (``COMPLETE``); when a rung is decided its trials are promoted to the
next rung (``PROMOTE``), pruned or completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from hpo.scheduling.rungs import RungDecision

CONTINUE = "continue"
PAUSE = "pause"
PROMOTE = "promote"
PRUNE = "prune"
COMPLETE = "complete"


@dataclass(frozen=True)
class RungMember:
    """A trial of a rung's cohort, as the decision needs to see it."""

    number: int
    value: float | None  # the last value it reported
    epochs_done: int
    paused: bool  # parked at the rung, waiting for the decision


@dataclass(frozen=True)
class RungVerdict:
    """A decided rung: the record to store and what happens to each of its trials."""

    decision: RungDecision  # stored as it is (table saan_rungs)
    promote: tuple[int, ...]  # go on to ``next_rung``, to train until ``next_target``
    prune: tuple[int, ...]
    complete: tuple[int, ...]
    next_rung: int | None
    next_target: int | None


@dataclass(frozen=True)
class LadderEntry:
    trial: int
    value: float
    outcome: str  # survived | pruned | pending | finished


@dataclass(frozen=True)
class LadderRung:
    """One rung of a study as the report shows it."""

    rung: int
    epoch: int
    decided: bool
    entries: list[LadderEntry]


class Policy:
    """The interface of a scheduler kind. Subclasses are frozen dataclasses of plain numbers.

    ``boundaries`` are the epochs at which trials are compared; the last is the
    full budget. Defaults here are those of a kind that never pauses a trial.
    """

    kind: str
    boundaries: tuple[int, ...]
    #: ``planned_epochs`` is what the study will spend, not an upper bound.
    plan_is_exact: bool = False
    #: Trials wait at rung boundaries for a decision (the service then decides rungs).
    pauses_at_rungs: bool = False

    @property
    def final_epoch(self) -> int:
        return self.boundaries[-1]

    # ---- a trial's life ----------------------------------------------------------
    def first_target(self) -> int:
        """The epoch a new trial trains to before the scheduler looks at it again."""
        return self.final_epoch

    def entry(self, number: int) -> tuple[int, int]:
        """(rung, first target epoch) of new trial ``number``: kinds with several brackets
        start each bracket's trials at its own first rung."""
        return 0, self.first_target()

    def after_epoch(self, epoch: int, pruner_says_prune: Callable[[], bool]) -> str:
        """``CONTINUE`` or ``PRUNE`` after a reported epoch. ``pruner_says_prune`` asks
        Optuna's pruner (a database read), so a policy calls it only when it needs it."""
        return CONTINUE

    def pruner_may_prune_at(self, epoch: int) -> bool:
        """Whether Optuna's pruner can decide anything after ``epoch``: only there must the
        epoch be durable and reported before ``after_epoch`` asks it (the worker waits)."""
        return False

    def at_target(self) -> str:
        """``PAUSE`` or ``COMPLETE``: a trial has trained to the epoch it was sent to."""
        return COMPLETE

    def decide_rung(self, rung: int, cohort: Sequence[RungMember]) -> RungVerdict | None:
        """The verdict on ``rung`` once its cohort is complete; None before (or never)."""
        return None

    # ---- budget and Optuna ---------------------------------------------------------
    def planned_epochs(self, n_trials: int) -> int:
        """Epochs the study spends: exact when ``plan_is_exact``, else an upper bound."""
        return n_trials * self.final_epoch

    def optuna_pruner(self) -> tuple[str, dict[str, Any]]:
        """The ``optuna.pruners`` class (by name) and arguments the Optuna study gets."""
        return "NopPruner", {}

    def describe(self) -> str:
        """One line for the report's header."""
        raise NotImplementedError

    # ---- reading a study back --------------------------------------------------------
    def history(self, stored: Sequence[RungDecision],
                reported: Mapping[int, Mapping[int, float]]) -> list[RungDecision]:
        """Per rung, who was compared on what value and who went on.

        ``stored`` are the decisions in table saan_rungs; ``reported`` is every
        trial's kept values by epoch. A kind without stored decisions reads the
        picture off the reported values: trials that reached a boundary were
        compared there, those that reported past it went on.
        """
        return rungs_from_reports(self.boundaries, reported)

    def ladder(self, history: Sequence[RungDecision], values: Mapping[int, Mapping[int, float]],
               states: Mapping[int, str]) -> list[LadderRung]:
        """The report's rung ladder from :meth:`history`, each trial's reported values by
        epoch and Optuna state (complete, pruned, running, waiting, fail)."""
        last = len(self.boundaries) - 1
        rungs = []
        for record in history:
            entries = []
            for trial, value in sorted(record.values.items()):
                state = states[trial]
                if trial in record.survivors:
                    outcome = "survived"
                    if record.rung == last:
                        outcome = "finished" if state == "complete" else "pending"
                else:
                    outcome = "pruned" if state == "pruned" else "pending"
                entries.append(LadderEntry(trial, value, outcome))
            rungs.append(LadderRung(record.rung, record.epoch,
                                    all(e.outcome != "pending" for e in entries), entries))
        return rungs

    def rung_table(self) -> list[tuple[int, int, int, str]]:
        """(rung, epoch, last rung of its ladder, label) per rung, for status: one ladder
        here; kinds with brackets list each bracket's rungs under study-wide numbers."""
        last = len(self.boundaries) - 1
        return [(k, epoch, last, "") for k, epoch in enumerate(self.boundaries)]

    # ---- the synthetic twin -----------------------------------------------------------
    def within(self, scheduler: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        """Scheduler settings that make this kind train at most ``epochs`` per trial."""
        raise NotImplementedError


def rungs_from_reports(boundaries: Sequence[int],
                       reported: Mapping[int, Mapping[int, float]]) -> list[RungDecision]:
    """Rungs read off reported values (kinds whose pruner decides without a record)."""
    records = []
    last = len(boundaries) - 1
    for k, boundary in enumerate(boundaries):
        compared = [n for n in sorted(reported) if boundary in reported[n]]
        if not compared:
            continue
        if k == last:
            survivors = compared
        else:
            survivors = [n for n in compared if max(reported[n]) > boundary]
        records.append(RungDecision(
            rung=k, epoch=boundary, values={n: reported[n][boundary] for n in compared},
            survivors=tuple(survivors), pruned=tuple(n for n in compared if n not in survivors),
            last=k == last))
    return records
