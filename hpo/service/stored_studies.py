"""Studies as a storage holds them: rebuilt specs, which are unfinished, how far each is.

Everything a worker needs to serve a study is stored with it (the hashed
identity in ``spec_json``, the full run config in ``run_json``, the unhashed
[study] settings in ``settings_json`` and ``priority``), so a worker given only
a storage URL rebuilds every study's spec from here. Paths in the stored run
config are the creating machine's; hpo/service/machine.py replaces them with
the serving machine's own.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpo.scheduling.fleet import StudyLoad
from hpo.scheduling.spec import StudySpec, spec_from_mapping
from hpo.service import db

FINAL_STATES = ("pruned", "complete", "failed")
ANY_STUDY = "*"  # the workers table's study of a fleet worker before its first claim


def spec_from_row(row: Any, storage_url: str) -> StudySpec:
    """The spec a study was created with, from its row in the studies table."""
    identity = json.loads(row.spec_json)
    study: dict[str, Any] = {"name": row.name, "metric": identity["metric"],
                             "direction": identity["direction"], "storage": storage_url,
                             "artifacts": row.artifacts}
    settings = json.loads(row.settings_json) if getattr(row, "settings_json", None) else {}
    # Studies created by an older version stored fewer keys: the rest keep their defaults.
    for key in ("lease_seconds", "description", "time_budget", "max_retries", "tensorboard", "mlflow",
                "data_parallel", "min_rank_batch", "max_gang", "gang_timeout"):
        if settings.get(key) is not None:
            study[key] = settings[key]
    if getattr(row, "priority", None) is not None:
        study["priority"] = row.priority
    # A space study (kind hyperband-sync) stores its [space] instead of a grid.
    points = {"space": identity["space"]} if identity.get("space") else {"grid": identity["grid"]}
    raw = {"study": study, **points, "scheduler": identity["scheduler"], **json.loads(row.run_json)}
    return spec_from_mapping(raw, source=f"study {row.name!r}")


def ready_rows(conn: Connection, names: Iterable[str] | None = None) -> list[Any]:
    """Rows of the studies that are fully created, by name; only ``names`` when given."""
    query = sa.select(db.studies).where(db.studies.c.ready.is_(True)).order_by(db.studies.c.name)
    if names is not None:
        query = query.where(db.studies.c.name.in_(list(names)))
    return conn.execute(query).all()


def unfinished_names(conn: Connection, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that still have a trial not in a final state."""
    t = db.trials.c
    names = list(names)
    if not names:
        return []
    return sorted(conn.execute(sa.select(t.study).distinct().where(
        t.study.in_(names), t.state.not_in(FINAL_STATES))).scalars())


def study_loads(conn: Connection, specs: dict[str, StudySpec],
                now: float | None = None) -> list[StudyLoad]:
    """Where each study stands for the claim rule (hpo/scheduling/fleet.py), in one query."""
    now = time.time() if now is None else now
    t = db.trials.c
    in_flight = sa.and_(t.state == "running", t.lease_expires >= now)
    claimable = sa.or_(t.state == "waiting", sa.and_(t.state == "running", t.lease_expires < now))
    rows = conn.execute(sa.select(
        t.study,
        sa.func.sum(t.epochs_done).label("trained"),
        sa.func.sum(sa.case((in_flight, t.target_epoch - t.epochs_done), else_=0)).label("promised"),
        sa.func.min(sa.case((claimable, t.number), else_=None)).label("next_trial"),
    ).where(t.study.in_(list(specs))).group_by(t.study)).all()
    return [StudyLoad(name=r.study, priority=specs[r.study].priority,
                      planned_epochs=specs[r.study].planned_epochs(),
                      committed_epochs=int(r.trained or 0) + int(r.promised or 0),
                      next_trial=r.next_trial) for r in rows]
