"""Damaged checkpoints are never used: checksum framing, a study that goes on, evaluate exit 2.

Real files damaged as an operator would (truncate, overwrite 16 KB, delete), a
real study driven by worker processes, and the real ``evaluate`` command.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from model import checkpoint_file
from model.checkpoint_file import DamagedCheckpoint
from hpo.service import db
from studyfiles import cli, in_process, epoch_rows, oracle, stored_rungs, study_rows, write_curves, write_study

SMALL_GRID = {"lr": [1e-3, 1e-4], "batch_size": [64, 32]}  # 4 configurations
# rungs at 1, 3, 7 epochs; value of point i after epoch e
TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 8)] for i in range(4)]


def torch_zip(payload: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def overwrite(data: bytes, offset: int, length: int) -> bytes:
    return data[:offset] + bytes((b ^ 0x5A) for b in data[offset:offset + length]) + data[offset + length:]


# ---- the framing --------------------------------------------------------------------------
def test_framed_bytes_round_trip_and_any_damage_is_refused():
    payload = os.urandom(50_000)
    framed = checkpoint_file.frame(payload)
    assert checkpoint_file.unframe(framed) == payload
    with pytest.raises(DamagedCheckpoint, match="truncated"):
        checkpoint_file.unframe(framed[:30_000], "x.ckpt")
    with pytest.raises(DamagedCheckpoint, match="sha256"):
        checkpoint_file.unframe(overwrite(framed, 20_000, 16), "x.ckpt")
    with pytest.raises(DamagedCheckpoint, match="header"):
        checkpoint_file.unframe(framed[:40] + b"zz" + framed[42:], "x.ckpt")


def test_older_unframed_checkpoints_load_and_their_zip_crc_is_checked():
    legacy = torch_zip({"format": 1, "weights": list(range(5000))})
    assert checkpoint_file.unframe(legacy) == legacy  # written before the header: still loads
    with zipfile.ZipFile(io.BytesIO(legacy)) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    with pytest.raises(DamagedCheckpoint, match="CRC"):
        checkpoint_file.unframe(overwrite(legacy, start + 10, 64), "old.pt")
    with pytest.raises(DamagedCheckpoint, match="zip"):
        checkpoint_file.unframe(legacy[:len(legacy) // 2], "old.pt")
    replay = json.dumps({"epoch": 3}).encode()  # a replay run's checkpoint
    assert checkpoint_file.unframe(replay) == replay


def test_write_is_atomic_and_a_refused_write_names_the_path(tmp_path):
    path = checkpoint_file.write(tmp_path / "run" / "last.pt", b"abc")
    assert checkpoint_file.read(path) == b"abc"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    blocker = tmp_path / "file"
    blocker.write_text("")  # a folder path that is a file: refused even for root
    with pytest.raises(checkpoint_file.CheckpointWriteError, match=str(blocker / "last.pt")):
        checkpoint_file.write(blocker / "last.pt", b"abc")


# ---- a study whose paused trials' checkpoints are damaged --------------------------------
def damage(path: Path, how: str) -> None:
    if how == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif how == "overwritten":
        data = path.read_bytes()
        path.write_bytes(overwrite(data, len(data) // 3, min(16 << 10, len(data) // 3)))
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "overwritten", "deleted"])
def test_study_finishes_with_its_plan_and_winner_past_a_damaged_checkpoint(tmp_path, how):
    storage, study, curves, artifacts = small_study(tmp_path)
    # Stopped once rung 0 is decided: its survivors wait with their checkpoints.
    done = run_until_rung_decided(study, storage, curves, tmp_path, rung=0)
    assert done.returncode == 0, done.stderr
    victim = waiting_with_checkpoint(storage)[0]
    damage(artifacts / victim.checkpoint_id, how)

    done = cli("worker", str(study), "--replay-curves", str(curves), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stderr.splitlines() if f"trial {victim.number}:" in line
             and "retraining from epoch 0" in line]
    assert len(notes) == 1, done.stderr[-2000:]
    assert (how == "deleted") == ("not found" in notes[0])
    assert f"({victim.epochs_done} epoch(s) beyond the plan)" in notes[0], notes[0]  # said
    if how != "deleted":  # moved aside, never loaded again
        assert not (artifacts / victim.checkpoint_id).exists()
        assert (artifacts / (victim.checkpoint_id + ".damaged")).is_file()
        assert "moved aside" in notes[0], notes[0]
    check_plan_and_winner(storage)


def test_a_damaged_checkpoint_resumes_from_an_older_good_one(tmp_path):
    """An older checkpoint of the trial left in the study's folder (a removal that failed):
    the trial resumes there, not from epoch 0, and says how many epochs it retrains."""
    storage, study, curves, artifacts = small_study(tmp_path)
    done = run_until_rung_decided(study, storage, curves, tmp_path, rung=0)
    assert done.returncode == 0, done.stderr
    earlier = {t.number: (t.epochs_done, (artifacts / t.checkpoint_id).read_bytes())
               for t in waiting_with_checkpoint(storage)}
    done = run_until_rung_decided(study, storage, curves, tmp_path, rung=1)
    assert done.returncode == 0, done.stderr
    victim = next(t for t in waiting_with_checkpoint(storage)
                  if t.number in earlier and t.epochs_done > earlier[t.number][0])
    epoch, payload = earlier[victim.number]
    older = (artifacts / victim.checkpoint_id).parent / f"small-t{victim.number}-e{epoch}-0123abcd.ckpt"
    older.write_bytes(payload)
    damage(artifacts / victim.checkpoint_id, "truncated")

    done = cli("worker", str(study), "--replay-curves", str(curves), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stderr.splitlines() if f"trial {victim.number}:" in line
             and "resuming from the older checkpoint" in line]
    assert len(notes) == 1, done.stderr[-2000:]
    retrained = victim.epochs_done - epoch
    assert f"(epoch {epoch}): {retrained} epoch(s) retrained beyond the plan" in notes[0], notes[0]
    assert "retraining from epoch 0" not in done.stderr
    assert not older.exists()  # superseded by the retrained epochs' checkpoints, then removed
    check_plan_and_winner(storage)


def small_study(tmp_path: Path):
    """(storage URL, study file, curves file, artifacts folder) of the 4-configuration study."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "small.toml", name="small", storage=storage, grid=SMALL_GRID,
                        rungs=3)
    return storage, study, write_curves(tmp_path / "c.csv", TABLE, grid=SMALL_GRID), \
        tmp_path / "small-artifacts"


