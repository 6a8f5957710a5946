"""ASHA, Hyperband (Optuna's pruners, unchanged) and `none` through the same worker."""

from __future__ import annotations

import random

import optuna
import pytest

from hpo.service.learning_curves import LearningCurves
from hpo.readers.simulate import simulate
from hpo.scheduling.spec import load_spec
from studyfiles import write_curves, write_study


@pytest.fixture(scope="module")
def table():
    rng = random.Random(3)
    # Rising curves with per-config slopes, so pruning has something to find.
    slopes = [rng.uniform(0.005, 0.03) for _ in range(16)]
    return [[min(1.0, s * e + rng.uniform(0, 0.02)) for e in range(1, 32)] for s in slopes]


@pytest.mark.parametrize("kind, schedule", [("asha", "geometric"), ("asha", "cumulative"),
                                            ("hyperband", "geometric")])
def test_async_pruners_spend_less_than_the_grid_and_complete_full_trials(tmp_path, table, kind, schedule):
    spec = load_spec(write_study(tmp_path / "s.toml", kind=kind, schedule=schedule))
    curves = LearningCurves.load(write_curves(tmp_path / "c.csv", table), spec)
    result = simulate(spec, curves, claim_seed=1)
    assert 0 < result.epochs_spent < spec.full_grid_epochs()
    assert result.winner is not None and result.regret >= 0
    # A trial that trained the full budget completes; it is never PRUNED (Optuna 5 pitfall).
    assert all(r.epoch <= spec.final_epoch for r in result.rungs)
    final = [c["trial"] for r in result.rungs if r.epoch == spec.final_epoch for c in r.compared]
    assert final and result.winner_trial in final


def test_none_trains_every_configuration_to_its_fixed_epochs(tmp_path, table):
    path = write_study(tmp_path / "s.toml", kind="none", extra="epochs = 4",
                       grid={"lr": [1e-3, 1e-4], "batch_size": [64, 32]})
    spec = load_spec(path)
    assert spec.boundaries == [4]
    curves = LearningCurves.load(write_curves(tmp_path / "c.csv", table[:4],
                                              {"lr": [1e-3, 1e-4], "batch_size": [64, 32]}), spec)
    result = simulate(spec, curves)
    assert result.epochs_spent == 16
    assert result.regret == 0.0


def test_asha_depends_on_trial_order_where_sync_halving_does_not(tmp_path, table):
    """Why the synchronous mode exists: ASHA's budget moves with the claim order."""
    asha = load_spec(write_study(tmp_path / "a.toml", kind="asha", schedule="geometric"))
    curves = LearningCurves.load(write_curves(tmp_path / "c.csv", table), asha)
    budgets = {simulate(asha, curves, claim_seed=seed).epochs_spent for seed in range(4)}
    sync = load_spec(write_study(tmp_path / "s.toml", name="sync"))
    sync_budgets = {simulate(sync, curves, claim_seed=seed).epochs_spent for seed in range(3)}
    assert sync_budgets == {80}
    assert len(budgets) > 1, budgets
    study_states = optuna.trial.TrialState
    assert study_states.PRUNED  # imported for the readers of this test: states are Optuna's
