"""[space] tables: distributions parsed and validated like every other key of a study file."""

from __future__ import annotations

import pytest

from model.config import ConfigError, read_toml
from hpo.scheduling.space import Dimension
from hpo.scheduling.spec import load_spec
from studyfiles import cli, write_space_study, write_study


def test_a_space_study_parses_into_dimensions_and_a_stable_hash(tmp_path):
    path = write_space_study(tmp_path / "s.toml", space={
        "lr": "{ log_uniform = [1e-6, 1e-2] }", "batch_size": "{ choice = [8, 16, 32, 64] }",
        "weight_decay": "{ uniform = [0, 1e-3] }",
        '"model.head_hidden"': "{ int = [64, 512], step = 64 }"})
    spec = load_spec(path)
    assert spec.grid == {} and spec.sampled and spec.axes == ["lr", "batch_size", "weight_decay",
                                                               "model.head_hidden"]
    assert spec.space["lr"] == Dimension("log_uniform", 1e-6, 1e-2)
    assert spec.space["batch_size"] == Dimension("choice", choices=(8, 16, 32, 64))
    assert spec.space["weight_decay"] == Dimension("uniform", 0.0, 1e-3)
    assert spec.space["model.head_hidden"] == Dimension("int", 64, 512, step=64)
    assert spec.identity()["space"]["model.head_hidden"] == {"int": [64, 512], "step": 64}
    assert spec.spec_hash() == load_spec(path).spec_hash()
    other = write_space_study(tmp_path / "o.toml", space={"lr": "{ log_uniform = [1e-6, 1e-3] }"})
    assert load_spec(other).spec_hash() != spec.spec_hash()


def test_grid_studies_keep_their_stored_spec_hash(tmp_path):
    """The new scheduler settings are left out of the identity at their defaults."""
    spec = load_spec(write_study(tmp_path / "g.toml"))
    assert set(spec.identity()["scheduler"]) == {"kind", "eta", "rungs", "min_epochs",
                                                 "schedule", "epochs"}
    assert "space" not in spec.identity()


BAD = [
    ('lr = { log_uniform = [0, 1e-2] }', "space.lr.log_uniform", "> 0"),
    ('lr = { log_uniform = [1e-2, 1e-6] }', "space.lr.log_uniform", "low < high"),
    ('lr = { log_uniform = [1e-3] }', "space.lr.log_uniform", "[low, high]"),
    ('lr = { log_uniform = ["a", 1] }', "space.lr.log_uniform", "two numbers"),
    ('lr = { normal = [0, 1] }', "space.lr", "exactly one of"),
    ('lr = { uniform = [1e-4, 1e-3], log_uniform = [1e-4, 1e-3] }', "space.lr", "exactly one of"),
    ('lr = [1e-3, 1e-4]', "space.lr", "distribution table"),
    ('lr = { uniform = [-1e-3, 1e-3] }', "space.lr.uniform", "> 0"),
    ('batch_size = { uniform = [8, 64] }', "space.batch_size.uniform", "integer"),
    ('batch_size = { int = [8, 60], step = 8 }', "space.batch_size.step", "multiple"),
    ('batch_size = { int = [8.0, 64.0] }', "space.batch_size.int", "two integers"),
    ('batch_size = { choice = [] }', "space.batch_size.choice", "non-empty"),
    ('batch_size = { choice = [8, 8] }', "space.batch_size.choice", "distinct"),
    ('lr = { uniform = [1e-4, 1e-3], step = 1 }', "space.lr.step", "only with int"),
    ('"model.norm" = { uniform = [0, 1] }', "space.model.norm.uniform", "choice"),
    ('bogus = { uniform = [0, 1] }', "space.bogus", "unknown field"),
]


@pytest.mark.parametrize("entry, key, expected", BAD)
def test_bad_space_entries_name_the_file_and_key(tmp_path, entry, key, expected):
    path = write_space_study(tmp_path / "bad.toml", space={})
    path.write_text(path.read_text().replace("[space]\n", f"[space]\n{entry}\n"))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and f": {key}:" in str(err.value), str(err.value)
    assert expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda t: t.replace("[space]\n", "[space]\nlr = { log_uniform = [0, 1e-2] }\n", 1)
     .replace('lr = { log_uniform = [1e-6, 1e-2] }\n', ""), "space.lr.log_uniform", "> 0"),
    (lambda t: t.split("[space]")[0] + "[space]\n\n[scheduler]" + t.split("[scheduler]")[1],
     "space", "at least one setting"),
    (lambda t: t.replace('sampler = "tpe"', 'sampler = "gp"'), "scheduler.sampler", "random, tpe"),
    (lambda t: t.replace("[space]", "[grid]\nlr = [1e-3]\n\n[space]"), "grid", "draws from a [space]"),
    (lambda t: t.replace('kind = "hyperband-sync"', 'kind = "sync-halving"')
     .replace('sampler = "tpe"', "").replace("seed = 0", ""), "space",
     "only with kind hyperband-sync"),
])
def test_launch_refuses_a_bad_space_in_one_line_and_stores_nothing(tmp_path, mutate, key, expected):
    path = write_space_study(tmp_path / "bad.toml", storage=f"sqlite:///{tmp_path / 's.db'}")
    path.write_text(mutate(path.read_text()))
    done = cli("launch", str(path), "--workers", "0", cwd=tmp_path)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert str(path) in lines[0] and f": {key}:" in lines[0] and expected in lines[0], lines[0]
    assert not (tmp_path / "s.db").exists(), "a rejected study file must not create storage"


def test_sampler_settings_only_with_hyperband_sync(tmp_path):
    path = write_study(tmp_path / "g.toml", extra='sampler = "tpe"')
    with pytest.raises(ConfigError, match="scheduler.sampler: only with kind hyperband-sync"):
        load_spec(path)
    assert read_toml(path)["scheduler"]["sampler"] == "tpe"
