"""A finished grid's winner's neighbourhood as a [space], and the brackets a budget buys.

``saan-hpo refine`` (hpo/readers/refine.py) asks the next question of a grid
study: what lies between the grid points around the winner. Per axis, one grid
step either side of the winner's value:

* ``lr`` -- and any axis of positive numbers spaced by a constant ratio (batch
  sizes 8, 16, 32, 64) -- on a log scale: ``log_uniform`` between the two
  neighbours (an integer axis: ``int`` between them, stepped by their common
  divisor); at the edge of the grid the step is taken once more beyond it;
* other numbers: ``uniform`` (or ``int``) between the neighbours, an edge
  extended by one step and kept inside what the setting accepts (>= 0);
* anything else (a norm, a loss): ``choice`` of every grid value;
* an axis with a single value stays that value.

Pure: given the grid, the winner's params and the rung ladder, it returns
plain data; nothing is read or written here.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any, Mapping, Sequence

from model.config import field_of
from hpo.scheduling.hyperband_sync import HyperbandSync
from hpo.scheduling.space import Dimension


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _geometric(values: Sequence[float]) -> bool:
    if len(values) < 2 or any(v <= 0 for v in values):
        return False
    ratios = [b / a for a, b in zip(values, values[1:])]
    return max(ratios) / min(ratios) < 1.01


def neighbourhood(axis: str, values: Sequence[Any], winner: Any) -> Dimension:
    """The [space] entry around ``winner`` on a grid axis of ``values``."""
    if not _numeric(values):
        return Dimension("choice", choices=tuple(values))
    ordered = sorted(set(values))
    if len(ordered) == 1:
        return Dimension("choice", choices=(winner,))
    i = ordered.index(winner)
    log = axis in ("lr", "trainer.lr") or _geometric(ordered)
    if log:
        below = ordered[i - 1] if i > 0 else winner * winner / ordered[i + 1]
        above = ordered[i + 1] if i + 1 < len(ordered) else winner * winner / ordered[i - 1]
    else:
        below = ordered[i - 1] if i > 0 else winner - (ordered[i + 1] - winner)
        above = ordered[i + 1] if i + 1 < len(ordered) else winner + (winner - ordered[i - 1])
    meta = field_of(axis).metadata
    if (meta.get("non_negative") or meta.get("positive")) and below < 0:
        below = 0
    integer = type(field_of(axis).default) is int
    if integer:
        below, above = int(round(below)), int(round(above))
        if meta.get("positive"):
            below = max(1, below)
        step = reduce(math.gcd, (below, above, int(winner)))
        return Dimension("int", low=below, high=above, step=max(1, step))
    kind = "log_uniform" if log and below > 0 else "uniform"
    # 6 significant digits: 1e-3 * 1e-3 / 1e-4 is 0.009999999999999998, the file says 0.01
    return Dimension(kind, low=float(f"{below:.6g}"), high=float(f"{above:.6g}"))


def refined_space(grid: Mapping[str, Sequence[Any]], winner: Mapping[str, Any]) -> dict[str, Dimension]:
    return {axis: neighbourhood(axis, values, winner[axis]) for axis, values in grid.items()}


def brackets_within(eta: int, rungs: int, min_epochs: int, schedule: str, budget: int) -> int:
    """The most brackets, in Hyperband's order, whose planned epochs fit ``budget`` (0: none)."""
    count = 0
    while HyperbandSync("hyperband-sync", eta, rungs, min_epochs, schedule,
                        n_brackets=count + 1).planned_epochs() <= budget:
        count += 1
    return count
