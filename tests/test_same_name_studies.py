"""Issue 23's sequence: studies of one name on several storages share a folder and lose nothing.

The README's order, as a new user runs it, on a shrunk demo (test_readme.SHRUNK's
cut-downs: 2 configurations, 2 rungs, 48 synthetic images): launch the demo on
its default storage; replay it into another storage through the Python API;
launch the same study file on a third storage; then ``export --study demo
--evaluate`` with no ``--storage``. The first demo's winner checkpoint must
survive the two other studies' clean-ups and be the one export scores (no
retraining); a winner whose checkpoint is gone is retrained once and kept.
Real worker processes, real SQLite files, the real CLI.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import optuna
import pytest

from hpo.service import db
from studyfiles import cli, study_rows
from test_readme import SHRUNK

ROOT = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"


def shrunk_demo(folder: Path) -> Path:
    (folder / "studies").mkdir(parents=True, exist_ok=True)
    text = (ROOT / "studies" / "demo.toml").read_text()
    for old, new in SHRUNK["demo.toml"]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = folder / "studies" / "demo.toml"
    path.write_text(text)
    (folder / "bench").mkdir(exist_ok=True)
    shutil.copy(ROOT / "bench" / "demo-curves.csv", folder / "bench" / "demo-curves.csv")
    return path


def winner_checkpoint(storage: str) -> str:
    best = optuna.load_study(study_name="demo", storage=storage).best_trial
    (row,) = [t for t in study_rows(storage, db.trials, "demo") if t.number == best.number]
    assert row.checkpoint_id, "the winner keeps its checkpoint"
    return row.checkpoint_id


def ok(done) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    assert TRACEBACK not in done.stdout + done.stderr, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_same_name_studies_keep_their_checkpoints_and_export_uses_the_first(tmp_path):
    shrunk_demo(tmp_path)
    artifacts = tmp_path / "runs" / "demo" / "artifacts"
    default = f"sqlite:///{tmp_path / 'runs' / 'demo' / 'study.db'}"

    ok(cli("launch", "studies/demo.toml", "--workers", "2", cwd=tmp_path, timeout=600))
    first = winner_checkpoint(default)
    assert (artifacts / first).is_file()

    # The README's API example: the same study name replayed into another storage.
    replay = ("import hpo\n"
              "hpo.launch('studies/demo.toml', storage='sqlite:///runs/demo-replay/study.db', "
              "replay_curves='bench/demo-curves.csv')\n")
    ok(cli_python(replay, tmp_path))
    assert (artifacts / first).is_file(), "the replay's clean-up deleted the demo's winner"

    # The same study file on a second storage (what a user does to try PostgreSQL).
    ok(cli("launch", "studies/demo.toml", "--storage", "sqlite:///elsewhere.db", "--workers", "1",
           cwd=tmp_path, timeout=600))
    assert (artifacts / first).is_file(), "the second storage's clean-up deleted the demo's winner"
    elsewhere = winner_checkpoint(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert (artifacts / elsewhere).is_file() and elsewhere.split("/")[0] != first.split("/")[0]

    # The README's exact export line: no --storage.
    err = ok(cli("export", "--study", "demo", "--evaluate", cwd=tmp_path, timeout=600))
    assert "retraining" not in err, err  # the first winner's checkpoint was found and used
    assert (artifacts / first).is_file() and winner_checkpoint(default) == first
    best = optuna.load_study(study_name="demo", storage=default).best_trial
    assert best.user_attrs["export_test_metrics"]["srcc"] == pytest.approx(
        float(next(line for line in (tmp_path / "runs" / "demo" / "best.toml").read_text()
                   .splitlines() if line.startswith("# test scores:"))
              .split("srcc ")[1].split(",")[0]), abs=1e-4)

    # A winner whose checkpoint is gone: retrained once, kept, and the next export loads it.
    (artifacts / first).unlink()
    err = ok(cli("export", "--study", "demo", "--evaluate", cwd=tmp_path, timeout=600))
    assert "retraining trial" in err and "kept the retrained winner" in err, err
    kept = winner_checkpoint(default)
    assert kept != first and (artifacts / kept).is_file()
    err = ok(cli("export", "--study", "demo", "--evaluate", cwd=tmp_path, timeout=600))
    assert "retraining" not in err, err


def cli_python(code: str, cwd: Path):
    import subprocess

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
