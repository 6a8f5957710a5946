"""Surrogate learning curves (JSON) for replaying space studies: checked on load, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.errors import DataError
from hpo.scheduling.spec import load_spec
from hpo.service.surrogate_curves import SurrogateCurves, load_replay
from studyfiles import write_space_study, write_surrogate

REPO = Path(__file__).resolve().parent.parent


def test_noise_is_the_same_for_the_same_seed_params_and_epoch(tmp_path):
    model = json.loads(write_surrogate(tmp_path / "s.json").read_text())
    params = {"lr": 3e-4, "batch_size": 16, "weight_decay": 1e-4}
    clean = SurrogateCurves(model, "s")
    noisy = SurrogateCurves({**model, "noise": {"sigma": 0.01, "seed": 3}}, "s")
    again = SurrogateCurves({**model, "noise": {"sigma": 0.01, "seed": 3}}, "s")
    other = SurrogateCurves({**model, "noise": {"sigma": 0.01, "seed": 4}}, "s")
    values = [noisy.value(params, e) for e in range(1, 6)]
    assert values == [again.value(params, e) for e in range(1, 6)]
    assert values != [other.value(params, e) for e in range(1, 6)]
    assert all(noisy.expected(params, e) == clean.value(params, e) for e in range(1, 6))
    assert clean.value(params, 8) > clean.value(params, 1)  # the test surrogate learns


def test_the_bench_surrogate_loads_and_answers_between_the_recorded_points(tmp_path):
    spec = load_spec(write_space_study(tmp_path / "s.toml"))
    surrogate = load_replay(REPO / "bench" / "search-surrogate.json", spec)
    value = surrogate.expected({"lr": 5e-4, "batch_size": 32, "weight_decay": 2.5e-4}, 8)
    assert -1.0 <= value <= 1.0
    assert surrogate.expected({"lr": 1e-3, "batch_size": 16, "weight_decay": 0.0}, 8) > \
        surrogate.expected({"lr": 1e-5, "batch_size": 64, "weight_decay": 0.0}, 8)


@pytest.mark.parametrize("mutate, expected", [
    (lambda m: {**m, "format": "other"}, "format"),
    (lambda m: {**m, "asymptote": [1.0]}, "asymptote: expected 10 coefficients"),
    (lambda m: {**m, "inputs": [{"name": "lr", "transform": "cube"}]}, "inputs"),
])
def test_a_bad_surrogate_is_one_line_naming_the_file(tmp_path, mutate, expected):
    path = write_surrogate(tmp_path / "s.json")
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(DataError) as err:
        SurrogateCurves.load(path)
    assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)
