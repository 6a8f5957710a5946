"""Study files, refusals and exports from the command line: one clear line, exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
import pytest
import sqlalchemy as sa

from hpo.service import db
from studyfiles import cli, run_claims, write_curves, write_study


def one_error_line(done) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda t: t.replace("[grid]", "[grid]\nbogus = [1]"), "grid.bogus", "unknown field"),
    (lambda t: t.replace('kind = "sync-halving"', 'kind = "sync-halving"\nwarmup = 3'),
     "scheduler.warmup", "unknown key"),
    (lambda t: t.replace("lr = [0.001,", "lr = [-0.001,"), "grid.lr", "> 0"),
    (lambda t: t.replace("lr = [0.001,", "lr = [0.0,"), "grid.lr", "> 0"),
    (lambda t: t.replace("batch_size = [64,", 'batch_size = ["64",'), "grid.batch_size", "integer"),
    (lambda t: t.split("[grid]")[0] + "[grid]\n\n[scheduler]\n", "grid", "at least one axis"),
    (lambda t: t.replace("lr = [0.001, 0.0001, 1e-05, 1e-06]", "lr = []"), "grid.lr", "non-empty"),
    (lambda t: t.replace("eta = 2", 'eta = "two"'), "scheduler.eta", "integer"),
    (lambda t: t.replace('kind = "sync-halving"', 'kind = "bohb"'), "scheduler.kind", "one of"),
    (lambda t: t + "\n[trainer]\nloss = \"l1\"\n", "trainer.loss", "mse, huber"),
    (lambda t: t + "\n[model]\nwidth = 3\n", "model.width", "unknown key"),
    (lambda t: t + "\n[data]\nsynthetic_n = 40\nsynthetic_val_n = 20\n", "data.synthetic_val_n",
     "fewer than half of data.synthetic_n (40)"),
    (lambda t: t.replace("[study]", "[study]\nlr = 1"), "study.lr", "unknown key"),
    (lambda t: t + "\n[[oops", "-", "not valid TOML"),
])
def test_bad_study_file_is_one_line_naming_file_and_key(tmp_path, mutate, key, expected):
    path = write_study(tmp_path / "bad.toml", storage=f"sqlite:///{tmp_path / 's.db'}")
    path.write_text(mutate(path.read_text()))
    line = one_error_line(cli("launch", str(path), cwd=tmp_path))
    assert str(path) in line and f": {key}:" in line and expected in line, line
    assert not (tmp_path / "s.db").exists(), "a rejected study file must not create storage"


def test_missing_study_file_and_unreachable_storage(tmp_path):
    line = one_error_line(cli("launch", str(tmp_path / "nope.toml")))
    assert "nope.toml" in line and "file not found" in line
    path = write_study(tmp_path / "s.toml",
                       storage="postgresql+psycopg://saan:s3cret@127.0.0.1:1/none")
    line = one_error_line(cli("launch", str(path), cwd=tmp_path, timeout=120))
    assert "cannot open the database" in line and "s3cret" not in line and "***" in line


def count_rows(storage):
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                  for t in (db.studies, db.trials, db.rungs, db.epochs, db.workers)}
        states = conn.execute(sa.select(db.trials.c.number, db.trials.c.state)).all()
    engine.dispose()
    return counts, sorted(states)


def test_worker_with_a_different_grid_or_scheduler_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage)
    curves = write_curves(tmp_path / "c.csv", [[0.1 * i] * 31 for i in range(16)])
    run_claims(study, curves, claims=1)  # one trial only, then stop: a study mid-life
    before = count_rows(storage)
    assert before[0]["saan_epochs"] >= 1

    other_grid = write_study(tmp_path / "grid.toml", storage=storage,
                             grid={"lr": [1e-3, 1e-4], "batch_size": [64, 32]})
    line = one_error_line(cli("worker", str(other_grid), "--storage", storage, cwd=tmp_path))
    assert "grid.toml" in line and "grid" in line and "differs from the stored study" in line
    other_sched = write_study(tmp_path / "sched.toml", storage=storage, eta=4)
    line = one_error_line(cli("launch", str(other_sched), cwd=tmp_path))
    assert "scheduler" in line and "differs" in line
    assert count_rows(storage) == before


def test_only_launch_creates_a_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage)
    curves = write_curves(tmp_path / "c.csv", [[0.1 * i] * 31 for i in range(16)])
    # No database yet: refused, and no file is left behind.
    line = one_error_line(cli("worker", str(study), "--replay-curves", str(curves), cwd=tmp_path))
    assert "blog.toml" in line and "'blog' not found" in line and "saan-hpo launch" in line
    assert not (tmp_path / "study.db").exists()

    # A database holding another study: still refused, nothing added to either side's tables.
    other = write_study(tmp_path / "other.toml", name="other", storage=storage)
    assert cli("launch", str(other), "--workers", "0", cwd=tmp_path).returncode == 0
    names = optuna.get_all_study_names(storage)
    rows = count_rows(storage)
    line = one_error_line(cli("worker", str(study), "--replay-curves", str(curves), cwd=tmp_path))
    assert "'blog' not found" in line
    # The forgotten --data synthetic of the issue: the twin was never launched.
    line = one_error_line(cli("worker", str(other), "--data", "synthetic", "--epochs", "1",
                              "--storage", storage, cwd=tmp_path))
    assert "'other-synthetic' not found" in line
    assert optuna.get_all_study_names(storage) == names == ["other"]
    assert count_rows(storage) == rows

    # A spec that differs from the stored study: refused the same way.
    changed = write_study(tmp_path / "changed.toml", name="other", storage=storage, eta=4)
    line = one_error_line(cli("worker", str(changed), "--replay-curves", str(curves), cwd=tmp_path))
    assert "changed.toml" in line and "scheduler" in line and "differs" in line
    assert count_rows(storage) == rows and optuna.get_all_study_names(storage) == ["other"]

    # Once launched, the worker attaches and finishes it.
    assert cli("launch", str(study), "--workers", "0", cwd=tmp_path).returncode == 0
    done = cli("worker", str(study), "--replay-curves", str(curves), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "saan-hpo status --study blog --storage " + storage in done.stdout


def test_export_without_a_finished_trial_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage)
    curves = write_curves(tmp_path / "c.csv", [[0.1 * i] * 31 for i in range(16)])
    run_claims(study, curves, claims=2)
    out = tmp_path / "best.toml"
    line = one_error_line(cli("export", "--study", "blog", "--storage", storage, "-o", str(out)))
    assert "no finished trial" in line
    assert not out.exists()
    line = one_error_line(cli("export", "--study", "nosuch", "--storage", storage, "-o", str(out)))
    assert "'nosuch'" in line and "not found" in line


def test_status_and_export_of_a_finished_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage)
    table = [[0.01 * i + 0.001 * e for e in range(31)] for i in range(16)]  # trial 15 best
    curves = write_curves(tmp_path / "c.csv", table)
    assert cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path).returncode == 0
    status = cli("status", "--study", "blog", "--storage", storage)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    rung_lines = [line.split() for line in lines if line.strip()[:1].isdigit()][:5]
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rung_lines] == [
        (0, 1, 16), (1, 3, 8), (2, 7, 4), (3, 15, 2), (4, 31, 1)]
    assert "epochs spent 80 of 80 planned (full grid 496)" in status.stdout
    assert "finished" in status.stdout
    assert "winner: trial 15 {'lr': 1e-06, 'batch_size': 8} srcc=0.1800 after 31 epochs" in status.stdout
    workers = [line.split() for line in lines if line.split()[:1] and "-" in line.split()[0]
               and len(line.split()) >= 5 and line.split()[3] == "exited"]
    assert [w[2] for w in workers] == ["cpu"], status.stdout  # the device used, not "auto"

    out = tmp_path / "best.toml"
    done = cli("export", "--study", "blog", "--storage", storage, "-o", str(out))
    assert done.returncode == 0, done.stderr
    from model.config import RunConfig

    exported = RunConfig.load(out)  # a file `saan-hpo train` accepts
    assert exported.trainer.lr == 1e-6 and exported.trainer.batch_size == 8  # grid point 15
    assert exported.trainer.epochs == 31
    text = out.read_text()
    assert "trial 15" in text and "validation srcc: 0.18" in text


def test_reading_commands_take_the_study_file_or_its_name(tmp_path):
    study = write_study(tmp_path / "blog.toml")  # default storage: runs/blog/study.db
    table = [[0.01 * i + 0.001 * e for e in range(31)] for i in range(16)]
    curves = write_curves(tmp_path / "c.csv", table)
    done = cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    storage = "sqlite:///runs/blog/study.db"
    assert f"saan-hpo export --study blog --storage {storage} --evaluate" in done.stdout
    by_file = cli("status", str(study), cwd=tmp_path)
    by_name = cli("status", "--study", "blog", "-v", cwd=tmp_path)  # -v after the subcommand
    by_url = cli("-v", "status", "--study", "blog", "--storage", storage, cwd=tmp_path)
    assert by_file.returncode == by_name.returncode == by_url.returncode == 0, by_name.stderr
    shown = [re.sub(r"\S+ ago", "", done.stdout) for done in (by_file, by_name, by_url)]  # heartbeats
    assert shown[0] == shown[1] == shown[2] and "winner: trial 15" in shown[0]

    done = cli("export", str(study), cwd=tmp_path)  # default output: runs/<study>/best.toml
    assert done.returncode == 0, done.stderr
    assert "trial 15" in (tmp_path / "runs" / "blog" / "best.toml").read_text()
    assert not (tmp_path / "best.toml").exists()
    done = cli("curves", "--study", "blog", "-o", "c2.csv", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "c2.csv").exists(), done.stderr

    line = one_error_line(cli("status", cwd=tmp_path))
    assert "STUDY.toml" in line and "--study NAME" in line
    line = one_error_line(cli("status", str(study), "--study", "blog", cwd=tmp_path))
    assert "not both" in line


def test_reading_commands_never_create_a_database(tmp_path):
    typo = tmp_path / "runs" / "dmeo" / "study.db"
    for command in (["status"], ["export", "-o", str(tmp_path / "b.toml")], ["report"]):
        line = one_error_line(cli(*command, "--study", "demo", "--storage", f"sqlite:///{typo}"))
        assert "no database file" in line and str(typo) in line
    assert not typo.parent.exists()


def test_checking_data_and_choosing_devices_import_no_torch(tmp_path):
    """A launcher, and a worker that finds nothing to claim, never train: the data check
    (model/dataset_index.py) and the device choice must not import torch, which costs
    each such process about two CPU-seconds. On a machine with an NVIDIA driver the
    device choice asks torch, and then it must agree with torch."""
    study = write_study(tmp_path / "study.toml", extra=(
        f'\n[data]\nroot = "{tmp_path / "baid"}"\nsynthetic = true\nsynthetic_n = 24\n'
        'synthetic_size = 32\nimage_size = 32\n'))
    code = (
        "import json, sys\n"
        "from hpo.scheduling.spec import load_spec\n"
        "from hpo.service.preflight import check_data\n"
        "from hpo.cli.session import concrete_device, local_devices, nvidia_driver_present\n"
        f"spec = load_spec({str(study)!r})\n"
        "check_data(spec)\n"
        "devices = local_devices(2, None, 'auto')\n"
        "print(json.dumps({'driver': nvidia_driver_present(), 'torch': 'torch' in sys.modules,\n"
        "                  'devices': devices, 'device': concrete_device(None, False)}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert (tmp_path / "baid" / "dataset" / "train_set.csv").is_file()  # the check generated it
    if not seen["driver"]:
        assert not seen["torch"], "checking data or choosing a device imported torch"
        assert seen["devices"] == ["cpu", "cpu"] and seen["device"] == "cpu"
    else:
        import torch

        count = torch.cuda.device_count()
        assert seen["devices"] == ([f"cuda:{i % count}" for i in range(2)] if count else ["cpu"] * 2)
