"""The rung history of a study: at each boundary, who was compared on what value, who went on.

Read from storage here, interpreted by the study's policy
(:meth:`hpo.scheduling.policy.Policy.history`): synchronous halving stored
every verdict; for the other kinds the picture is read off the reported values.
``simulate`` prints it and the report draws it as the rung ladder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hpo.scheduling.rungs import RungDecision, is_finite
from hpo.scheduling.spec import StudySpec
from hpo.service import db


@dataclass
class RungSummary:
    rung: int
    epoch: int
    # {"trial", "params", "value", "non_finite"} by trial number: value None when non_finite
    compared: list[dict[str, Any]]
    survivors: list[int]


def rung_history(spec: StudySpec, storage_url: str) -> list[RungDecision]:
    """Per rung with any trial at its boundary: the values compared and who went on."""
    last = len(spec.boundaries) - 1
    with db.reading(storage_url) as conn:
        stored = conn.execute(sa.select(db.rungs).where(db.rungs.c.study == spec.name)
                              .order_by(db.rungs.c.rung)).all()
        reported_rows = conn.execute(
            sa.select(db.epochs.c.number, db.epochs.c.epoch, db.epochs.c.value)
            .where(db.epochs.c.study == spec.name, db.epochs.c.kept)).all()
    decisions = [RungDecision(
        rung=r.rung, epoch=r.epoch,
        values={int(n): v for n, v in json.loads(r.values_json).items()},
        survivors=tuple(json.loads(r.survivors_json)), pruned=tuple(json.loads(r.pruned_json)),
        last=r.rung == last) for r in stored]
    reported: dict[int, dict[int, float]] = {}
    for number, epoch, value in reported_rows:
        reported.setdefault(number, {})[epoch] = value
    return spec.policy.history(decisions, reported)


def rung_summaries(spec: StudySpec, storage_url: str,
                   params_of: dict[int, dict]) -> list[RungSummary]:
    """:func:`rung_history` with each compared trial's params, as ``simulate`` prints it."""
    return [RungSummary(
        rung=d.rung, epoch=d.epoch,
        compared=[_entry(n, params_of[n], v) for n, v in sorted(d.values.items())],
        survivors=list(d.survivors)) for d in rung_history(spec, storage_url)]


def _entry(number: int, params: dict, value: float | None) -> dict[str, Any]:
    """A compared trial; a non-finite value (stored as NULL) is None plus a flag."""
    finite = is_finite(value)
    return {"trial": number, "params": params, "value": value if finite else None,
            "non_finite": not finite}
