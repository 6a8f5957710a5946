"""Hyperband as brackets of synchronous halving (kind ``hyperband-sync``), decided in memory.

Algorithm (Li et al., "Hyperband", JMLR 2018; BOHB, Falkner et al. 2018, runs
the same brackets). The budget levels are the rung ladder of ``[scheduler]``
(hpo/scheduling/rungs.py): ``rungs`` levels ``B_0 < ... < B_smax`` epochs,
``s_max = rungs - 1``. Bracket ``s`` starts ``n_s = ceil((s_max + 1) / (s + 1) *
eta**s)`` new configurations at level ``s_max - s`` and halves them exactly like
``sync-halving`` over the ``s + 1`` levels up to ``B_smax``: the best
``max(1, n // eta)`` go on, ties by the lower trial number, NaN last, so every
verdict depends only on reported values. ``brackets`` brackets run in Hyperband's
order ``s_max, s_max - 1, ..., 0`` and round again (default: one round,
``rungs`` brackets); the total is planned exactly.

Numbering, so that the service's tables need nothing new: bracket ``j``'s trials
are numbers ``first_trial(j) ... first_trial(j) + n - 1`` and its rungs are the
study-wide rung numbers ``first_rung(j) ... first_rung(j) + s``, so each rung is
still decided exactly once by the (study, rung) key of ``saan_rungs``.

>>> p = HyperbandSync("hyperband-sync", eta=2, rungs=3, min_epochs=1, schedule="geometric")
>>> p.boundaries, [b.s for b in p.brackets()], [b.n for b in p.brackets()]
((1, 2, 4), [2, 1, 0], [4, 3, 3])
>>> [b.levels for b in p.brackets()]
[(1, 2, 4), (2, 4), (4,)]
>>> [p.bracket_epochs(b) for b in p.brackets()], p.planned_epochs()   # 4*1+2*1+1*2, 3*2+1*2, 3*4
([8, 8, 12], 28)
>>> p.entry(4), p.entry(7)     # (rung, first target) of trial 4 (bracket 1) and 7 (bracket 2)
((3, 2), (5, 4))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from hpo.scheduling.halving import HalvingPolicy, synchronous_verdict
from hpo.scheduling.policy import PAUSE, LadderEntry, LadderRung, RungMember, RungVerdict
from hpo.scheduling.rungs import RungDecision, planned_epochs, rung_sizes

SAMPLERS = ("random", "tpe")


@dataclass(frozen=True)
class Bracket:
    """One bracket of the plan: where its trials and rungs are numbered, and its budget levels."""

    index: int  # j: its place in the run order
    s: int  # Hyperband's bracket index: s + 1 rungs, the most aggressive is s_max
    n: int  # configurations it starts
    first_trial: int
    first_rung: int  # study-wide number of its rung 0
    levels: tuple[int, ...]  # cumulative epochs of its rungs, the last is the full budget

    @property
    def trials(self) -> range:
        return range(self.first_trial, self.first_trial + self.n)

    @property
    def rungs(self) -> range:
        return range(self.first_rung, self.first_rung + len(self.levels))

    def sizes(self, eta: int) -> list[int]:
        return rung_sizes(self.n, eta, len(self.levels))


def bracket_size(s: int, s_max: int, eta: int) -> int:
    """Li et al.'s n = ceil((s_max + 1) / (s + 1) * eta**s), in integers (no float rounding)."""
    return -(-(s_max + 1) * eta**s // (s + 1))


@dataclass(frozen=True)
class HyperbandSync(HalvingPolicy):
    direction: str = "maximize"
    n_brackets: int = 0  # 0: one Hyperband round, ``rungs`` brackets
    sampler: str = "random"  # how each bracket's configurations are drawn (service side)
    seed: int = 0

    plan_is_exact = True
    pauses_at_rungs = True

    # ---- the plan --------------------------------------------------------
    def brackets(self) -> list[Bracket]:
        ladder = self.boundaries
        s_max = len(ladder) - 1
        plan, trial, rung = [], 0, 0
        for j in range(self.n_brackets or len(ladder)):
            s = s_max - j % (s_max + 1)
            n = bracket_size(s, s_max, self.eta)
            plan.append(Bracket(j, s, n, trial, rung, tuple(ladder[s_max - s:])))
            trial += n
            rung += s + 1
        return plan

    def bracket_of_trial(self, number: int) -> Bracket:
        for bracket in self.brackets():
            if number in bracket.trials:
                return bracket
        raise ValueError(f"trial {number} is in no bracket of the plan")

    def bracket_of_rung(self, rung: int) -> Bracket:
        for bracket in self.brackets():
            if rung in bracket.rungs:
                return bracket
        raise ValueError(f"rung {rung} is in no bracket of the plan")

    def bracket_epochs(self, bracket: Bracket) -> int:
        return planned_epochs(bracket.n, self.eta, bracket.levels)

    def trial_count(self) -> int:
        return sum(b.n for b in self.brackets())

    def planned_epochs(self, n_trials: int | None = None) -> int:
        """Exact: the brackets' halving, whatever ``n_trials`` (the plan fixes how many)."""
        return sum(self.bracket_epochs(b) for b in self.brackets())

    def brackets_in_parallel(self) -> bool:
        """Random draws need no results, so every bracket opens at launch and they run side
        by side on the fleet; a model-based sampler needs the brackets before it finished."""
        return self.sampler == "random"

    def level_of_rung(self, rung: int) -> int:
        """The budget level (index into ``boundaries``) a study-wide rung compares at."""
        bracket = self.bracket_of_rung(rung)
        return len(self.boundaries) - len(bracket.levels) + (rung - bracket.first_rung)

    # ---- a trial's life ----------------------------------------------------
    def entry(self, number: int) -> tuple[int, int]:
        """(study-wide rung, first target epoch) of a new trial."""
        bracket = self.bracket_of_trial(number)
        return bracket.first_rung, bracket.levels[0]

    def first_target(self) -> int:
        return self.boundaries[0]

    def at_target(self) -> str:
        return PAUSE

    def decide_rung(self, rung: int, cohort: Sequence[RungMember]) -> RungVerdict | None:
        bracket = self.bracket_of_rung(rung)
        k = rung - bracket.first_rung
        following = bracket.levels[k + 1] if k + 1 < len(bracket.levels) else None
        return synchronous_verdict(rung, bracket.levels[k], cohort, self.eta, self.direction, following)

    def plan_summary(self) -> str:
        """Each bracket's rung sizes at their epochs and its epochs, e.g. ``16@1 8@2 4@4 = 32``."""
        return "; ".join(
            " ".join(f"{size}@{level}" for size, level in zip(b.sizes(self.eta), b.levels))
            + f" = {self.bracket_epochs(b)}" for b in self.brackets())

    # ---- reading back --------------------------------------------------------
    def describe(self) -> str:
        plan = self.brackets()
        return (f"{self.kind}, {len(plan)} brackets (n {', '.join(str(b.n) for b in plan)}), eta "
                f"{self.eta}, levels {', '.join(map(str, self.boundaries))}, schedule "
                f"{self.schedule}, sampler {self.sampler}, seed {self.seed}")

    def rung_table(self) -> list[tuple[int, int, int, str]]:
        return [(rung, level, b.rungs[-1], f"bracket {b.index} (s={b.s}, n={b.n})")
                for b in self.brackets() for rung, level in zip(b.rungs, b.levels)]

    def history(self, stored, reported) -> list[RungDecision]:
        return list(stored)

    def ladder(self, history, values, states) -> list[LadderRung]:
        """Decided rungs as stored, study-wide numbers; an undecided rung lists who waits."""
        rungs: dict[int, LadderRung] = {}
        for record in history:
            bracket = self.bracket_of_rung(record.rung)
            kept = "finished" if record.rung == bracket.rungs[-1] else "survived"
            rungs[record.rung] = LadderRung(record.rung, record.epoch, True, [
                LadderEntry(n, v, kept if n in record.survivors else "pruned")
                for n, v in sorted(record.values.items())])
        for bracket in self.brackets():
            for rung, level in zip(bracket.rungs, bracket.levels):
                waiting = [LadderEntry(n, values[n][level], "pending") for n in sorted(values)
                           if n in bracket.trials and level in values[n]]
                if rung not in rungs and waiting:
                    rungs[rung] = LadderRung(rung, level, False, waiting)
        return [rungs[k] for k in sorted(rungs)]


def budget_for_model(results: dict[int, dict[int, float]], levels: Sequence[int],
                     min_points: int) -> int | None:
    """BOHB's choice of budget: the largest level at which at least ``min_points`` trials
    reported a finite value (``results``: trial -> epoch -> value); None when none has."""
    for level in sorted(levels, reverse=True):
        if sum(1 for curve in results.values()
               if level in curve and math.isfinite(curve[level])) >= min_points:
            return level
    return None
