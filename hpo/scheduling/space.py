"""Search spaces: the ``[space]`` table of a study file, one distribution per setting.

A grid lists points; a space says where configurations may be drawn from, so a
sampler (hpo/service/bracket_sampler.py) can look between the grid points::

    [space]
    lr = { log_uniform = [1e-6, 1e-2] }
    batch_size = { choice = [8, 16, 32, 64] }
    weight_decay = { uniform = [0, 1e-3] }
    model.head_hidden = { int = [64, 512], step = 64 }

Each entry is validated like every other key of a study file: an unknown
setting, an unknown distribution, bounds that are not numbers, reversed or
equal bounds, a log range reaching 0, integer bounds off the step, a value the
setting refuses (``lr <= 0``) or an empty table are one :class:`ConfigError`
naming the file and ``space.<key>``. Plain data only (this package does no
I/O and imports no Optuna): the service turns a :class:`Dimension` into the
matching ``optuna.distributions`` object, so Optuna's tools and the dashboard
read the trials' params with their real ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from model.config import ConfigError, check_value, field_of

KINDS = ("log_uniform", "uniform", "int", "choice")
EXAMPLE = "e.g. lr = { log_uniform = [1e-6, 1e-2] }"


@dataclass(frozen=True)
class Dimension:
    """One setting's distribution: a float or integer range, or a list of choices."""

    kind: str  # log_uniform | uniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None  # int only
    choices: tuple[Any, ...] = ()

    def to_mapping(self) -> dict[str, Any]:
        """The study file's form of this entry (what ``refine`` writes and the hash covers)."""
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        entry: dict[str, Any] = {self.kind: [self.low, self.high]}
        if self.kind == "int" and self.step not in (None, 1):
            entry["step"] = self.step
        return entry

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "int":
            return (isinstance(value, int) and self.low <= value <= self.high
                    and (value - self.low) % (self.step or 1) == 0)
        return isinstance(value, (int, float)) and self.low <= value <= self.high


Space = dict[str, Dimension]


def parse_space(table: Mapping[str, Any], source: str) -> Space:
    """The ``[space]`` table as dimensions, in file order; ConfigError on any bad entry."""
    if not isinstance(table, Mapping):
        raise ConfigError(source, "space", "expected a table of distributions, " + EXAMPLE)
    if not table:
        raise ConfigError(source, "space", "expected at least one setting, " + EXAMPLE)
    return {key: parse_dimension(key, entry, source) for key, entry in table.items()}


def parse_dimension(key: str, entry: Any, source: str) -> Dimension:
    where = f"space.{key}"
    try:
        spec_field = field_of(key)
    except (KeyError, ValueError):
        raise ConfigError(source, where, "unknown field: expected a data, model or trainer field "
                          "(bare like lr, or dotted like model.norm)") from None
    if not isinstance(entry, Mapping):
        raise ConfigError(source, where, f"expected a distribution table, {EXAMPLE}; got {entry!r}")
    kinds = [k for k in entry if k in KINDS]
    extra = [k for k in entry if k not in KINDS and k != "step"]
    if len(kinds) != 1 or extra:
        raise ConfigError(source, where, f"expected exactly one of {', '.join(KINDS)} (and step "
                          f"with int), got keys {', '.join(map(str, entry)) or 'none'}")
    kind = kinds[0]
    if "step" in entry and kind != "int":
        raise ConfigError(source, f"{where}.step", f"only with int, not with {kind}")
    value = entry[kind]
    field_type = type(spec_field.default)
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(source, f"{where}.choice", f"expected a non-empty list, got {value!r}")
        checked = tuple(check_value(spec_field, v, source, f"{where}.choice") for v in value)
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError(source, f"{where}.choice", f"expected distinct values, got {value!r}")
        return Dimension("choice", choices=checked)
    if field_type not in (int, float):
        raise ConfigError(source, f"{where}.{kind}", f"{key} is not a number: use choice = [...]")
    if kind != "int" and field_type is int:
        raise ConfigError(source, f"{where}.{kind}", f"{key} is an integer: use int = [low, high] "
                          "(with step) or choice = [...]")
    low, high = _bounds(value, kind, source, f"{where}.{kind}")
    for bound in (low, high):
        check_value(spec_field, bound, source, f"{where}.{kind}")
    if kind == "log_uniform" and not low > 0:
        raise ConfigError(source, f"{where}.{kind}", f"expected bounds > 0 on a log scale, got {value!r}")
    if kind != "int":
        return Dimension(kind, low=float(low), high=float(high))
    step = entry.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(source, f"{where}.step", f"expected an integer >= 1, got {step!r}")
    if (high - low) % step:
        raise ConfigError(source, f"{where}.step", f"expected high - low ({high - low}) to be a "
                          f"multiple of the step {step}")
    return Dimension("int", low=low, high=high, step=step)


def _bounds(value: Any, kind: str, source: str, key: str) -> tuple[Any, Any]:
    numbers = int if kind == "int" else (int, float)
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers) for v in value)):
        what = "integers" if kind == "int" else "numbers"
        raise ConfigError(source, key, f"expected [low, high], two {what}, got {value!r}")
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ConfigError(source, key, f"expected finite bounds with low < high, got {value!r}")
    return low, high


def space_identity(space: Space) -> dict[str, dict[str, Any]]:
    """What the spec hash covers: the file's own entries, in file order."""
    return {key: dim.to_mapping() for key, dim in space.items()}
