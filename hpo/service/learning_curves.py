"""Recorded learning curves: the CSV that ``simulate`` and ``--replay-curves`` replay.

Columns: one per grid axis (named as in the study file), then ``epoch`` and
``value``; one row per configuration and epoch. ``saan-hpo curves`` writes this
format from a stored study (hpo/readers/curves.py).

The file is validated like a study file: any malformed cell is one error naming
the file, the line and the column. Rules:

* the columns are the grid axes, ``epoch`` and ``value`` (any order), plus, for a
  table that serves several studies with different axes, columns naming other
  settings a grid may vary (``model.norm``, ``trainer.loss``...): a row with a
  value in such a column belongs to another study's grid (counted, see below);
  any other column is refused;
* an epoch is a whole number >= 1 (``2.5`` or ``2.0`` are refused, not truncated);
* a value is a number; ``nan``, ``inf`` and ``-inf`` are allowed -- a diverged
  run reports them -- and are counted (they rank last at their rung); an empty
  cell or text is refused;
* one row per configuration and epoch: a repeated one is refused, with the same
  value too (a file appended to twice, or two runs' curves mixed, would otherwise
  pass unnoticed whenever they happen to agree);
* each configuration of the grid has rows, for epochs 1, 2, ... without a gap
  (a curve may stop early: a pruned trial's does);
* rows of configurations outside the study's grid are allowed (one table may
  serve several grids) and counted.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Mapping

from model.config import field_of
from model.errors import DataError
from hpo.scheduling.spec import StudySpec

WHOLE = re.compile(r"\s*\+?\d+\s*")


class LearningCurves:
    """Recorded curves: for each grid point, the metric after each epoch."""

    def __init__(self, table: dict[tuple, dict[int, float]], axes: list[str], source: str,
                 outside_grid_rows: int = 0):
        self.table, self.axes, self.source = table, axes, source
        self.outside_grid_rows = outside_grid_rows  # rows of configurations not in the grid

    @property
    def non_finite_values(self) -> int:
        """NaN / infinite values in the grid's curves."""
        return sum(not math.isfinite(v) for curve in self.table.values() for v in curve.values())

    @classmethod
    def load(cls, path: str | Path, spec: StudySpec) -> "LearningCurves":
        source = str(path)
        try:
            with open(path, newline="") as fh:
                return cls._parse(csv.reader(fh), spec, source)
        except FileNotFoundError:
            raise DataError(f"{source}: file not found") from None
        except (UnicodeDecodeError, csv.Error, IsADirectoryError, PermissionError) as err:
            raise DataError(f"{source}: not a readable CSV ({err})") from None

    @classmethod
    def _parse(cls, reader, spec: StudySpec, source: str) -> "LearningCurves":
        axes = list(spec.grid)
        header = next(reader, None)
        if not header:
            raise DataError(f"{source}: line 1: empty file (expected a header: "
                            f"{', '.join(axes)}, epoch, value)")
        header = [h.strip() for h in header]
        expected = axes + ["epoch", "value"]
        for column in expected:
            if column not in header:
                raise DataError(f"{source}: line 1: column {column!r}: missing (expected the grid "
                                f"axes {', '.join(axes)}, then epoch and value)")
        for position, column in enumerate(header, start=1):
            if header.index(column) != position - 1 or (column not in expected
                                                         and not _is_setting(column)):
                what = "repeated" if header.index(column) != position - 1 else "unexpected"
                raise DataError(f"{source}: line 1, column {position} ({column!r}): {what} column "
                                f"(expected exactly {', '.join(expected)}, or the name of a setting "
                                "another study's grid varies)")
        others = [column for column in header if column not in expected]  # other grids' axes
        at = {column: header.index(column) for column in expected + others}
        choices = {axis: spec.grid[axis] for axis in axes}
        grid_keys = {cls.key(p, axes): p for p in spec.grid_points()}
        table: dict[tuple, dict[int, float]] = {}
        seen: dict[tuple, int] = {}  # (key, epoch) -> line
        outside = 0
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                column = min(len(row), len(header)) + 1
                raise DataError(f"{source}: line {line}, column {column}: {len(row)} cells "
                                f"(expected {len(header)}: {', '.join(header)})")

            def where(column: str) -> str:
                return f"{source}: line {line}, column {at[column] + 1} ({column})"

            if any(row[at[column]].strip() for column in others):
                outside += 1  # a row of a grid that varies another setting
                continue
            params = {}
            for axis in axes:
                params[axis] = _grid_value(row[at[axis]], choices[axis], lambda: where(axis))
            epoch_cell = row[at["epoch"]]
            if not WHOLE.fullmatch(epoch_cell) or int(epoch_cell) < 1:
                raise DataError(f"{where('epoch')}: expected a whole number of epochs >= 1, "
                                f"got {epoch_cell!r}")
            epoch = int(epoch_cell)
            value_cell = row[at["value"]]
            try:
                value = float(value_cell)
            except ValueError:
                raise DataError(f"{where('value')}: expected a number (nan and inf allowed), "
                                f"got {value_cell!r}") from None
            if any(p is _OUTSIDE for p in params.values()):
                outside += 1
                continue
            key = cls.key(params, axes)
            if key not in grid_keys:
                outside += 1
                continue
            curve = table.setdefault(key, {})
            if epoch in curve:
                if repr(curve[epoch]) != repr(value):
                    raise DataError(f"{where('value')}: epoch {epoch} of {grid_keys[key]} is "
                                    f"{curve[epoch]!r} on line {seen[key, epoch]} and {value!r} "
                                    "here (expected one value per configuration and epoch)")
                raise DataError(f"{where('epoch')}: epoch {epoch} of {grid_keys[key]} again, "
                                f"as on line {seen[key, epoch]} (expected one row per "
                                "configuration and epoch)")
            curve[epoch] = value
            seen[key, epoch] = line
        for key, params in grid_keys.items():
            curve = table.get(key)
            if not curve:
                raise DataError(f"{source}: no rows for configuration {params} "
                                f"(expected epochs 1, 2, ... of every grid point)")
            missing = [e for e in range(1, max(curve) + 1) if e not in curve]
            if missing:
                later = min(e for e in curve if e > missing[0])
                raise DataError(f"{source}: line {seen[key, later]}, column {at['epoch'] + 1} "
                                f"(epoch): configuration {params} has epoch {later} but no epoch "
                                f"{missing[0]} (expected epochs 1, 2, ... without a gap)")
        return cls(table, axes, source, outside_grid_rows=outside)

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


_OUTSIDE = object()  # an axis value that is not one of the grid's


def _grid_value(cell: str, choices: list[Any], where) -> Any:
    """The grid's own value this cell names, _OUTSIDE for another value; malformed -> DataError."""
    text = cell.strip()
    if not text:
        raise DataError(f"{where()}: empty cell (expected one of the axis's values, e.g. {choices[0]!r})")
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
    if numeric:
        try:
            number = float(text)
        except ValueError:
            raise DataError(f"{where()}: expected a number such as {choices[0]!r}, got {cell!r}") from None
        for choice in choices:
            if math.isclose(number, float(choice), rel_tol=1e-9, abs_tol=0.0):
                return choice
        return _OUTSIDE
    for choice in choices:
        if text == str(choice):
            return choice
    return _OUTSIDE


def _is_setting(column: str) -> bool:
    """A data/model/trainer setting a study's grid could vary (bare like lr, dotted like model.norm)."""
    try:
        field_of(column)
    except (KeyError, ValueError):
        return False
    return True
