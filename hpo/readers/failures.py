"""Why a trial failed, or is being retried: the error its run raised, as stored by the worker.

The service keeps the last error of every trial whose run raised (type, message,
host, epoch, how many runs failed, whether it is final). ``status``, the report
and ``table`` show it through ``describe``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from hpo.service import db


def error_of(row: Any) -> dict | None:
    """The stored error of a service trial row, None when its runs never raised."""
    text = getattr(row, "error_json", None)
    return json.loads(text) if text else None


def trial_errors(name: str, storage_url: str) -> dict[int, dict]:
    """Trial number -> its last error, for the trials of study ``name`` that have one."""
    with db.reading(storage_url) as conn:
        rows = conn.execute(sa.select(db.trials.c.number, db.trials.c.error_json).where(
            db.trials.c.study == name, db.trials.c.error_json.is_not(None))).all()
    return {r.number: error_of(r) for r in rows}


def describe(error: dict) -> str:
    """One line: 'RuntimeError in epoch 2 on host-a: message (3 runs failed, final)'."""
    runs = error.get("failures", 1)
    tail = f"{runs} run{'s' if runs != 1 else ''} failed" + (", final" if error.get("final") else "")
    message = str(error.get("message") or "").replace("\n", " ")
    return (f"{error.get('type', 'Error')} in epoch {error.get('epoch', '?')} on "
            f"{error.get('host', '?')}: {message} ({tail})")
