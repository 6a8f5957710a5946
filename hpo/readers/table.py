"""A study's comparison table: one row per trial, test-set scores of the finished ones.

Columns: the trial number, the grid axes (named by field: ``model.norm`` is
``norm``), the trial's state and epochs trained, then test accuracy, the
constant "<= 5" predictor's accuracy on the same images, PLCC, SRCC and MSE.

Each COMPLETE trial's checkpoint is scored on the test split once; the scores
are stored on the Optuna trial, the predictions behind them beside its
checkpoints in the study's artifact store, so later tables reuse them without
loading a network and ``optuna best-trial`` stays a short row:

- user attribute ``test_metrics``: ``model.metrics.compute_metrics`` of the
  stored predictions;
- user attribute ``test_predictions_artifact``: the artifact id of a JSON file
  (``stored_predictions`` reads it) holding ``test_predictions``, predicted
  scores (0-10, rounded to 1e-6) in test-CSV order, and ``test_skipped``, test
  images that were missing or unreadable (no prediction).

The metrics are computed *from the rounded predictions*, so
``recompute_metrics`` (predictions against the test CSV's true scores) gives
exactly the stored values. Pruned, failed and unfinished trials are listed
with empty scores: their checkpoints are deleted or still changing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from typing import Any

import optuna
import pandas as pd
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from model.errors import SaanError
from hpo.readers.failures import describe, trial_errors
from hpo.readers.results import checkpoint_ids, stored_spec
from hpo.scheduling.spec import StudySpec
from hpo.readers.published import SCORE_COLUMNS
from hpo.service import db, optuna_link
from hpo.service.checkpoints import CheckpointStore
from hpo.service.trial_runs import SaanRun

log = logging.getLogger(__name__)

# The table's score columns: test-set scores of a finished trial's checkpoint.
TEST_SCORE_COLUMNS = ("accuracy", "constant_accuracy", "plcc", "srcc", "mse")
PREDICTION_DIGITS = 6
ATTR_METRICS, ATTR_PREDICTIONS, ATTR_SKIPPED = "test_metrics", "test_predictions", "test_skipped"
ATTR_PREDICTIONS_ARTIFACT = "test_predictions_artifact"


class NoFinishedTrial(SaanError):
    """The study has no COMPLETE trial yet, so there is nothing to score."""


# ---- scoring one trial ------------------------------------------------------------
def score_trial(spec: StudySpec, params: dict, checkpoint: bytes,
                device: str | None = None) -> dict[str, Any]:
    """Load a trial checkpoint and predict the test split: the attrs to store."""
    run = SaanRun(spec, params, device)
    run.load_bytes(checkpoint)
    pred, _true, _names = run.trainer.predict("test")
    attrs = {ATTR_PREDICTIONS: [round(float(p), PREDICTION_DIGITS) for p in pred],
             ATTR_SKIPPED: list(run.trainer.split("test").skipped)}
    # Scored exactly as a reader will recompute them: rounded predictions
    # against the CSV's scores (the trainer's copy of those is float32).
    attrs[ATTR_METRICS] = recompute_metrics(spec, attrs, params)
    return attrs


def recompute_metrics(spec: StudySpec, attrs: dict[str, Any], params: dict | None = None) -> dict:
    """The metrics of stored predictions against the true scores in the test CSV."""
    # torch only when a table has something to score (start-up time)
    from model.dataset_index import split_rows
    from model.metrics import compute_metrics

    cfg = spec.run_config(params or {}).data
    skipped = set(attrs.get(ATTR_SKIPPED) or ())
    true = [score for name, score in split_rows(cfg, "test") if name not in skipped]
    return compute_metrics(attrs[ATTR_PREDICTIONS], true)


def predictions_artifact_id(store, number: int) -> str:
    return store.named(f"{store.prefix}-t{number}-test-predictions.json")


def store_predictions(store, number: int, scored: dict[str, Any]) -> str:
    """Write a trial's test predictions as a JSON artifact; its id."""
    artifact_id = predictions_artifact_id(store, number)
    payload = {k: scored[k] for k in (ATTR_PREDICTIONS, ATTR_SKIPPED)}
    store.write(artifact_id, json.dumps(payload).encode())
    return artifact_id


