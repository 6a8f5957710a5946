"""Recorded learning curves: the CSV that ``simulate`` and ``--replay-curves`` replay.

Columns: one per grid axis (named as in the study file), then ``epoch`` and
``value``; one row per configuration and epoch. ``saan-hpo curves`` writes this
format from a stored study (hpo/readers/curves.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from model.errors import DataError
from hpo.scheduling.spec import StudySpec


class LearningCurves:
    """Recorded curves: for each grid point, the metric after each epoch.

    CSV columns: one per grid axis (named as in the study file), then ``epoch``
    and ``value``; one row per configuration and epoch.
    """

    def __init__(self, table: dict[tuple, dict[int, float]], axes: list[str], source: str):
        self.table, self.axes, self.source = table, axes, source

    @classmethod
    def load(cls, path: str | Path, spec: StudySpec) -> "LearningCurves":
        import pandas as pd  # only when curves are replayed: workers that train never pay for it

        source = str(path)
        try:
            frame = pd.read_csv(path)
        except FileNotFoundError:
            raise DataError(f"{source}: file not found") from None
        except Exception as err:
            raise DataError(f"{source}: not a readable CSV ({err})") from None
        axes = list(spec.grid)
        for column in axes + ["epoch", "value"]:
            if column not in frame.columns:
                raise DataError(f"{source}: column {column!r}: missing (expected the grid axes "
                                f"{', '.join(axes)}, then epoch and value)")
        table: dict[tuple, dict[int, float]] = {}
        for params in spec.grid_points():
            mask = True
            for axis in axes:
                want = params[axis]
                col = frame[axis]
                if isinstance(want, float):
                    mask = mask & col.apply(_close, args=(want,))
                else:
                    mask = mask & (col.astype(str) == str(want))
            rows = frame[mask]
            if rows.empty:
                raise DataError(f"{source}: no rows for configuration {params}")
            table[cls.key(params, axes)] = {int(e): float(v) for e, v in zip(rows["epoch"], rows["value"])}
        return cls(table, axes, source)

    @staticmethod
    def key(params: Mapping[str, Any], axes: list[str]) -> tuple:
        return tuple(repr(params[a]) for a in axes)

    def curve(self, params: Mapping[str, Any]) -> dict[int, float]:
        return self.table[self.key(params, self.axes)]

    def value(self, params: Mapping[str, Any], epoch: int) -> float:
        curve = self.curve(params)
        if epoch not in curve:
            raise DataError(f"{self.source}: configuration {dict(params)}: no value at epoch {epoch}")
        return curve[epoch]


def _close(value: Any, want: float) -> bool:
    try:
        return math.isclose(float(value), want, rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return False
