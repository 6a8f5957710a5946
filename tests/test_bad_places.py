"""Places that refuse: a read-only checkpoint folder or database, bad storage URLs and names, bad data.

Environment faults are not trial faults: no trial is failed for them, the
worker stops with one line naming the place, and once the place is fixed a
relaunch finishes the study. Bad input is one line, exit 2, and a listing of
the file system and the storage before and after shows nothing created.

As root, file modes do not stop writes. The folder is made immutable with
``chattr +i`` where the kernel and filesystem allow it; where they do not
(containers without CAP_LINUX_IMMUTABLE, overlayfs) the folder is moved aside
and a plain file put at its path, which refuses writes for root too.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from hpo.service import db
from hpo.readers.status import render_status
from hpo.readers.results import stored_spec
from studyfiles import (blog_boundaries, cli, epoch_rows, oracle, stored_rungs, study_rows,
                        write_curves, write_study)

TABLE = [[round(((i * 7919 + e * 104729) % 1000) / 1000, 3) for e in range(1, 32)] for i in range(16)]


def one_error_line(done) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout[-1000:], done.stderr[-2000:])
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def listing(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (folders -1): what a command left behind."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1)
            for p in sorted(root.rglob("*"))}


# ---- making a place refuse writes, as root ---------------------------------------------------
def chattr_works(scratch: Path) -> bool:
    probe = scratch / ".chattr-probe"
    probe.write_text("")
    try:
        if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
            return False
        try:
            with open(probe, "a") as fh:
                fh.write("x")
            return False  # the attribute is not enforced here
        except OSError:
            return True
    except FileNotFoundError:  # no chattr installed
        return False
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.unlink()


@contextlib.contextmanager
def immutable(path: Path):
    """``chattr +i path`` for the duration (the caller checked chattr_works)."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


class Unwritable:
    """A folder that refuses new and removed files until restore() (see module doc).

    Given an artifacts folder, it is the study's own sub-folder in it that
    refuses (hpo/service/checkpoints.py: each study writes into
    ``<study>-<identity>/``), found when apply() is called.
    """

    def __init__(self, folder: Path, study: str | None = None):
        self.folder = folder
        self.study = study
        self.with_chattr = chattr_works(folder.parent)

    @property
    def aside(self) -> Path:
        return self.folder.with_name(self.folder.name + ".aside")

    def apply(self) -> None:
        if self.study is not None:
            (self.folder,) = [p for p in self.folder.iterdir()
                              if p.is_dir() and p.name.startswith(self.study + "-")]
        if self.with_chattr:
            subprocess.run(["chattr", "+i", str(self.folder)], check=True)
        else:
            self.folder.rename(self.aside)
            self.folder.write_text("not a folder any more\n")

    def restore(self) -> None:
        if self.with_chattr:
            subprocess.run(["chattr", "-i", str(self.folder)], check=True)
        elif self.aside.exists():
            self.folder.unlink()
            self.aside.rename(self.folder)


def wait_for_epochs(storage: str, study: str, at_least: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(sa.exc.OperationalError, sa.exc.ProgrammingError):  # no tables yet
            if len(epoch_rows(storage, study)) >= at_least:
                return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} epochs trained in time")


def check_blog_outcome(storage: str) -> None:
    expected, spent = oracle(TABLE, 2, blog_boundaries())
    assert stored_rungs(storage, "blog") == expected
    assert len({(r.number, r.epoch) for r in epoch_rows(storage, "blog") if r.kept}) == spent
    assert optuna.load_study(study_name="blog", storage=storage).best_trial.number == expected[-1][2][0]