def stored_predictions(spec: StudySpec, trial, artifacts: str | None = None) -> dict[str, Any] | None:
    """A scored trial's ``test_predictions`` and ``test_skipped``, read back from the artifact store."""
    from hpo.service.checkpoints import CheckpointStore

    artifact_id = trial.user_attrs.get(ATTR_PREDICTIONS_ARTIFACT)
    if not artifact_id:
        return None
    return json.loads(CheckpointStore(artifacts or spec.artifacts, spec.name).load(artifact_id))


# ---- the table --------------------------------------------------------------------
def axis_columns(axes: Iterable[str]) -> dict[str, str]:
    """Grid axis -> column name: the bare field name unless two axes share it."""
    axes = list(axes)
    bare = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: (b if bare.count(b) == 1 else a) for a, b in zip(axes, bare)}


def study_table(name: str, storage_url: str, artifacts: str | None = None,
                device: str | None = None):
    """The comparison table as a pandas DataFrame; scores missing ones first (stored)."""
    spec = stored_spec(name, storage_url)
    storage = optuna_link.optuna_storage(storage_url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise NoFinishedTrial(f"study {name!r} on {db.mask_url(storage_url)}: no finished trial "
                              "to score yet (status shows how far it is)")
    checkpoints = checkpoint_ids(spec.name, storage_url)
    errors = trial_errors(spec.name, storage_url)
    store = CheckpointStore.for_study(artifacts or spec.artifacts, spec.name, storage_url, storage)
    columns = axis_columns(spec.axes)  # a space study's dimensions, like a grid's axes
    rows = []
    for trial in trials:
        metrics = None
        if trial.state == TrialState.COMPLETE:
            metrics = trial.user_attrs.get(ATTR_METRICS)
            if metrics is None:
                metrics = _score_and_store(spec, storage, trial, checkpoints.get(trial.number),
                                           store, device)
        row = {"trial": trial.number}
        row.update({columns[axis]: trial.params.get(axis) for axis in spec.axes})
        row.update(state=_state(trial, errors.get(trial.number)),
                   epochs=trial.user_attrs.get("epochs", 0))
        row.update({k: (metrics or {}).get(k, math.nan) for k in TEST_SCORE_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["trial", *columns.values(), "state", "epochs",
                                       *TEST_SCORE_COLUMNS])


def _state(trial, error: dict | None) -> str:
    """Optuna's state; a FAILED trial's with its reason (one cell: no '|' or line breaks)."""
    state = trial.state.name.lower()
    if trial.state == TrialState.FAIL and error is not None:
        state += ": " + describe(error).replace("|", "/")
    elif trial.state == TrialState.PRUNED and trial.intermediate_values and not math.isfinite(
            trial.intermediate_values[max(trial.intermediate_values)]):
        state += " (non-finite objective)"
    return state


def _score_and_store(spec, storage, trial, checkpoint_id, store, device) -> dict | None:
    if not checkpoint_id:
        log.warning("trial %d: no checkpoint recorded; its test scores are left empty", trial.number)
        return None
    try:
        payload = store.load(checkpoint_id)
    except ArtifactNotFound:
        log.warning("trial %d: checkpoint %s not found in %s; its test scores are left empty",
                    trial.number, checkpoint_id, spec.artifacts)
        return None
    log.info("trial %d %s: scoring the test split", trial.number, trial.params)
    scored = score_trial(spec, trial.params, payload, device)
    # Predictions first: a trial with metrics always has its predictions stored.
    artifact_id = store_predictions(store, trial.number, scored)
    optuna_link.store_finished_trial_attrs(
        storage, optuna_link.trial_id(storage, spec.name, trial.number),
        {ATTR_METRICS: scored[ATTR_METRICS], ATTR_PREDICTIONS_ARTIFACT: artifact_id})
    return scored[ATTR_METRICS]


# ---- rendering --------------------------------------------------------------------
def to_markdown(frame) -> str:
    """A GitHub-style Markdown table (written here: pandas would need ``tabulate``)."""
    header = list(frame.columns)
    cells = [[_cell(column, value) for column, value in zip(header, row)]
             for row in frame.itertuples(index=False, name=None)]
    numeric = [frame[c].dtype.kind in "iuf" for c in header]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line([str(h) for h in header]), rule, *(line(r) for r in cells)]) + "\n"


def _cell(column: str, value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if column in TEST_SCORE_COLUMNS or column in SCORE_COLUMNS:
            return f"{value:+.4f}" if column.startswith("diff_") else f"{value:.4f}"
        return f"{value:g}"
    return str(value)


def to_csv(frame) -> str:
    return frame.to_csv(index=False, float_format="%.6g")
