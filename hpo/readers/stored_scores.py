"""Where a trial's test-set scores are stored, for readers such as the report.

Two commands score a study's winner on the test split and keep the result on its
Optuna trial as a user attribute:

- ``saan-hpo table``: ``test_metrics`` (hpo/readers/table.py), computed from the stored
  predictions of the trial's own checkpoint; preferred when both exist;
- ``saan-hpo export --evaluate``: ``export_test_metrics``, the trainer's
  evaluation of the winner's checkpoint (or of a retrained copy when that is gone).
"""

from __future__ import annotations

from typing import Any, Mapping

from hpo.readers.table import ATTR_METRICS
from hpo.service import optuna_link

ATTR_EXPORT_METRICS = "export_test_metrics"
ORIGINS = ((ATTR_METRICS, "saan-hpo table"), (ATTR_EXPORT_METRICS, "saan-hpo export --evaluate"))


def stored_test_scores(user_attrs: Mapping[str, Any]) -> tuple[dict[str, float], str] | None:
    """(scores, which command stored them), or None when no command has scored the trial."""
    for attr, origin in ORIGINS:
        scores = user_attrs.get(attr)
        if isinstance(scores, Mapping) and scores:
            return ({k: float(v) for k, v in scores.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)}, origin)
    return None


def store_export_scores(storage_url: str, study_name: str, number: int,
                        scores: Mapping[str, Any]) -> None:
    """Keep ``export --evaluate``'s test scores on the winner's trial."""
    numbers = {k: float(v) for k, v in scores.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    storage = optuna_link.optuna_storage(storage_url)
    optuna_link.store_finished_trial_attrs(
        storage, optuna_link.trial_id(storage, study_name, number),
        {ATTR_EXPORT_METRICS: numbers})