# ---- a read-only checkpoint folder mid-study ------------------------------------------------
def test_unwritable_checkpoint_folder_stops_workers_fails_no_trial_and_a_relaunch_finishes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    artifacts = tmp_path / "blog-artifacts"
    place = Unwritable(artifacts, study="blog")
    launch = subprocess.Popen([sys.executable, "-m", "hpo.cli", "launch", str(study), "--workers", "2",
                               "--replay-curves", str(curves), "--replay-epoch-seconds", "0.1"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_epochs(storage, "blog", 6, time.monotonic() + 120)
        place.apply()
        out, err = launch.communicate(timeout=120)
    finally:
        launch.kill()
        place.restore()
    assert launch.returncode == 2, (out, err)
    logs = sorted((artifacts.parent / "logs").glob("worker-*.log"))  # beside the artifacts
    errors = [line for log in logs for line in log.read_text().splitlines() if "error:" in line]
    assert len(errors) == 2, errors  # each worker stopped with one line naming the path
    assert all(f"{artifacts}" in e and "cannot write checkpoint" in e for e in errors), errors
    trials = study_rows(storage, db.trials, "blog")
    assert not [t.number for t in trials if t.state == "failed"]
    assert not [t.number for t in trials if t.state == "running" or t.lease_owner]  # released
    assert len({(r.number, r.epoch) for r in epoch_rows(storage, "blog")}) < 80  # mid-study

    again = cli("launch", str(study), "--workers", "2", "--replay-curves", str(curves), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    check_blog_outcome(storage)
    trials = study_rows(storage, db.trials, "blog")
    referenced = {t.checkpoint_id for t in trials if t.checkpoint_id}
    files = {str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file()}
    assert files == referenced  # nothing orphaned
    assert not [t for t in trials if t.state == "failed"]


def durable_epochs(storage: str, study: str, artifacts: Path) -> dict[int, int]:
    """Per trial, the last epoch recorded -- recorded only after its checkpoint was durable;
    a trial that still holds a checkpoint has that epoch's file in place (pruned trials'
    files are deleted once Optuna is told)."""
    durable = {}
    for t in study_rows(storage, db.trials, study):
        if t.checkpoint_id:
            assert (artifacts / t.checkpoint_id).is_file(), t.checkpoint_id
            assert f"-e{t.epochs_done}-" in t.checkpoint_id, (t.number, t.epochs_done, t.checkpoint_id)
        durable[t.number] = t.epochs_done
    return durable


@pytest.mark.parametrize("kind", ["sync-halving", "asha"])
def test_no_value_reaches_optuna_before_its_checkpoint_is_durable(tmp_path, kind):
    """The folder refuses writes mid-study for real (module doc: ``chattr +i`` on the folder,
    or the folder replaced by a plain file; both refuse root too): every worker stops at its
    next checkpoint write, and no trial's Optuna values go past its last durable checkpoint.

    sync-halving reports on the writer thread, asha asks Optuna's pruner at its rung epochs;
    either way the report comes after the durable write."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = write_study(tmp_path / "blog.toml", storage=storage, kind=kind,
                        schedule="geometric" if kind == "asha" else "cumulative")
    curves = write_curves(tmp_path / "c.csv", TABLE)
    artifacts = tmp_path / "blog-artifacts"
    place = Unwritable(artifacts, study="blog")
    launch = subprocess.Popen([sys.executable, "-m", "hpo.cli", "launch", str(study), "--workers", "2",
                               "--replay-curves", str(curves), "--replay-epoch-seconds", "0.1"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_epochs(storage, "blog", 6, time.monotonic() + 120)
        place.apply()
        out, err = launch.communicate(timeout=120)
    finally:
        launch.kill()
        place.restore()
    assert launch.returncode == 2, (out, err)
    assert err.count("cannot write checkpoint") == 2, err  # one line per worker, naming the path
    durable = durable_epochs(storage, "blog", artifacts)
    trials = optuna.load_study(study_name="blog", storage=storage).trials
    past = {t.number: (max(t.intermediate_values), durable[t.number]) for t in trials
            if t.intermediate_values and max(t.intermediate_values) > durable[t.number]}
    assert not past, f"Optuna holds values past the durable checkpoint (last reported, durable): {past}"
    assert any(t.intermediate_values for t in trials)
    rows = study_rows(storage, db.trials, "blog")
    assert not [t.number for t in rows if t.state == "failed"]
    assert not [t.number for t in rows if t.state == "running" or t.lease_owner]  # released


def launched_with_a_worker(tmp_path: Path, storage: str, epoch_seconds: float, **study_options):
    """A blog study created by launch and one replay worker process training it."""
    study = write_study(tmp_path / "blog.toml", storage=storage, **study_options)
    curves = write_curves(tmp_path / "c.csv", TABLE)
    assert cli("launch", str(study), "--workers", "0", cwd=tmp_path).returncode == 0
    worker = subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(study),
                               "--replay-curves", str(curves), "--replay-epoch-seconds", str(epoch_seconds)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return study, curves, worker


# ---- a read-only database ------------------------------------------------------------------
def half_done_study(tmp_path: Path, storage: str) -> tuple[Path, Path]:
    """A blog study stopped by SIGTERM after a few epochs (its trial released)."""
    study, curves, worker = launched_with_a_worker(tmp_path, storage, 0.05)
    try:
        wait_for_epochs(storage, "blog", 4, time.monotonic() + 120)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()
    return study, curves


# Resuming writes nothing until a worker claims a trial, so the check runs before any worker
# starts (preflight.check_writable): one line, exit 2, no worker log.
READ_ONLY_COMMANDS = [("launch", "--workers", "2"), ("launch",), ("worker",)]


def test_read_only_sqlite_database_is_named_in_one_line(tmp_path):
    """As root, file modes do not stop SQLite's writes; ``chattr +i`` on the database file
    does (SQLite then reads it and refuses every write). Where the immutable attribute is
    not permitted, the PostgreSQL variant below covers a read-only database."""
    if not chattr_works(tmp_path):
        pytest.skip("chattr +i is not permitted here; the PostgreSQL variant covers a read-only "
                    "database (test_read_only_postgresql_database_is_named_in_one_line)")
    path = tmp_path / "study.db"
    storage = f"sqlite:///{path}"
    study, curves = half_done_study(tmp_path, storage)
    before = study_rows(storage, db.trials, "blog")
    logs = listing(tmp_path / "logs")
    with immutable(path):
        for command in READ_ONLY_COMMANDS:
            # A guard against the old endless retry, not a timing assertion.
            line = one_error_line(cli(*command, str(study), "--replay-curves", str(curves),
                                      cwd=tmp_path, timeout=120))
            assert "read-only" in line and str(path) in line, line
    assert study_rows(storage, db.trials, "blog") == before  # no lease taken
    assert listing(tmp_path / "logs") == logs  # no worker started, nothing logged
    again = cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    check_blog_outcome(storage)


def test_read_only_postgresql_database_is_named_in_one_line(tmp_path, pg_url, pg_server_url):
    study, curves = half_done_study(tmp_path, pg_url)
    name = sa.make_url(pg_url).database
    admin = sa.create_engine(pg_server_url.set(database="postgres"), poolclass=sa.NullPool,
                             isolation_level="AUTOCOMMIT")

    def read_only(on: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                                 f'{"on" if on else "off"}'))

    logs = listing(tmp_path / "logs")
    read_only(True)
    try:
        for command in READ_ONLY_COMMANDS:
            line = one_error_line(cli(*command, str(study), "--replay-curves", str(curves),
                                      cwd=tmp_path, timeout=120))
            assert "read-only" in line and db.mask_url(pg_url) in line, line
    finally:
        read_only(False)
    assert listing(tmp_path / "logs") == logs  # no worker started, nothing logged
    again = cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    check_blog_outcome(pg_url)


def test_lasting_and_passing_database_errors_are_told_apart():
    lasting = [sa.exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database")),
               sa.exc.OperationalError("INSERT", {}, Exception(
                   "cannot execute INSERT in a read-only transaction")),
               sa.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))]
    passing = [sa.exc.OperationalError("SELECT", {}, Exception("database is locked")),
               sa.exc.OperationalError("SELECT", {}, Exception(
                   'connection to server at "127.0.0.1", port 5432 failed: Connection refused')),
               sa.exc.OperationalError("SELECT", {}, Exception(
                   "FATAL: the database system is starting up"))]
    assert [db.lasting_fault(e) for e in lasting] == [
        "the database is read-only", "the database is read-only", "the disk holding the database is full"]
    assert [db.lasting_fault(e) for e in passing] == [None, None, None]
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = lasting[0]
    assert db.lasting_fault(wrapped) == "the database is read-only"
    error = db.lasting_fault_error(wrapped)
    assert isinstance(error, db.StorageError) and "attempt to write a readonly database" in str(error)


# ---- bad URLs, names and data: one line, exit 2, nothing created -----------------------------
def test_unknown_scheme_missing_folder_and_unsafe_name_create_nothing(tmp_path):
    curves = write_curves(tmp_path / "c.csv", TABLE)
    good = write_study(tmp_path / "blog.toml", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert cli("launch", str(good), "--replay-curves", str(curves), cwd=tmp_path,
               timeout=120).returncode == 0  # an existing, finished study to read from
    before = listing(tmp_path)
    rows_before = [study_rows(f"sqlite:///{tmp_path / 'study.db'}", t, "blog")
                   for t in (db.trials, db.rungs, db.epochs)]
    study_cmds = [("launch", str(good), "--replay-curves", str(curves)),
                  ("worker", str(good), "--replay-curves", str(curves))]
    reading_cmds = [("status", "--study", "blog"), ("report", "--study", "blog"),
                    ("export", "--study", "blog", "-o", str(tmp_path / "best.toml"))]

    for args in study_cmds + reading_cmds:
        line = one_error_line(cli(*args, "--storage", "foo://", cwd=tmp_path))
        assert "unknown scheme 'foo'" in line and "sqlite:///" in line, line

    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    for args in study_cmds:
        line = one_error_line(cli(*args, "--storage", f"sqlite:///{missing}", cwd=tmp_path))
        assert f"folder {missing.parent} does not exist" in line, line

    unsafe = write_study(tmp_path / "unsafe.toml", name="a/b")
    for command in ("launch", "worker"):
        line = one_error_line(cli(command, str(unsafe), "--replay-curves", str(curves), cwd=tmp_path))
        assert "study.name" in line and "'a/b'" in line, line
    for name in ("a/b", ".."):
        line = one_error_line(cli("status", "--study", name, "--storage",
                                  f"sqlite:///{tmp_path / 'study.db'}", cwd=tmp_path))
        assert "--study" in line and repr(name) in line, line

    unsafe.unlink()
    assert listing(tmp_path) == before
    assert [study_rows(f"sqlite:///{tmp_path / 'study.db'}", t, "blog")
            for t in (db.trials, db.rungs, db.epochs)] == rows_before


def synthetic_study(path: Path, storage: str | None = None, name: str = "tiny") -> Path:
    """A study on a synthetic data folder that does not exist yet: whatever command gets as
    far as checking the data generates it (tiny: 1 epoch, 2 configurations)."""
    study = write_study(path, name=name, grid={"lr": [1e-3, 1e-4]}, rungs=1, storage=storage)
    study.write_text(study.read_text() + f'\n[data]\nroot = "{path.parent / "synthetic-data"}"\n'
                     'synthetic = true\nsynthetic_n = 40\nsynthetic_size = 32\nimage_size = 32\n\n'
                     '[model]\nbackbone = "resnet18"\nhead_hidden = 16\npretrained = "none"\n\n'
                     '[trainer]\nbatch_size = 16\nschedule = "constant"\n')
    return study


def test_bad_inputs_are_one_line_and_create_no_data_log_or_study(tmp_path):
    """Each is one line naming what was wrong, exit 2, and the folder is as before: no
    synthetic data generated, no runs/ or logs/ folder, no database."""
    curves = write_curves(tmp_path / "c.csv", [[0.5], [0.6]], {"lr": [1e-3, 1e-4]})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = synthetic_study(tmp_path / "tiny.toml", storage)
    other = synthetic_study(tmp_path / "other.toml", storage, name="other")
    assert cli("launch", str(other), "--workers", "0", cwd=tmp_path).returncode == 0
    (tmp_path / "a-folder").mkdir()
    folder = str(tmp_path / "a-folder")
    cases = [  # (argv, what the line must say)
        *[((command, folder, *extra), f"{folder}: -: is a folder (expected a TOML file)")
          for command, extra in [("launch", ()), ("status", ()), ("worker", ()),
                                 ("simulate", ("--curves", str(curves))), ("train", ()),
                                 ("report", ()), ("export", ()), ("table", ())]],
        (("launch", str(study), "--storage", ""), "--storage: empty URL"),
        (("worker", str(study), "--storage", ""), "--storage: empty URL"),
        (("status", str(study), "--storage", ""), "--storage: empty URL"),
        (("launch", str(study), "--storage", "sqlite://"), "storage sqlite://: an in-memory SQLite"),
        (("worker", str(study), "--storage", "sqlite://"), "storage sqlite://: an in-memory SQLite"),
        # the study is not in the storage (which holds another): refused before the data
        (("worker", str(study)), f"study 'tiny' not found in {storage}"),
    ]
    before = listing(tmp_path)
    for argv, expected in cases:
        line = one_error_line(cli(*argv, cwd=tmp_path, timeout=120))
        assert expected in line, (argv, line)
        assert listing(tmp_path) == before, argv
    assert not (tmp_path / "synthetic-data").exists()


def test_export_evaluate_names_a_garbage_winner_checkpoint(tmp_path):
    """The winner's checkpoint overwritten with garbage: export warns naming the file, then
    retrains the winner (1 epoch of a tiny SAAN on synthetic data) and scores it."""
    curves = write_curves(tmp_path / "c.csv", [[0.5], [0.6]], {"lr": [1e-3, 1e-4]})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = synthetic_study(tmp_path / "tiny.toml", storage)
    done = cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    best = optuna.load_study(study_name="tiny", storage=storage).best_trial.number
    (winner,) = [t for t in study_rows(storage, db.trials, "tiny") if t.number == best]
    checkpoint = tmp_path / "tiny-artifacts" / winner.checkpoint_id
    checkpoint.write_bytes(b"not a checkpoint\n" * 64)
    exported = cli("export", "--study", "tiny", "--storage", storage, "--evaluate", "-o",
                   str(tmp_path / "best.toml"), cwd=tmp_path, timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    (warning,) = [line for line in exported.stderr.splitlines() if "winner's checkpoint" in line]
    assert str(checkpoint) in warning and f"retraining trial {winner.number}" in warning, warning


def test_the_default_runs_folder_is_still_created(tmp_path):
    curves = write_curves(tmp_path / "c.csv", TABLE)
    study = write_study(tmp_path / "blog.toml")  # no storage: sqlite:///runs/blog/study.db
    done = cli("launch", str(study), "--replay-curves", str(curves), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "runs" / "blog" / "study.db").is_file()


@pytest.fixture(scope="module")
def baid_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-data") / "baid"
    made = cli("make-synthetic", str(root), "--n", "30", "--size", "32", "--seed", "2")
    assert made.returncode == 0, made.stderr
    return root


def data_study(path: Path, root: Path, storage: str | None = None) -> Path:
    study = write_study(path, name="tiny", grid={"lr": [1e-3, 1e-4]}, rungs=1, storage=storage)
    study.write_text(study.read_text() + f'\n[data]\nroot = "{root}"\nimage_size = 32\n'
                     'on_bad_image = "fatal"\n\n[model]\nbackbone = "resnet18"\nhead_hidden = 16\n'
                     'pretrained = "none"\n\n[trainer]\nbatch_size = 16\n')
    return study


def test_bad_data_is_found_before_the_study_or_a_lease_exists(tmp_path, baid_source):
    import shutil

    root = tmp_path / "baid"
    shutil.copytree(baid_source, root)
    csv = root / "dataset" / "train_set.csv"
    lines = csv.read_text().splitlines()
    name = lines[3].split(",")[0]
    lines[3] = f"{name},high"
    csv.write_text("\n".join(lines) + "\n")

    # A database that already holds another study: its rows must not change either.
    shared = tmp_path / "shared.db"
    curves = write_curves(tmp_path / "c.csv", TABLE)
    other = write_study(tmp_path / "blog.toml", storage=f"sqlite:///{shared}")
    assert cli("launch", str(other), "--replay-curves", str(curves), cwd=tmp_path,
               timeout=120).returncode == 0
    count_before = {t.name: len(study_rows(f"sqlite:///{shared}", t, "tiny")) for t in
                    (db.trials, db.rungs, db.epochs, db.workers)}
    study_names = lambda: [r.name for r in study_rows_all(f"sqlite:///{shared}")]  # noqa: E731
    names_before = study_names()

    default = data_study(tmp_path / "tiny.toml", root)  # default storage runs/tiny/study.db
    explicit = data_study(tmp_path / "tiny-shared.toml", root, storage=f"sqlite:///{shared}")
    before = listing(tmp_path)
    for study in (default, explicit):
        for command in ("launch", "worker"):
            line = one_error_line(cli(command, str(study), cwd=tmp_path))
            assert f"{csv}:4" in line and "'score'" in line and "'high'" in line, line
    assert listing(tmp_path) == before  # no runs/tiny/, no cache, no log
    assert study_names() == names_before
    assert {t.name: len(study_rows(f"sqlite:///{shared}", t, "tiny")) for t in
            (db.trials, db.rungs, db.epochs, db.workers)} == count_before

    # train: the same CSV, then a missing image; no output folder, no cache lock
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nroot = "{root}"\nimage_size = 32\non_bad_image = "fatal"\n\n'
                      '[model]\nbackbone = "resnet18"\nhead_hidden = 16\npretrained = "none"\n\n'
                      '[trainer]\nbatch_size = 16\nepochs = 1\n')
    line = one_error_line(cli("train", str(config), "--out", str(tmp_path / "out")))
    assert f"{csv}:4" in line, line
    lines[3] = f"{name},5.0"
    csv.write_text("\n".join(lines) + "\n")
    (root / "images" / name).unlink()
    before = listing(tmp_path)
    line = one_error_line(cli("train", str(config), "--out", str(tmp_path / "out")))
    assert name in line and "image missing" in line, line
    assert listing(tmp_path) == before


def study_rows_all(storage: str):
    engine = db.create_service_engine(storage)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.studies)).all()
    engine.dispose()
    return rows


# ---- status counts live heartbeats ---------------------------------------------------------
def test_status_eta_counts_only_workers_with_a_live_heartbeat(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study, curves, worker = launched_with_a_worker(tmp_path, storage, 0.1, lease_seconds=2)
    try:
        wait_for_epochs(storage, "blog", 3, time.monotonic() + 120)
        spec = stored_spec("blog", storage)
        assert "with 1 live worker(s)" in render_status(spec, storage)
        worker.kill()  # no deregistration: its row stays "active"
        worker.wait(timeout=30)
    finally:
        worker.kill()
    (row,) = study_rows(storage, db.workers, "blog")
    assert row.state == "active"
    later = row.heartbeat_at + spec.lease_seconds + 1  # as status would print it a lease later
    text = render_status(spec, storage, now=later)
    assert "no worker has a live heartbeat" in text and "live worker(s)" not in text, text
    assert " silent " in text
