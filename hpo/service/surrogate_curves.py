"""A learning-curve surrogate: the value after each epoch as a smooth function of the params.

Recorded curves (hpo/service/learning_curves.py) answer only at the points that
were trained; a space study draws configurations between them. A surrogate
file (JSON, written by ``bench/search.py`` from recorded curves, or by hand in
the tests) gives every configuration of a space a curve::

    value(params, epoch) = asymptote(x) - amplitude(x) * exp(-epoch * exp(log_rate(x)))

with ``x`` the params after each input's transform (``log10``, ``log2``,
``scale``) and each of the three a quadratic in ``x`` (coefficients in the order
1, x_i, then x_i * x_j for i <= j). ``--replay-curves FILE.json`` replays it
through the real service like a CSV of recorded curves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from model.errors import DataError
from hpo.scheduling.spec import StudySpec

FORMAT = "saan-hpo-surrogate/1"
TRANSFORMS = ("log10", "log2", "scale", "linear")


def quadratic_terms(x: Sequence[float]) -> list[float]:
    terms = [1.0, *x]
    for i in range(len(x)):
        for j in range(i, len(x)):
            terms.append(x[i] * x[j])
    return terms


def transform(value: float, spec: Mapping[str, Any]) -> float:
    kind = spec.get("transform", "linear")
    if kind == "log10":
        return math.log10(value)
    if kind == "log2":
        return math.log2(value)
    if kind == "scale":
        return value * float(spec["scale"])
    return float(value)


class SurrogateCurves:
    """The replay interface of LearningCurves (``value(params, epoch)``) for any params."""

    def __init__(self, model: Mapping[str, Any], source: str):
        self.model, self.source = model, source
        self.inputs = list(model["inputs"])
        self.axes = [i["name"] for i in self.inputs]
        self.defaults = dict(model.get("defaults", {}))  # an input the study does not vary
        self.outside_grid_rows = 0
        self.non_finite_values = 0

    @classmethod
    def load(cls, path: str | Path, spec: StudySpec | None = None) -> "SurrogateCurves":
        source = str(path)
        try:
            model = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DataError(f"{source}: file not found") from None
        except (ValueError, UnicodeDecodeError, IsADirectoryError) as err:
            raise DataError(f"{source}: not a surrogate JSON file ({err})") from None
        if not isinstance(model, dict) or model.get("format") != FORMAT:
            raise DataError(f"{source}: format: expected {FORMAT!r}")
        inputs = model.get("inputs")
        n_terms = len(quadratic_terms([0.0] * len(inputs or [])))
        if not isinstance(inputs, list) or not inputs or any(
                not isinstance(i, dict) or i.get("transform", "linear") not in TRANSFORMS
                for i in inputs):
            raise DataError(f"{source}: inputs: expected a list of {{name, transform}} with "
                            f"transform one of {', '.join(TRANSFORMS)}")
        for key in ("asymptote", "amplitude", "log_rate"):
            coef = model.get(key)
            if not isinstance(coef, list) or len(coef) != n_terms:
                raise DataError(f"{source}: {key}: expected {n_terms} coefficients")
        surrogate = cls(model, source)
        if spec is not None:
            missing = [a for a in surrogate.axes if a not in spec.axes and a not in surrogate.defaults]
            if missing:
                raise DataError(f"{source}: inputs {', '.join(missing)}: not varied by study "
                                f"{spec.name!r} and no default given")
        return surrogate

    def _x(self, params: Mapping[str, Any]) -> list[float]:
        return [transform(float(params.get(i["name"], self.defaults.get(i["name"]))), i)
                for i in self.inputs]

    def value(self, params: Mapping[str, Any], epoch: int) -> float:
        terms = quadratic_terms(self._x(params))

        def poly(key: str) -> float:
            return sum(c * t for c, t in zip(self.model[key], terms))

        rate = math.exp(max(-30.0, min(5.0, poly("log_rate"))))
        return poly("asymptote") - poly("amplitude") * math.exp(-epoch * rate)

    def final(self, params: Mapping[str, Any]) -> float:
        """The value after the longest training (what the winner's regret is measured on)."""
        return self.value(params, 10**6)


def load_replay(path: str | Path, spec: StudySpec):
    """Recorded curves (CSV) or a surrogate (JSON) to replay through the worker."""
    if str(path).endswith(".json"):
        return SurrogateCurves.load(path, spec)
    from hpo.service.learning_curves import LearningCurves

    return LearningCurves.load(path, spec)
