"""Who trains which trial's next epoch with whom: the gang policy (issue 20), decided in memory.

At a running trial's epoch boundary its lease holder (rank 0) asks ``plan_gangs``
which idle workers train the next epoch with it. The answer depends only on what
is passed in, so every holder computes the same plan from the same snapshot:

* Work that could start comes first. While the scheduler has trials to hand out
  (``claimable``), no worker joins a gang, and gangs give members back, the most
  recent joiner first, one per claimable trial: data parallelism never delays a
  trial that could start.
* Otherwise each idle worker joins the running trial with the fewest ranks (ties:
  the lower trial number), so the narrow rungs' trials finish together rather
  than one fast and the others alone.
* Limits: at most ``max_gang`` ranks, and at least ``min_rank_batch`` images per
  rank (a trial of batch 32 takes 4 ranks at 8); a worker joins only a holder of
  its device kind (a CPU and a GPU rank would wait on each other every step).

``min_rank_batch`` defaults to 8. BatchNorm does not need it larger: a gang's
BatchNorm normalises with the whole global batch (model/data_parallel.py), so
per-rank statistics never exist. What it bounds is the work per step: with fewer
images a rank's step is mostly fixed costs (kernel launches, one all-reduce per
BatchNorm layer and the gradient's), so another rank would add collectives rather
than speed. 8 is a starting value, not a measurement: no GPU has been lent to
measure the step time by per-rank batch yet. The blog grid's batches 64, 32, 16,
8 may then spread over 8, 4, 2 and 1 ranks.

>>> limits = GangLimits(min_rank_batch=8, max_gang=8)
>>> running = [Running(3, "w0", "cuda", 32), Running(7, "w1", "cuda", 64)]
>>> plan_gangs(running, [Idle("w2", "cuda"), Idle("w3", "cuda"), Idle("w4", "cpu")], 0, limits)
{3: ('w0', 'w2'), 7: ('w1', 'w3')}
>>> plan_gangs([Running(3, "w0", "cuda", 32, ("w0", "w2"))], [], 1, limits)   # a trial waits
{3: ('w0',)}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

DEFAULT_MIN_RANK_BATCH = 8
DEFAULT_MAX_GANG = 8


@dataclass(frozen=True)
class GangLimits:
    min_rank_batch: int = DEFAULT_MIN_RANK_BATCH
    max_gang: int = DEFAULT_MAX_GANG

    def ranks_for(self, batch_size: int) -> int:
        """The most ranks a trial of ``batch_size`` may train on (at least its holder)."""
        return max(1, min(self.max_gang, batch_size // self.min_rank_batch))


@dataclass(frozen=True)
class Idle:
    """A worker that found nothing to claim and offered itself."""

    worker: str
    device_kind: str


@dataclass(frozen=True)
class Running:
    """A trial in training: its holder (rank 0), device kind, global batch, current gang."""

    number: int
    holder: str
    device_kind: str
    batch_size: int
    members: tuple[str, ...] = field(default=())  # holder first, then joiners in join order

    @property
    def gang(self) -> tuple[str, ...]:
        return self.members or (self.holder,)


def plan_gangs(running: Sequence[Running], idle: Sequence[Idle], claimable: int,
               limits: GangLimits) -> dict[int, tuple[str, ...]]:
    """Each running trial's ranks for its next epoch (holder first); see the module doc."""
    gangs = {t.number: list(t.gang) for t in running}
    if claimable > 0:
        # Give back the most recent joiners, spread over the widest gangs first.
        for _ in range(claimable):
            widest = max(sorted(gangs), key=lambda n: len(gangs[n]))
            if len(gangs[widest]) == 1:
                break
            gangs[widest].pop()
        return {n: tuple(g) for n, g in sorted(gangs.items())}
    by_number = {t.number: t for t in running}
    for offer in sorted(idle, key=lambda o: o.worker):
        open_trials = [n for n in sorted(gangs)
                       if by_number[n].device_kind == offer.device_kind
                       and len(gangs[n]) < limits.ranks_for(by_number[n].batch_size)
                       and offer.worker not in gangs[n]]
        if not open_trials:
            continue
        gangs[min(open_trials, key=lambda n: (len(gangs[n]), n))].append(offer.worker)
    return {n: tuple(g) for n, g in sorted(gangs.items())}
