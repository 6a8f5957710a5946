"""refine: a grid winner's neighbourhood as a hyperband-sync study file that launch accepts."""

from __future__ import annotations

import tomllib

from hpo.scheduling.refine import brackets_within, neighbourhood, refined_space
from hpo.scheduling.space import Dimension
from hpo.scheduling.spec import load_spec
from studyfiles import cli, write_curves, write_study


def test_one_grid_step_either_side_log_scale_for_lr():
    lrs = [1e-3, 1e-4, 1e-5, 1e-6]
    assert neighbourhood("lr", lrs, 1e-4) == Dimension("log_uniform", 1e-5, 1e-3)
    assert neighbourhood("lr", lrs, 1e-3) == Dimension("log_uniform", 1e-4, 1e-2)  # the edge: once more
    assert neighbourhood("batch_size", [64, 32, 16, 8], 32) == Dimension("int", 16, 64, step=16)
    assert neighbourhood("batch_size", [64, 32, 16, 8], 8) == Dimension("int", 4, 16, step=4)
    assert neighbourhood("weight_decay", [0.0, 5e-4, 1e-3], 0.0) == Dimension("uniform", 0.0, 5e-4)
    assert neighbourhood("model.norm", ["bn", "gn"], "gn") == Dimension("choice", choices=("bn", "gn"))
    assert neighbourhood("lr", [1e-3], 1e-3) == Dimension("choice", choices=(1e-3,))
    assert refined_space({"lr": lrs}, {"lr": 1e-5}) == {"lr": Dimension("log_uniform", 1e-6, 1e-4)}


def test_a_budget_buys_whole_brackets():
    # eta 2, 5 cumulative rungs: brackets of 80, 82, 89, 107, 155 epochs, 513 a round
    assert [brackets_within(2, 5, 1, "cumulative", b) for b in (79, 80, 161, 162, 513, 1026)] == [
        0, 1, 1, 2, 5, 10]


def test_refine_writes_a_file_that_launch_accepts(tmp_path):
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage)
    # grid point 5 (lr 1e-4, batch 32) best at every epoch
    table = [[(0.9 if i == 5 else 0.01 * i) + 0.001 * e for e in range(31)] for i in range(16)]
    curves = write_curves(tmp_path / "c.csv", table)
    assert cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path).returncode == 0
    out = tmp_path / "refined.toml"
    done = cli("refine", "--study", "blog", "--storage", storage, "--budget", "170", "-o", str(out),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 brackets, 162 epochs planned" in done.stdout, done.stdout
    raw = tomllib.loads(out.read_text())
    assert raw["space"] == {"lr": {"log_uniform": [1e-5, 1e-3]},
                            "batch_size": {"int": [16, 64], "step": 16}}
    assert raw["scheduler"]["kind"] == "hyperband-sync" and raw["scheduler"]["brackets"] == 2
    spec = load_spec(out)
    assert spec.name == "blog-refined" and spec.planned_epochs() == 162
    refined_storage = f"sqlite:///{tmp_path / 'r.db'}"
    launched = cli("launch", str(out), "--workers", "0", "--storage", refined_storage, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    assert "162 epochs planned" in launched.stdout
    too_small = cli("refine", "--study", "blog", "--storage", storage, "--budget", "10",
                    "-o", str(out), cwd=tmp_path)
    assert too_small.returncode == 2 and "--budget: 10 epochs buy no bracket" in too_small.stderr
