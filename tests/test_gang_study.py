"""Gangs through the storage (issue 20, replay): [study] settings, offers taken by one holder
only, a study with gangs deciding as without, and a gang member SIGKILLed mid-epoch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hpo.readers.status import render_status
from model.config import ConfigError
from hpo.scheduling.spec import load_spec
from hpo.service import db, gang_offers
from hpo.service.coordination import Coordinator
from hpo.service.learning_curves import LearningCurves
from hpo.service.stops import StopRequests
from hpo.service.study import open_or_create
from hpo.service.trial_runs import run_factory
from hpo.service.worker import Worker
from studyfiles import (blog_boundaries, cli, create_study, epoch_rows, first_row_within,
                        grid_points, oracle, stored_rungs, study_rows, write_curves, write_study)
from test_study_cli import one_error_line


# ---- [study] data_parallel, min_rank_batch, max_gang -------------------------------------------
@pytest.mark.parametrize("setting, key, expected", [
    ('data_parallel = "yes"', "study.data_parallel", "auto, off, on"),
    ("data_parallel = true", "study.data_parallel", "auto, off, on"),
    ("min_rank_batch = 0", "study.min_rank_batch", "integer >= 1"),
    ('min_rank_batch = "8"', "study.min_rank_batch", "integer >= 1"),
    ("max_gang = 2.5", "study.max_gang", "integer >= 1"),
    ("max_gang = true", "study.max_gang", "integer >= 1"),
])
def test_bad_gang_setting_names_file_and_key(tmp_path, setting, key, expected):
    path = write_study(tmp_path / "bad.toml", storage=f"sqlite:///{tmp_path / 's.db'}")
    path.write_text(path.read_text().replace("[study]\n", f"[study]\n{setting}\n"))
    with pytest.raises(ConfigError) as raised:
        load_spec(path)
    line = str(raised.value)
    assert str(path) in line and f": {key}:" in line and expected in line, line


def test_bad_gang_setting_is_one_line_and_exit_2(tmp_path):
    path = write_study(tmp_path / "bad.toml", storage=f"sqlite:///{tmp_path / 's.db'}")
    path.write_text(path.read_text().replace("[study]\n", '[study]\ndata_parallel = "always"\n'))
    line = one_error_line(cli("launch", str(path), cwd=tmp_path))
    assert str(path) in line and ": study.data_parallel:" in line and "auto, off, on" in line
    assert not (tmp_path / "s.db").exists(), "a rejected study file must not create storage"


def test_gang_settings_defaults_and_meaning(tmp_path):
    plain = load_spec(write_study(tmp_path / "a.toml"))
    assert (plain.data_parallel, plain.min_rank_batch, plain.max_gang) == ("auto", 2, 8)
    # auto: gangs on CUDA workers only, so CPU studies stay one process per trial
    assert not plain.gangs_on("cpu") and plain.gangs_on("cuda")
    path = write_study(tmp_path / "b.toml")
    path.write_text(path.read_text().replace(
        "[study]\n", '[study]\ndata_parallel = "on"\nmin_rank_batch = 4\nmax_gang = 3\n'))
    forced = load_spec(path)
    assert forced.gangs_on("cpu") and forced.gang_limits.ranks_for(64) == 3
    assert forced.spec_hash() == plain.spec_hash(), "operational: a running study may change it"
    assert forced.settings()["data_parallel"] == "on"
    path.write_text(path.read_text().replace('"on"', '"off"'))
    assert not load_spec(path).gangs_on("cuda")


# ---- an offer is taken by at most one holder ---------------------------------------------------
def greedy_plan(offers):
    """Every holder wants every offer, even one it read as taken (a stale snapshot): only the
    conditional UPDATE keeps them apart."""
    def plan(running, idle, claimable, limits):
        return {r.number: (*r.gang, *(o for o in offers if o not in r.gang)) for r in running}
    return plan


def contend_for_offers(tmp_path: Path, storage: str, monkeypatch, rounds: int = 12) -> None:
    study = write_study(tmp_path / "s.toml", storage=storage, extra="")
    study.write_text(study.read_text().replace("[study]\n", '[study]\ndata_parallel = "on"\n'))
    create_study(study)
    spec = load_spec(study)
    engines = [db.create_service_engine(storage) for _ in range(2)]
    try:
        coordinators = [Coordinator(engine, spec) for engine in engines]
        holders = [c.register_worker("cpu") for c in coordinators]
        claims = [c.claim(h) for c, h in zip(coordinators, holders)]
        boards = [gang_offers.GangBoard(engine, spec) for engine in engines]
        offers = [coordinators[0].register_worker("cpu") for _ in range(4)]
        monkeypatch.setattr(gang_offers, "plan_gangs", greedy_plan(offers))
        for epoch in range(1, rounds + 1):
            for offer in offers:
                boards[0].withdraw(offer)
                boards[0].offer(offer, "cpu")
            for board, holder, claim in zip(boards, holders, claims):
                board.dissolve(holder, claim.number)
            barrier, gangs = threading.Barrier(2), [None, None]

            def regroup(i):
                barrier.wait()
                gangs[i] = boards[i].regroup(holders[i], claims[i].number, epoch, "cpu")

            threads = [threading.Thread(target=regroup, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            members = [set(g[1:]) for g in gangs]
            assert not members[0] & members[1], f"round {epoch}: an offer in two gangs {gangs}"
            assert members[0] | members[1] == set(offers), gangs
            stored = {r.id: r.gang_trial for r in study_rows(storage, db.workers, spec.name)}
            for claim, gang in zip(claims, gangs):
                assert {w for w, n in stored.items() if n == claim.number} == set(gang[1:])
        status = render_status(spec, storage)
        assert "gangs (data_parallel):" in status and "gang of" in status, status
    finally:
        for engine in engines:
            engine.dispose()


def test_an_offer_is_taken_by_one_holder_sqlite(tmp_path, monkeypatch):
    contend_for_offers(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", monkeypatch)


def test_an_offer_is_taken_by_one_holder_postgres(tmp_path, monkeypatch, pg_url):
    contend_for_offers(tmp_path, pg_url, monkeypatch)


def test_a_gang_gives_members_back_when_a_trial_waits(tmp_path):
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    study = write_study(tmp_path / "s.toml", storage=storage,
                        grid={"lr": [1e-3, 1e-4], "batch_size": [64]})
    study.write_text(study.read_text().replace("[study]\n", '[study]\ndata_parallel = "on"\n'))
    create_study(study)
    spec = load_spec(study)
    engine = db.create_service_engine(storage)
    try:
        coordinator, board = Coordinator(engine, spec), gang_offers.GangBoard(engine, spec)
        a, b = coordinator.register_worker("cpu"), coordinator.register_worker("cpu")
        first, second = coordinator.claim(a), coordinator.claim(b)
        # The policy takes offers in the order of worker ids.
        w1, w2, w3 = sorted(coordinator.register_worker("cpu") for _ in range(3))
        for w in (w1, w2, w3):
            board.offer(w, "cpu")
        # Nothing waits: the fewest ranks first, ties to the lower trial number.
        assert board.regroup(a, first.number, 2, "cpu") == (a, w1, w3)
        assert board.assignment(w3) == gang_offers.Assignment(first.number, a, 2, 2)
        assert board.assignment(w2) is None  # planned for b's trial: b takes it at its boundary
        coordinator.release(b, second.number)  # a trial waits to be claimed
        # w2 is idle to claim it: the gang stays, and nobody else joins meanwhile
        assert board.regroup(a, first.number, 3, "cpu") == (a, w1, w3)
        assert board.retract(w2), "a worker about to claim withdraws its free offer"
        assert not board.retract(w3), "a member cannot: the holder took it"
        # nobody idle is left for the waiting trial: the last joiner goes back
        assert board.regroup(a, first.number, 4, "cpu") == (a, w1), "the last joiner goes back"
        assert board.assignment(w3) is None and board.assignment(w1).epoch == 4
        claim = coordinator.claim(w3)
        assert claim.number == second.number
        row = [r for r in study_rows(storage, db.workers, spec.name) if r.id == w3][0]
        assert row.gang_offer is None and row.gang_trial is None, "a claim withdraws the offer"
        board.dissolve(a, first.number)
        assert board.assignment(w1) is None
    finally:
        engine.dispose()


# ---- a replayed study decides the same with gangs ----------------------------------------------
def wide_margin_table() -> list[list[float]]:
    """Ranks fixed for the whole run, 0.04 apart at every epoch (far above any tolerance),
    batch 64 best: the survivors of the last rungs take gangs of up to 8 ranks."""
    table = []
    for point in grid_points():
        order = [64, 32, 16, 8].index(point["batch_size"]) * 4 + [1e-3, 1e-4, 1e-5, 1e-6].index(
            point["lr"])
        table.append([0.9 - 0.04 * order + 0.0005 * e for e in range(1, 32)])
    return table


def gang_study(tmp_path: Path, name: str, mode: str, lease: float = 30) -> Path:
    study = write_study(tmp_path / f"{name}.toml", name=name, lease_seconds=lease,
                        storage=f"sqlite:///{tmp_path / (name + '.db')}")
    study.write_text(study.read_text().replace("[study]\n", f'[study]\ndata_parallel = "{mode}"\n'))
    return study


def run_threads(study: Path, curves: Path, workers: int, seconds: float) -> None:
    spec = load_spec(study)
    open_or_create(spec, spec.storage)
    replay = LearningCurves.load(curves, spec)
    pool = [Worker.attach(spec, spec.storage, run_factory(spec, curves=replay, epoch_seconds=seconds),
                          stops=StopRequests(), poll_seconds=0.05) for _ in range(workers)]
    threads = [threading.Thread(target=w.run) for w in pool]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        for w in pool:
            w.close()


def outcome(study: Path):
    spec = load_spec(study)
    trials = study_rows(spec.storage, db.trials, spec.name)
    return (stored_rungs(spec.storage, spec.name),
            sorted((t.number, t.state, t.epochs_done, t.last_value) for t in trials))


def test_a_study_with_gangs_decides_as_without(tmp_path):
    table = wide_margin_table()
    curves = write_curves(tmp_path / "curves.csv", table)
    expected, spent = oracle(table, 2, blog_boundaries())
    runs = {}
    for mode in ("off", "on"):
        study = gang_study(tmp_path, f"dp-{mode}", mode)
        run_threads(study, curves, workers=4, seconds=0.02)
        runs[mode] = outcome(study)
        epochs = epoch_rows(load_spec(study).storage, f"dp-{mode}")
        assert len(epochs) == spent, "no epoch twice, none lost"
        ganged = [e for e in epochs if e.gang_json and json.loads(e.gang_json)]
        assert bool(ganged) == (mode == "on"), len(ganged)
    assert runs["on"] == runs["off"]
    assert [(e, c, s) for e, c, s in runs["on"][0]] == [(e, c, s) for e, c, s in expected]
    assert all(state in ("complete", "pruned") for _, state, _, _ in runs["on"][1])


# ---- a gang member SIGKILLed mid-epoch ------------------------------------------------------------
def a_gang_member(storage: str, study: str, deadline: float):
    w, t = db.workers.c, db.trials.c
    return first_row_within(storage, sa.select(w.id, w.pid, w.gang_trial).join(
        db.trials, sa.and_(t.study == w.study, t.number == w.gang_trial)).where(
        w.study == study, t.state == "running", t.rung >= 3), deadline, "no gang formed",
        pause=0.02)


def test_a_gang_member_sigkilled_mid_epoch_blocks_nobody(tmp_path):
    table = wide_margin_table()
    curves = write_curves(tmp_path / "curves.csv", table)
    expected, spent = oracle(table, 2, blog_boundaries())
    study = gang_study(tmp_path, "kill", "on", lease=1.5)
    spec = load_spec(study)
    create_study(study)
    workers = [subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(study),
                                 "--replay-curves", str(curves), "--replay-epoch-seconds", "0.15"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "SAAN_HPO_NO_PROGRESS": "1"})
               for _ in range(3)]
    try:
        victim = a_gang_member(spec.storage, spec.name, time.monotonic() + 60)
        time.sleep(0.03)  # inside the gang's epoch
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.time()
        for w in workers:
            w.wait(timeout=90)
    finally:
        for w in workers:
            w.kill()
    assert sorted(w.returncode for w in workers) == [-signal.SIGKILL, 0, 0]
    trials = study_rows(spec.storage, db.trials, spec.name)
    assert not [t.number for t in trials if t.state == "failed"]
    kept = [(e.number, e.epoch) for e in epoch_rows(spec.storage, spec.name) if e.kept]
    assert len(kept) == len(set(kept)) == spent, "0 duplicate epochs, none lost"
    assert stored_rungs(spec.storage, spec.name) == expected
    # The holder went on: later epochs of that trial were trained without the dead member.
    theirs = [e for e in epoch_rows(spec.storage, spec.name) if e.number == victim.gang_trial]
    assert any(victim.id in json.loads(e.gang_json or "[]") for e in theirs), "it was a member"
    # Its offer expired a lease after its last heartbeat at the latest: every epoch begun
    # after that was planned without it (the holder went on alone or with the others).
    later = [e for e in theirs if e.started_at > killed + spec.lease_seconds + 0.2]
    assert not [e.epoch for e in later if victim.id in json.loads(e.gang_json or "[]")]


def test_a_study_from_before_gangs_opens_and_runs_with_them(tmp_path):
    table = wide_margin_table()
    curves = write_curves(tmp_path / "curves.csv", table)
    study = gang_study(tmp_path, "old", "on")
    spec = load_spec(study)
    create_study(study)
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the tables as the release before gangs made them
        for column in ("gang_offer", "gang_trial", "gang_holder", "gang_rank", "gang_epoch",
                       "gang_addr", "gang_world"):
            conn.execute(f"ALTER TABLE saan_workers DROP COLUMN {column}")
        conn.execute("ALTER TABLE saan_epochs DROP COLUMN gang_json")
    assert "gangs (data_parallel)" not in render_status(spec, spec.storage)  # adds the columns
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(saan_workers)")}
    assert {"gang_offer", "gang_trial", "gang_addr", "gang_world"} <= columns
    run_threads(study, curves, workers=2, seconds=0.0)
    expected, _ = oracle(table, 2, blog_boundaries())
    assert stored_rungs(spec.storage, spec.name) == expected


def test_fleet_workers_offer_themselves_and_train_in_gangs(tmp_path):
    """`saan-hpo worker --storage` (the fleet worker, serving whatever the storage holds)
    offers itself when nothing is claimable, as a single-study worker does."""
    table = wide_margin_table()
    curves = write_curves(tmp_path / "curves.csv", table)
    expected, spent = oracle(table, 2, blog_boundaries())
    study = gang_study(tmp_path, "fleet", "on")
    spec = load_spec(study)
    create_study(study)
    workers = [subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", "--storage", spec.storage,
                                 "--replay-curves", str(curves), "--replay-epoch-seconds", "0.1"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "SAAN_HPO_NO_PROGRESS": "1"})
               for _ in range(3)]
    try:
        for w in workers:
            w.wait(timeout=120)
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0, 0]
    assert stored_rungs(spec.storage, spec.name) == expected
    epochs = [e for e in epoch_rows(spec.storage, spec.name) if e.kept]
    assert len(epochs) == len({(e.number, e.epoch) for e in epochs}) == spent
    ganged = [e for e in epochs if json.loads(e.gang_json or "[]")]
    assert ganged, "the narrow rungs trained in gangs of fleet workers"
