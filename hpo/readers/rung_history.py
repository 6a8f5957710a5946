"""The rung history of a study: at each boundary, who was compared on what value, who went on.

Read by ``simulate`` (its printed rungs) and by the report (its rung ladder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hpo.scheduling.rungs import is_finite
from hpo.scheduling.spec import StudySpec
from hpo.service import db


@dataclass
class RungSummary:
    rung: int
    epoch: int
    # {"trial", "params", "value", "non_finite"}: value None when non_finite
    compared: list[dict[str, Any]]
    survivors: list[int]



def rung_summaries(spec: StudySpec, storage_url: str,
                   params_of: dict[int, dict]) -> list[RungSummary]:
    """Per rung: who was compared on what value, and who went on.

    Synchronous halving stores its decisions; for Optuna's asynchronous
    pruners the same picture is read off the reported values: trials that
    reached a boundary were compared there, those that reported past it survived.
    """
    with db.reading(storage_url) as conn:
        stored = conn.execute(sa.select(db.rungs).where(db.rungs.c.study == spec.name)
                              .order_by(db.rungs.c.rung)).all()
        reported = conn.execute(sa.select(db.epochs.c.number, db.epochs.c.epoch, db.epochs.c.value)
                                .where(db.epochs.c.study == spec.name, db.epochs.c.kept)).all()
    if stored:
        return [RungSummary(
            rung=r.rung, epoch=r.epoch,
            compared=[_entry(int(n), params_of[int(n)], v)
                      for n, v in sorted(json.loads(r.values_json).items(), key=lambda kv: int(kv[0]))],
            survivors=json.loads(r.survivors_json)) for r in stored]
    values: dict[int, dict[int, float]] = {}
    for number, epoch, value in reported:
        values.setdefault(number, {})[epoch] = value
    summaries = []
    for k, boundary in enumerate(spec.boundaries):
        compared = [n for n in sorted(values) if boundary in values[n]]
        if not compared:
            continue
        survivors = [n for n in compared if max(values[n]) > boundary]
        if k == len(spec.boundaries) - 1:
            survivors = compared
        summaries.append(RungSummary(
            rung=k, epoch=boundary,
            compared=[_entry(n, params_of[n], values[n][boundary]) for n in compared],
            survivors=survivors))
    return summaries


def _entry(number: int, params: dict, value: float | None) -> dict[str, Any]:
    """A compared trial; a non-finite value (stored as NULL) is None plus a flag."""
    finite = is_finite(value)
    return {"trial": number, "params": params, "value": value if finite else None,
            "non_finite": not finite}