def waiting_with_checkpoint(storage: str):
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        waiting = conn.execute(sa.select(db.trials).where(
            db.trials.c.state == "waiting", db.trials.c.checkpoint_id.is_not(None))
            .order_by(db.trials.c.number)).all()
    engine.dispose()
    assert waiting, "survivors wait with their checkpoints"
    return waiting


def check_plan_and_winner(storage: str) -> None:
    expected, spent = oracle(TABLE, 2, [1, 3, 7])
    assert stored_rungs(storage, "small") == expected
    kept = [(r.number, r.epoch) for r in epoch_rows(storage, "small") if r.kept]
    assert len(kept) == len(set(kept)) == spent  # one counted row per planned epoch
    best = optuna.load_study(study_name="small", storage=storage).best_trial
    assert best.number == expected[-1][2][0]
    trials = study_rows(storage, db.trials, "small")
    assert not [t for t in trials if t.state == "failed"]


def run_until_rung_decided(study: Path, storage: str, curves: Path, cwd: Path, rung: int):
    """A worker that stops (SIGTERM: epoch finished, trial released) once ``rung`` is decided."""
    assert cli("launch", str(study), "--workers", "0", cwd=cwd).returncode == 0  # only launch creates
    log = open(cwd / "first-worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(study),
                               "--replay-curves", str(curves), "--replay-epoch-seconds", "0.2"],
                              cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if len(stored_rungs(storage, "small")) > rung:
                    break
            except sa.exc.OperationalError:
                pass  # tables not there yet
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        worker.kill()
        log.close()
    return subprocess.CompletedProcess(worker.args, worker.returncode, "",
                                       (cwd / "first-worker.log").read_text())


# ---- evaluate on a damaged file --------------------------------------------------------------
# The refusals run ``saan-hpo evaluate`` as a real process (exit code 2 and one line on stderr are
# the point, and a damaged file is refused before torch is imported); training the checkpoint and
# scoring the intact and the legacy file are checks of values, done by the same hpo.cli.main in
# this process (no torch start-up per call).
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch tiny SAAN trained by ``saan-hpo train``: its last.pt and config."""
    root = tmp_path_factory.mktemp("evaluate")
    assert in_process("make-synthetic", root / "baid", "--n", "40", "--size", "32", "--seed", "3") == 0
    config = root / "tiny.toml"
    config.write_text(f'[data]\nroot = "{root / "baid"}"\nimage_size = 32\n\n'
                      '[model]\nbackbone = "resnet18"\nhead_hidden = 16\npretrained = "none"\n\n'
                      '[trainer]\nbatch_size = 16\nepochs = 1\nschedule = "constant"\n')
    assert in_process("train", config, "--out", root / "run") == 0
    return root / "run" / "last.pt"


def evaluate(path: Path):
    return cli("evaluate", str(path), "--split", "val", "--json")


def evaluated(path: Path, capsys) -> dict:
    """``saan-hpo evaluate PATH --split val --json`` in this process: its metrics."""
    capsys.readouterr()
    assert in_process("evaluate", path, "--split", "val", "--json") == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def one_line(done) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_evaluate_refuses_a_damaged_checkpoint_in_one_line(trained, tmp_path, capsys):
    intact = evaluated(trained, capsys)
    assert intact["epoch"] == 1
    data = trained.read_bytes()
    assert data.startswith(checkpoint_file.MAGIC)  # train writes the checksum with the file

    cases = {"truncated.pt": data[:100_000], "overwritten.pt": overwrite(data, len(data) // 2, 16 << 10)}
    for name, damaged in cases.items():
        (tmp_path / name).write_bytes(damaged)
        line = one_line(evaluate(tmp_path / name))
        assert name in line and "damaged checkpoint" in line, line

    legacy = checkpoint_file.unframe(data)  # the same checkpoint as written before the header
    (tmp_path / "legacy.pt").write_bytes(legacy)
    assert evaluated(tmp_path / "legacy.pt", capsys)["srcc"] == intact["srcc"]
    with zipfile.ZipFile(io.BytesIO(legacy)) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    (tmp_path / "legacy-crc.pt").write_bytes(overwrite(legacy, start + 100, 16 << 10))
    line = one_line(evaluate(tmp_path / "legacy-crc.pt"))
    assert "legacy-crc.pt" in line and "CRC" in line, line
