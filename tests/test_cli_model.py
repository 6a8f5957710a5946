"""saan-hpo make-synthetic / train / evaluate, and their bad input.

Each process that imports torch costs seconds of start-up, so a real subprocess runs where the
command line itself is what is tested (the first ``train``, every bad-input case: exit code 2 and
one line on stderr); the checks of values (resume, evaluate's JSON, the refusal to overwrite)
call the same ``hpo.cli.main`` in this process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studyfiles import in_process

REPO = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None, env=None):
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "SAAN_HPO_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hpo.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, env=full_env, timeout=300)


def write_config(path: Path, root: Path, epochs: int, pretrained: str = "none") -> Path:
    path.write_text(f"""
[data]
root = "{root}"
image_size = 32

[model]
backbone = "resnet18"
head_hidden = 32
pretrained = "{pretrained}"

[trainer]
lr = 1e-3
batch_size = 16
epochs = {epochs}
schedule = "constant"
""")
    return path


@pytest.fixture(scope="module")
def baid(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "baid"
    assert in_process("make-synthetic", root, "--n", 60, "--size", 40, "--seed", 5) == 0
    assert (root / "dataset" / "train_set.csv").is_file() and len(list((root / "images").iterdir())) == 60
    return root


def test_train_resume_evaluate(baid, tmp_path, capsys):
    out = tmp_path / "run"
    result = cli("train", write_config(tmp_path / "one.toml", baid, 1), "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "last.pt").is_file() and len(json.loads((out / "history.json").read_text())) == 1

    # without --resume an existing checkpoint is never overwritten
    capsys.readouterr()
    assert in_process("train", tmp_path / "one.toml", "--out", out) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.splitlines()) == 1, err

    assert in_process("train", write_config(tmp_path / "two.toml", baid, 2), "--out", out, "--resume") == 0
    history = json.loads((out / "history.json").read_text())
    assert [m["epoch"] for m in history] == [1, 2]

    capsys.readouterr()
    assert in_process("evaluate", out / "last.pt", "--split", "test", "--json") == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["epoch"] == 2 and metrics["split"] == "test" and metrics["n"] == 9
    assert {"accuracy", "constant_accuracy", "plcc", "srcc", "mse"} <= set(metrics)


@pytest.mark.parametrize("case", ["missing_folder", "missing_column", "missing_weights",
                                  "missing_checkpoint", "existing_synthetic_dir"])
def test_bad_input_is_one_line_and_exit_2(baid, tmp_path, case):
    env = {"TORCH_HOME": str(tmp_path / "torch-home")}
    if case == "missing_folder":
        args, needle = ("train", write_config(tmp_path / "c.toml", tmp_path / "absent", 1)), "absent"
    elif case == "missing_column":
        root = tmp_path / "baid"
        (root / "dataset").mkdir(parents=True)
        (root / "images").mkdir()
        (root / "dataset" / "train_set.csv").write_text("file,score\nx.jpg,3\n")
        args, needle = ("train", write_config(tmp_path / "c.toml", root, 1)), "'image'"
    elif case == "missing_weights":
        args = ("train", write_config(tmp_path / "c.toml", baid, 1, pretrained="imagenet"))
        needle = "resnet18-f37072fd.pth"
    elif case == "missing_checkpoint":
        args, needle = ("evaluate", tmp_path / "none.pt"), "none.pt"
    else:
        args, needle = ("make-synthetic", baid), "already exists"
    if args[0] == "train":
        args = (*args, "--out", tmp_path / "o")
    result = cli(*args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("saan-hpo"), lines
