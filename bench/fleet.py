"""The multi-study mode of bench/scaling.py: one pool of workers for the published studies.

Replayed curves (random, seeded) for studies/blog-grid.toml, variants.toml and
ablation.toml in one CSV, simulated epoch times, real worker processes on a
throwaway SQLite file (``saan-hpo launch A.toml B.toml ... --workers N``).
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from hpo.scheduling.spec import load_spec
from hpo.service import db

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ["blog-grid", "variants", "ablation"]
AXES = ["lr", "batch_size", "model.norm", "trainer.loss", "model.branches"]
# Columns a study's grid does not vary are left empty in its rows: a row with a
# value there belongs to another study's grid (hpo/service/learning_curves.py).
FILLER = {axis: "" for axis in AXES}


def write_curves(path: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*AXES, "epoch", "value"])
        for name in STUDIES:
            spec = load_spec(ROOT / "studies" / f"{name}.toml")
            for params in spec.grid_points():
                row = {axis: params.get(axis, FILLER[axis]) for axis in AXES}
                slope = rng.uniform(0.005, 0.03)
                for epoch in range(1, spec.final_epoch + 1):
                    value = min(1.0, slope * epoch + rng.uniform(0, 0.05))
                    writer.writerow([*row.values(), epoch, round(value, 4)])
    return path


def run_pool(tmp: Path, names: list[str], workers: int, curves: Path, seconds: float,
             tag: str = "pool") -> dict:
    label = "-".join(names)
    storage = f"sqlite:///{tmp / f'{tag}-{label}-{workers}.db'}"  # never resume another run
    files = [str(ROOT / "studies" / f"{name}.toml") for name in names]
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "hpo.cli", "launch", *files, "--storage", storage,
                    "--artifacts", str(tmp / f"artifacts-{tag}-{label}-{workers}"),
                    "--workers", str(workers), "--replay-curves", str(curves),
                    "--replay-epoch-seconds", str(seconds)],
                   check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    return {**read_outcome(storage), "wall": wall}


def read_outcome(storage: str) -> dict:
    """A finished pool's epochs, makespan and what it decided (rungs, every trial's end state)."""
    engine = db.create_service_engine(storage)
    try:
        with engine.connect() as conn:
            epochs = conn.execute(sa.select(db.epochs)).all()
            rungs = conn.execute(sa.select(db.rungs).order_by(db.rungs.c.study, db.rungs.c.rung)).all()
            trials = conn.execute(sa.select(db.trials)).all()
    finally:
        engine.dispose()
    first = min(e.started_at for e in epochs)
    last = max(e.finished_at for e in epochs)
    outcome = {
        "rungs": {(r.study, r.rung): (r.epoch, json.loads(r.survivors_json)) for r in rungs},
        "results": {(t.study, t.number): (t.state, t.epochs_done, t.last_value) for t in trials},
    }
    return {"epochs": len(epochs), "makespan": last - first, "outcome": outcome}


def same_as_alone(together: dict, alone: dict[str, dict]) -> bool:
    """Every rung decision and every trial's end state equal the study's own run."""
    for key in ("rungs", "results"):
        merged = {}
        for result in alone.values():
            merged.update(result["outcome"][key])
        if together["outcome"][key] != merged:
            return False
    return True


def run_fleet_benchmark(worker_counts: list[int], seconds: float) -> None:
    print(f"simulated epoch {seconds}s; studies/{{blog-grid,variants,ablation}}.toml replayed; "
          "busy = epochs x epoch time / (workers x makespan)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        curves = write_curves(tmp / "curves.csv")
        alone = {name: run_pool(tmp, [name], 1, curves, 0.0, tag="alone") for name in STUDIES}
        busy_at = {}
        for names in (["blog-grid"], STUDIES):
            label = " + ".join(names)
            for workers in worker_counts:
                r = run_pool(tmp, names, workers, curves, seconds)
                # Busy: the simulated epochs themselves. (An epoch row's finished_at is
                # when it was recorded, after the next epoch began: the checkpoint is
                # written in the background, so row intervals overlap.)
                ideal = r["epochs"] * seconds / workers
                share = ideal / r["makespan"]
                same = same_as_alone(r, {n: alone[n] for n in names})
                busy_at[(label, workers)] = share
                print(f"{label}: {workers} workers, {r['epochs']} epochs, makespan "
                      f"{r['makespan']:.2f}s, ideal {ideal:.2f}s, makespan/ideal "
                      f"{r['makespan'] / ideal:.3f}, busy {100 * share:.1f}%, decisions "
                      f"{'identical to alone' if same else 'DIFFERENT from alone'} "
                      f"(wall {r['wall']:.1f}s)", flush=True)
    widest = max(worker_counts)
    print(f"busy with {widest} workers: blog-grid alone "
          f"{100 * busy_at[('blog-grid', widest)]:.1f}%, three studies together "
          f"{100 * busy_at[(' + '.join(STUDIES), widest)]:.1f}%")
