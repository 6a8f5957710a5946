"""The published experiments as studies (variants, ablation, reproduce), run small.

Each study file in studies/ runs on tiny synthetic data with a resnet18 SAAN
through ``launch``/``worker --data synthetic`` (hpo/scheduling/synthetic_twin.py); the equivalent
study file written by ``synthetic_study_text`` has the same spec and hash
(checked below).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy as sa

from hpo.cli.options import apply_data_option
from hpo.readers.published import COMPARED_COLUMNS
from hpo.readers.results import stored_spec
from hpo.readers.table import (ATTR_METRICS, ATTR_PREDICTIONS, TEST_SCORE_COLUMNS, axis_columns,
                               recompute_metrics, stored_predictions, to_markdown)
from hpo.scheduling.spec import load_spec
from hpo.scheduling.synthetic_twin import synthetic_mapping, synthetic_override, synthetic_study_text
from hpo.service import db
from studyfiles import cli, epoch_rows, run_here, study_rows

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"
PUBLISHED = ("variants", "ablation", "reproduce", "blog-grid")


def synthetic_argv(study: Path, tmp: Path, epochs: int) -> list[str]:
    """Arguments for launch/worker that run ``study`` small on synthetic data."""
    return [str(study), "--data", "synthetic", "--epochs", str(epochs)]


def storage_of(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / 'runs' / name / 'study.db'}"


# ---- the files ----------------------------------------------------------------------
def test_published_study_files_validate():
    specs = {name: load_spec(STUDIES / f"{name}.toml") for name in PUBLISHED}
    variants = specs["variants"]
    assert variants.grid == {"model.norm": ["bn", "gn", "gn-all"], "trainer.loss": ["mse", "huber"],
                             "batch_size": [64, 16]}
    assert len(variants.grid_points()) == 12 and variants.boundaries == [44]
    assert variants.scheduler.kind == "none" and variants.run.trainer.schedule == "paper"
    ablation = specs["ablation"]
    assert ablation.grid == {"model.branches": ["both", "no_style", "no_generic"]}
    assert ablation.boundaries == variants.boundaries == [44]
    reproduce = specs["reproduce"]
    t = reproduce.run.trainer
    assert reproduce.grid_points() == [{"lr": 1e-5}] and reproduce.boundaries == [100]
    assert (t.batch_size, t.schedule, t.beta1, t.beta2, t.weight_decay) == (64, "paper", 0.5, 0.999, 5e-4)
    for spec in specs.values():
        assert spec.run.data.root == "data/BAID" and spec.metric == "srcc"


@pytest.mark.parametrize("name", PUBLISHED)
def test_synthetic_override_keeps_the_question_and_shrinks_the_run(name, tmp_path):
    spec = load_spec(STUDIES / f"{name}.toml")
    small = synthetic_override(spec, epochs=3)
    assert small.name == f"{name}-synthetic" and small.spec_hash() != spec.spec_hash()
    assert small.storage == f"sqlite:///runs/{name}-synthetic/study.db"
    assert small.grid == spec.grid and small.metric == spec.metric
    assert small.scheduler.kind == spec.scheduler.kind and small.final_epoch <= 3
    assert small.run.data.synthetic and small.run.data.image_size == 32
    assert small.run.model.backbone == "resnet18" and small.run.model.pretrained == "none"
    assert small.run.trainer == spec.run.trainer.__class__(**{**vars(spec.run.trainer), "epochs": 3})
    # The written study file is the same study: `launch FILE` == `launch STUDY --data synthetic`.
    path = tmp_path / "small.toml"
    path.write_text(synthetic_study_text(spec, epochs=3))
    assert load_spec(path).spec_hash() == small.spec_hash()
    assert synthetic_override(small, 3).name == small.name  # no double suffix


def test_data_option_resolves_storage_for_the_new_name(monkeypatch):
    monkeypatch.delenv("SAAN_HPO_STORAGE", raising=False)
    spec = load_spec(STUDIES / "ablation.toml")
    args = argparse.Namespace(data="synthetic", epochs=2, storage=None, artifacts=None)
    small = apply_data_option(args, spec)
    twin = synthetic_override(spec, 2)
    assert (small.name, small.storage, small.artifacts) == ("ablation-synthetic", twin.storage,
                                                            twin.artifacts)
    assert twin.storage != spec.storage and twin.artifacts != spec.artifacts
    args = argparse.Namespace(data="synthetic", epochs=None, storage="sqlite:///x.db", artifacts="a")
    small = apply_data_option(args, spec)
    assert (small.storage, small.artifacts, small.final_epoch) == ("sqlite:///x.db", "a",
                                                                  spec.final_epoch)
    monkeypatch.setenv("SAAN_HPO_STORAGE", "sqlite:///from-launch.db")  # a child worker
    args = argparse.Namespace(data="synthetic", epochs=2, storage=None, artifacts=None)
    assert apply_data_option(args, spec).storage == "sqlite:///from-launch.db"
    same = argparse.Namespace(data="study", epochs=None, storage=None, artifacts=None)
    assert apply_data_option(same, spec) == dataclasses.replace(spec, storage="sqlite:///from-launch.db")
    monkeypatch.delenv("SAAN_HPO_STORAGE")
    assert apply_data_option(same, spec) == spec
    with pytest.raises(Exception, match="--epochs"):
        apply_data_option(argparse.Namespace(data="study", epochs=3), spec)
    with pytest.raises(Exception, match="--epochs"):
        synthetic_mapping(spec, epochs=0)
    with pytest.raises(Exception, match="--name"):
        apply_data_option(argparse.Namespace(data="study", epochs=None, name="x"), spec)
    named = argparse.Namespace(data="synthetic", epochs=7, storage=None, artifacts=None, name="blog-7")
    small = apply_data_option(named, load_spec(STUDIES / "blog-grid.toml"))
    assert (small.name, small.storage, small.artifacts) == ("blog-7", "sqlite:///runs/blog-7/study.db",
                                                            "runs/blog-7/artifacts")
    assert small.boundaries == [1, 3, 7]  # the rungs that fit in 7 epochs


def test_synthetic_twin_keeps_the_study_shape_by_default():
    blog = load_spec(STUDIES / "blog-grid.toml")
    twin = synthetic_override(blog)
    assert twin.boundaries == blog.boundaries == [1, 3, 7, 15, 31]
    assert twin.planned_epochs() == blog.planned_epochs() == 80
    assert synthetic_override(blog, epochs=100).boundaries == blog.boundaries  # a cap, not a target
    variants = load_spec(STUDIES / "variants.toml")
    assert synthetic_override(variants).boundaries == variants.boundaries == [44]
    assert synthetic_override(variants, epochs=3).boundaries == [3]


def test_markdown_table_and_axis_names():
    assert axis_columns(["model.norm", "trainer.loss", "batch_size"]) == {
        "model.norm": "norm", "trainer.loss": "loss", "batch_size": "batch_size"}
    frame = pd.DataFrame([{"trial": 0, "norm": "bn", "state": "complete", "srcc": 0.41234},
                          {"trial": 1, "norm": "gn-all", "state": "pruned", "srcc": float("nan")}])
    text = to_markdown(frame)
    lines = text.splitlines()
    assert lines[0] == "| trial | norm   | state    |   srcc |"
    assert lines[1] == "|------:|--------|----------|-------:|"
    assert lines[2] == "|     0 | bn     | complete | 0.4123 |"
    assert lines[3] == "|     1 | gn-all | pruned   |        |"


# ---- end to end ---------------------------------------------------------------------
def _table(tmp: Path, name: str, fmt: str = "csv"):
    done = cli("table", "--study", name, "--storage", storage_of(tmp, name), "--format", fmt,
               cwd=tmp, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _check_table(tmp: Path, name: str, n_rows: int, columns: list[str], epochs: int, capsys,
                 own_process: bool):
    """``table`` twice, run from ``tmp``: the first call scores (in this process: the values are
    what is checked), the second reads the stored scores, in a process of its own when
    ``own_process`` (the command's exit code and output; it imports no torch)."""
    spec = load_spec(STUDIES / f"{name.removesuffix('-synthetic')}.toml")
    storage = storage_of(tmp, name)
    first = run_here(capsys, "table", "--study", name, "--storage", storage, "--format", "csv")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "scoring the test split" in first.stderr
    listed = pd.read_csv(io.StringIO(first.stdout))
    # These studies reproduce published ones: the published columns follow (tests/test_published.py
    # checks their values); a trial with two published counterparts is listed once for each.
    assert list(listed.columns) == ["trial", *columns, "state", "epochs", *TEST_SCORE_COLUMNS,
                                    *COMPARED_COLUMNS]
    frame = listed.drop_duplicates("trial").drop(columns=list(COMPARED_COLUMNS))
    assert len(frame) == n_rows and list(frame["trial"]) == list(range(n_rows))
    assert (frame["state"] == "complete").all() and (frame["epochs"] == epochs).all()
    assert frame[list(TEST_SCORE_COLUMNS)].notna().all().all()
    # Every grid point appears once, in grid order.
    points = [tuple(p.values()) for p in spec.grid_points()]
    assert [tuple(r) for r in frame[columns].itertuples(index=False)] == points

    stored_study = stored_spec(name, storage)  # its data root is relative to where launch ran
    study = optuna.load_study(study_name=name, storage=storage)
    for trial in study.trials:
        scores = trial.user_attrs[ATTR_METRICS]
        assert set(scores) == set(TEST_SCORE_COLUMNS)
        # Predictions live in the artifact store, not in Optuna's user attributes.
        assert ATTR_PREDICTIONS not in trial.user_attrs
        assert len(json.dumps(trial.user_attrs)) < 800, trial.user_attrs
        stored = stored_predictions(stored_study, trial)
        predictions = stored[ATTR_PREDICTIONS]
        assert len(predictions) >= 1 and all(round(p, 6) == p for p in predictions)
        assert recompute_metrics(stored_study, stored, trial.params) == scores
        row = frame[frame["trial"] == trial.number].iloc[0]
        assert row["srcc"] == pytest.approx(scores["srcc"], abs=1e-5)

    # reuses the stored scores
    if own_process:
        again = _table(tmp, name, "markdown")
    else:
        again = run_here(capsys, "table", "--study", name, "--storage", storage, "--format", "markdown")
        assert again.returncode == 0, again.stderr[-3000:]
    assert "scoring the test split" not in again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == len(listed) + 2 and all(c in lines[0] for c in columns)
    return frame


def test_variants_and_ablation_run_on_synthetic_data_and_tabulate(tmp_path, monkeypatch, capsys):
    """One epoch each: what is tested is that every configuration trains and tabulates.

    The launches run in this process (one worker: no process start-up to pay for); the same
    twin with ``--workers 2`` child processes runs in tests/test_readme.py.
    """
    monkeypatch.chdir(tmp_path)  # where the twins' relative data, storage and artifacts go
    done = run_here(capsys, "launch", *synthetic_argv(STUDIES / "variants.toml", tmp_path, 1))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "variants-synthetic" in done.stdout
    assert len(epoch_rows(storage_of(tmp_path, "variants-synthetic"), "variants-synthetic")) == 12
    _check_table(tmp_path, "variants-synthetic", 12, ["norm", "loss", "batch_size"], 1, capsys,
                 own_process=True)

    done = run_here(capsys, "launch", *synthetic_argv(STUDIES / "ablation.toml", tmp_path, 1))
    assert done.returncode == 0, done.stderr[-3000:]
    frame = _check_table(tmp_path, "ablation-synthetic", 3, ["branches"], 1, capsys,
                         own_process=False)
    assert list(frame["branches"]) == ["both", "no_style", "no_generic"]


def test_table_of_a_study_without_finished_trial_is_one_line_exit_2(tmp_path):
    from hpo.service.study import open_or_create

    spec = synthetic_override(load_spec(STUDIES / "ablation.toml"), 2)
    storage = storage_of(tmp_path, spec.name)
    Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True)  # open_or_create makes no folder
    open_or_create(spec, storage)
    done = cli("table", "--study", spec.name, "--storage", storage, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no finished trial" in done.stderr
    done = cli("table", "--study", "nope", "--storage", storage, cwd=tmp_path)
    assert done.returncode == 2 and "not found" in done.stderr


def _kill_after_first_epoch(worker: subprocess.Popen, storage: str, name: str, tmp: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and worker.poll() is None:
        if (tmp / "runs" / name / "study.db").exists():
            try:
                if len(epoch_rows(storage, name)) >= 1:
                    break
            except sa.exc.OperationalError:  # tables not created yet
                pass
        time.sleep(0.05)
    assert worker.poll() is None, (tmp / "killed-worker.log").read_text()[-3000:]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)


def test_reproduce_killed_mid_study_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    """The killed worker is a real process (SIGKILL, no clean-up); creating the study and the
    relaunch that takes its trial over run in this process."""
    monkeypatch.chdir(tmp_path)
    epochs, name = 6, "reproduce-synthetic"
    # A short lease, so the relaunch takes the killed worker's trial over quickly.
    text = (STUDIES / "reproduce.toml").read_text().replace(
        '[study]\n', '[study]\nlease_seconds = 2\n', 1)
    study = tmp_path / "reproduce.toml"
    study.write_text(text)
    argv = synthetic_argv(study, tmp_path, epochs)
    storage = storage_of(tmp_path, name)
    created = run_here(capsys, "launch", *argv, "--workers", "0")
    assert created.returncode == 0, created.stderr[-3000:]
    with open(tmp_path / "killed-worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", *argv], cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            _kill_after_first_epoch(worker, storage, name, tmp_path)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
    (at_kill,) = study_rows(storage, db.trials, name)
    assert 1 <= at_kill.epochs_done < epochs and at_kill.checkpoint_id

    done = run_here(capsys, "launch", *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "runs" / name / "logs" / "launch.log").read_text()  # launch's full log
    assert f"epoch {at_kill.epochs_done} -> {epochs} (taken over)" in log
    rows = epoch_rows(storage, name)
    # Every epoch trained and recorded once: the relaunch went on from the checkpoint.
    assert sorted(r.epoch for r in rows) == list(range(1, epochs + 1))
    (final,) = study_rows(storage, db.trials, name)
    assert (final.state, final.epochs_done, final.claims) == ("complete", epochs, 2)
    best = optuna.load_study(study_name=name, storage=storage).best_trial
    assert best.user_attrs["epochs"] == epochs
