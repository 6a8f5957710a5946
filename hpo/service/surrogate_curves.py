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

A file with ``"kind": "kernel-ridge"`` instead holds, per recorded epoch, a
Gaussian-kernel ridge regression over the recorded configurations (``centres``
in transformed coordinates, ``length_scales`` per input, and that epoch's
``mean`` and ``weights``): smooth, equal to the mean far from the data rather
than running off, and continuous in every input. Epochs past the last recorded
one keep its value.

An optional ``"noise": {"sigma": s, "seed": k}`` adds to each reported value a
normal draw of standard deviation ``s`` (the fit's residual: what training
wobbles by from epoch to epoch), the same for the same (seed, params, epoch),
so a replay is still deterministic and resuming a trial reports what it did.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
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
        if model.get("kind") == "kernel-ridge":
            centres, epochs = model.get("centres"), model.get("epochs")
            if (not isinstance(centres, list) or not isinstance(epochs, dict) or not epochs
                    or len(model.get("length_scales") or []) != len(inputs)
                    or any(len(e.get("weights", [])) != len(centres) for e in epochs.values())):
                raise DataError(f"{source}: expected centres, length_scales (one per input) and "
                                "per epoch a mean and one weight per centre")
        else:
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
        if self.model.get("kind") == "kernel-ridge":
            value = self._kernel_value(self._x(params), epoch)
        else:
            value = self._quadratic_value(self._x(params), epoch)
        noise = self.model.get("noise") or {}
        if noise.get("sigma"):
            value += float(noise["sigma"]) * self._normal(noise.get("seed", 0), params, epoch)
        return value

    def _quadratic_value(self, x: list[float], epoch: int) -> float:
        terms = quadratic_terms(x)

        def poly(key: str) -> float:
            return sum(c * t for c, t in zip(self.model[key], terms))

        rate = math.exp(max(-30.0, min(5.0, poly("log_rate"))))
        return poly("asymptote") - poly("amplitude") * math.exp(-epoch * rate)

    def _kernel_value(self, x: list[float], epoch: int) -> float:
        per_epoch = self.model["epochs"]
        recorded = sorted(int(e) for e in per_epoch)
        at = per_epoch[str(min(max(epoch, recorded[0]), recorded[-1]))]
        scales = self.model["length_scales"]
        total = at["mean"]
        for centre, weight in zip(self.model["centres"], at["weights"]):
            distance = sum(((a - b) / s) ** 2 for a, b, s in zip(x, centre, scales))
            total += weight * math.exp(-0.5 * distance)
        return total

    def expected(self, params: Mapping[str, Any], epoch: int) -> float:
        """The value without noise (what regret is measured on)."""
        return SurrogateCurves({**self.model, "noise": None}, self.source).value(params, epoch)

    def _normal(self, seed: int, params: Mapping[str, Any], epoch: int) -> float:
        key = json.dumps([seed, [repr(params.get(a)) for a in self.axes], epoch])
        digest = hashlib.sha256(key.encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big")).gauss(0.0, 1.0)



def load_replay(path: str | Path, spec: StudySpec):
    """Recorded curves (CSV) or a surrogate (JSON) to replay through the worker."""
    if str(path).endswith(".json"):
        return SurrogateCurves.load(path, spec)
    from hpo.service.learning_curves import LearningCurves

    return LearningCurves.load(path, spec)
