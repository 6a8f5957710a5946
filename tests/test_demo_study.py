"""The README's demo end to end: SAAN trained through the study service on synthetic BAID."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import optuna

from hpo.readers.published import FILE_NAME as PUBLISHED_FIGURES
from hpo.scheduling.spec import load_spec
from studyfiles import cli, epoch_rows, stored_rungs

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_study_file_validates():
    names = set()
    for path in sorted((ROOT / "studies").glob("*.toml")):
        if path.name == PUBLISHED_FIGURES:
            continue  # the published figures beside the studies, not a study (test_published.py)
        spec = load_spec(path)
        assert spec.grid_points(), path
        names.add(spec.name)
    assert {"demo", "blog-grid"} <= names
    blog = load_spec(ROOT / "studies" / "blog-grid.toml")
    assert blog.boundaries == [1, 3, 7, 15, 31] and blog.planned_epochs() == 80
    assert len(blog.grid_points()) == 16 and blog.metric == "srcc"


def recorded(name: str):
    """bench/<name>: a recorded run of the demo (bench/demo_margins.py reads them)."""
    from hpo.service.learning_curves import LearningCurves

    return LearningCurves.load(ROOT / "bench" / name, load_spec(ROOT / "studies" / "demo.toml"))


def demo_margins():
    import sys

    sys.path.insert(0, str(ROOT))
    import bench.demo_margins

    return bench.demo_margins


def readme_winner() -> tuple[int, float, int]:
    """The trial, lr and batch size the README names as the demo's winner on any machine."""
    quoted = re.search(r"\*\*trial (\d+), lr ([0-9e.+-]+) / batch (\d+)\*\*",
                       (ROOT / "README.md").read_text())
    assert quoted, "README: the demo's winner is not named"
    return int(quoted.group(1)), float(quoted.group(2)), int(quoted.group(3))


def test_demo_launch_learns_and_exports_with_test_scores(tmp_path):
    shutil.copy(ROOT / "studies" / "demo.toml", tmp_path / "demo.toml")
    # The README's command (default storage: runs/demo/).
    done = cli("launch", "demo.toml", "--workers", "2", cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'runs' / 'demo' / 'study.db'}"
    assert len(epoch_rows(storage, "demo")) == 80
    study = optuna.load_study(study_name="demo", storage=storage)
    best = study.best_trial
    assert best.user_attrs["epochs"] == 31
    # What the README promises on any machine (this one may not be the recordings'): every
    # cut keeps the recorded run's survivors, and the winner is the one it names.
    spec = load_spec(ROOT / "studies" / "demo.toml")
    rows, _ = demo_margins().cuts(spec, recorded("demo-run-avx512.csv"))
    assert [(epoch, sorted(survivors)) for epoch, _, survivors in stored_rungs(storage, "demo")[:4]] \
        == [(r["epoch"], r["survivors"]) for r in rows]
    number, lr, batch_size = readme_winner()
    assert (best.number, best.params) == (number, {"lr": lr, "batch_size": batch_size}), best.params
    final = recorded("demo-run-avx512.csv").curve(best.params)[31]
    assert abs(best.value - final) < 0.01, (best.value, final)  # "about" the recorded value
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials) == 15
    # Pruned trials' checkpoints are deleted; the winner's is kept for export.
    checkpoints = list((tmp_path / "runs" / "demo" / "artifacts").rglob("*.ckpt"))
    assert len(checkpoints) == 1 and f"-t{best.number}-e31-" in checkpoints[0].name

    out = tmp_path / "best.toml"
    done = cli("export", "--study", "demo", "--storage", storage, "-o", str(out), "--evaluate",
               cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test: accuracy" in done.stdout and "srcc" in done.stdout
    text = out.read_text()
    assert f"trial {best.number}, 31 epochs" in text and "test scores:" in text
    from model.config import RunConfig

    exported = RunConfig.load(out)
    assert exported.trainer.lr == best.params["lr"]
    assert exported.trainer.batch_size == best.params["batch_size"]


def test_demo_cut_margins_are_far_above_the_cross_machine_noise():
    """The README's demo figures come from bench/demo_margins.py on the recorded runs (AVX-512
    kernels, forced AVX2 kernels, and the full grid): every cut's margin is at least ten times
    the largest difference between the two machines' values, so every machine makes the same
    cuts and names the same winner."""
    margins = demo_margins()
    spec = load_spec(ROOT / "studies" / "demo.toml")
    avx512, avx2 = recorded("demo-run-avx512.csv"), recorded("demo-run-avx2.csv")
    measured_noise = margins.noise(spec, avx512, avx2)
    assert 0 < measured_noise, "the two recordings are equal: not two machines' kernels"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"the largest difference, {measured_noise:.4f}, by which two CPUs' kernels" in readme
    number, _, _ = readme_winner()
    decisions = []
    for curves in (avx512, avx2, recorded("demo-curves.csv")):
        rows, winner = margins.cuts(spec, curves)
        assert [r["epoch"] for r in rows] == [1, 3, 7, 15]
        assert all(r["margin"] > 10 * measured_noise for r in rows), (rows, measured_noise)
        assert winner == number
        decisions.append([r["survivors"] for r in rows])
    assert decisions[0] == decisions[1] == decisions[2]
    rows = margins.cuts(spec, avx512)[0]
    smallest = min(r["margin"] for r in rows)
    assert f"a margin of at least {smallest:.3f} SRCC" in readme, smallest
    assert "(" + ", ".join(f"{r['margin']:.3f}" for r in rows) + ")" in readme, rows
    assert f"about {smallest / measured_noise:.0f} times the largest difference" in readme


def shrunk_demo(path: Path) -> Path:
    """The demo with a quarter of its grid (4 learning rates, batch 8), 3 rungs, 48 images of
    32 px and a 64-wide head: the same kind of run (every trial's values compared bit for bit)
    in a fraction of the time."""
    text = (ROOT / "studies" / "demo.toml").read_text()
    for old, new in (("batch_size = [64, 32, 16, 8]", "batch_size = [8]"), ("rungs = 5", "rungs = 3"),
                     ("synthetic_n = 1000", "synthetic_n = 48"),
                     ("synthetic_val_n = 400", "synthetic_val_n = 0"),
                     ("synthetic_size = 48", "synthetic_size = 32"),
                     ("head_hidden = 256", "head_hidden = 64"), ('name = "demo"', 'name = "demo-small"')):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_same_decisions_and_winner_with_1_and_2_worker_processes(tmp_path):
    """Reproducible on CPU: a fixed thread count per trial and deterministic algorithms."""
    outcomes = []
    for workers in (1, 2):
        cwd = tmp_path / f"w{workers}"
        cwd.mkdir()
        study = shrunk_demo(cwd / "demo-small.toml")
        done = cli("launch", str(study), "--workers", str(workers), cwd=cwd, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        storage = f"sqlite:///{cwd / 'runs' / 'demo-small' / 'study.db'}"
        study = optuna.load_study(study_name="demo-small", storage=storage)
        curves = {t.number: t.intermediate_values for t in study.trials}
        outcomes.append((stored_rungs(storage, "demo-small"), study.best_trial.number, curves))
    (rungs_1, best_1, curves_1), (rungs_2, best_2, curves_2) = outcomes
    assert [epoch for epoch, _, _ in rungs_1] == [1, 3, 7]
    assert rungs_1 == rungs_2 and best_1 == best_2
    assert curves_1 == curves_2  # bitwise: every reported value of every trial
