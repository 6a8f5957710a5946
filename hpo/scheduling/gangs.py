"""Who trains which trial's next epoch with whom: the gang policy (issue 20), decided in memory.

At a running trial's epoch boundary its lease holder (rank 0) asks ``plan_gangs``
which idle workers train the next epoch with it. The answer depends only on what
is passed in, so every holder computes the same plan from the same snapshot:

* Work that could start comes first. While the scheduler has trials to hand out
  (``claimable``), as many idle workers stay free to claim them (all of them when
  there are fewer), and when the idle workers are too few, gangs give members
  back, the most recent joiner first, one per claimable trial no idle worker is
  left for: data parallelism never delays a trial that could start.
* Each idle worker beyond those joins the running trial with the fewest ranks
  (ties: the lower trial number), so the narrow rungs' trials finish together
  rather than one fast and the others alone. A claimable trial counts here as a
  gang of one (its claimer) that comes after the running ones on ties: the
  workers it would get stay free, for its claimer to take at its stint's start.
  So at a rung's start, while its trials are claimed one by one, the workers the
  rung has no trial for join at once, spread evenly, rather than an epoch later
  or all with the first claimer.
* Limits: at most ``max_gang`` ranks, and at least ``min_rank_batch`` images per
  rank (a trial of batch 32 takes 4 ranks at 8); a worker joins only a holder of
  its device kind (a CPU and a GPU rank would wait on each other every step).

``min_rank_batch`` defaults to 2 (it was 8). BatchNorm does not need it larger: a
gang's BatchNorm normalises with the whole global batch (model/data_parallel.py,
GangBatchNorm), so per-rank statistics never exist and a rank of 2 images (or 1)
normalises exactly as its holder alone would. What it bounds is only the work per
step: with few images a rank's step is mostly fixed costs (kernel launches, one
all-reduce per BatchNorm layer and the gradient's), so another rank adds
collectives rather than speed. That cost falls on workers that would otherwise
idle (a gang only takes offers, and gives members back as soon as a trial waits),
while a floor of 8 cost the blog grid most of its gain: its last two rungs are led
by a batch-16 trial, which 8 held to 2 of 8 workers for 24 of the study's 80
epochs (bench/RESULTS.md: 44 % busy, 2.26x ideal with 8 workers). 2 rather than
1 is a hedge, not a finding: a rank of one image would be nothing but fixed
cost. Still a starting value, not a measurement: no GPU has been lent since gangs
train for real, so the step time by per-rank batch is unmeasured; raise it per study
where that measurement says so. The blog grid's batches 64, 32, 16, 8 may then
spread over 8, 8, 8 and 4 ranks.

>>> limits = GangLimits(min_rank_batch=8, max_gang=8)
>>> running = [Running(3, "w0", "cuda", 32), Running(7, "w1", "cuda", 64)]
>>> plan_gangs(running, [Idle("w2", "cuda"), Idle("w3", "cuda"), Idle("w4", "cpu")], 0, limits)
{3: ('w0', 'w2'), 7: ('w1', 'w3')}
>>> plan_gangs([Running(3, "w0", "cuda", 32, ("w0", "w2"))], [], 1, limits)   # a trial waits
{3: ('w0',)}
>>> plan_gangs([Running(3, "w0", "cuda", 32)], [Idle(f"w{i}", "cuda") for i in range(1, 6)], 1, limits)
{3: ('w0', 'w1', 'w3')}

In the last example trial 3's holder, at its stint's start, sees one more trial
of its rung waiting to be claimed and five idle workers: one stays free to claim
it, two join trial 3 and two stay free for that trial's claimer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

DEFAULT_MIN_RANK_BATCH = 2
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
    spare = len(idle) - claimable  # idle workers no claimable trial needs
    if spare <= 0:
        # Give back the most recent joiners, spread over the widest gangs first.
        for _ in range(-spare):
            widest = max(sorted(gangs), key=lambda n: len(gangs[n]))
            if len(gangs[widest]) == 1:
                break
            gangs[widest].pop()
        return {n: tuple(g) for n, g in sorted(gangs.items())}
    by_number = {t.number: t for t in running}
    # The claimable trials' future gangs, by rank count: their batch and device are not
    # known here, so only max_gang bounds them.
    to_claim = [1] * claimable
    for offer in sorted(idle, key=lambda o: o.worker):
        if spare == 0:
            break  # the rest stay free to claim the claimable trials
        open_trials = [n for n in sorted(gangs)
                       if by_number[n].device_kind == offer.device_kind
                       and len(gangs[n]) < limits.ranks_for(by_number[n].batch_size)
                       and offer.worker not in gangs[n]]
        best = min(open_trials, key=lambda n: (len(gangs[n]), n), default=None)
        waiting = min(range(claimable), key=lambda i: to_claim[i], default=None)
        if waiting is not None and to_claim[waiting] < limits.max_gang and (
                best is None or to_claim[waiting] < len(gangs[best])):
            to_claim[waiting] += 1  # stays free, for that trial's claimer
        elif best is not None:
            gangs[best].append(offer.worker)
        else:
            continue  # nothing open for it: it stays free, and the next offer may join
        spare -= 1
    return {n: tuple(g) for n, g in sorted(gangs.items())}
