"""The ``--data-parallel`` mode of bench/scaling.py: the blog grid alone, with and without gangs.

studies/blog-grid.toml replayed (bench/fleet.py's seeded random curves), real
worker processes on a throwaway SQLite file, once with ``[study] data_parallel
= "on"`` (replay workers run on the CPU, where "auto" means off) and once with
``"off"``. Per worker count it prints makespan / ideal (ideal: every epoch
packed perfectly, epochs x seconds / workers), the share of worker time busy
(each epoch counts its gang's size x its replayed time: epoch_seconds / (k x
efficiency)), the widest gang, and whether the rung decisions and every
trial's end state are identical to the run without gangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.fleet import ROOT, read_outcome, write_curves
from hpo.service import db


def study_file(tmp: Path, data_parallel: str, min_rank_batch: int | None) -> Path:
    """studies/blog-grid.toml with the gang settings put into its [study] table."""
    text = (ROOT / "studies" / "blog-grid.toml").read_text()
    settings = f'data_parallel = "{data_parallel}"\n'
    if min_rank_batch is not None:
        settings += f"min_rank_batch = {min_rank_batch}\n"
    path = tmp / f"blog-grid-{data_parallel}.toml"
    path.write_text(text.replace("[study]\n", "[study]\n" + settings, 1))
    return path


def run_study(tmp: Path, study: Path, tag: str, workers: int, curves: Path, seconds: float,
              efficiency: float) -> dict:
    storage = f"sqlite:///{tmp / f'{tag}-{workers}.db'}"  # never resume another run
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "hpo.cli", "launch", str(study), "--storage", storage,
                    "--artifacts", str(tmp / f"artifacts-{tag}-{workers}"), "--workers",
                    str(workers), "--replay-curves", str(curves), "--replay-epoch-seconds",
                    str(seconds), "--replay-gang-efficiency", str(efficiency)],
                   check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    engine = db.create_service_engine(storage)
    try:
        with engine.connect() as conn:
            gangs = [len(json.loads(g)) + 1 if g else 1
                     for g in conn.execute(sa.select(db.epochs.c.gang_json)).scalars()]
    finally:
        engine.dispose()
    worker_seconds = sum(seconds if k == 1 else seconds / efficiency for k in gangs)
    return {**read_outcome(storage), "wall": wall, "worker_seconds": worker_seconds,
            "widest": max(gangs), "gang_epochs": sum(k > 1 for k in gangs)}


def run_gang_benchmark(worker_counts: list[int], seconds: float, efficiency: float = 1.0,
                       min_rank_batch: int | None = None) -> None:
    limit = "" if min_rank_batch is None else f", min_rank_batch {min_rank_batch}"
    print(f"studies/blog-grid.toml alone, replayed; simulated epoch {seconds}s, gang efficiency "
          f"{efficiency}{limit}; busy = worker time in epochs / (workers x makespan)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        curves = write_curves(tmp / "curves.csv")
        files = {mode: study_file(tmp, mode, min_rank_batch) for mode in ("off", "on")}
        for workers in worker_counts:
            results = {mode: run_study(tmp, files[mode], mode, workers, curves, seconds, efficiency)
                       for mode in ("off", "on")}
            same = results["on"]["outcome"] == results["off"]["outcome"]
            for mode in ("on", "off"):
                r = results[mode]
                ideal = r["epochs"] * seconds / workers
                busy = r["worker_seconds"] / (workers * r["makespan"])
                gangs = (f", {r['gang_epochs']} epochs in gangs, widest {r['widest']}"
                         if mode == "on" else "")
                print(f"data_parallel {mode:>3}: {workers} workers, {r['epochs']} epochs, makespan "
                      f"{r['makespan']:.2f}s, ideal {ideal:.2f}s, makespan/ideal "
                      f"{r['makespan'] / ideal:.3f}, busy {100 * busy:.1f}%{gangs} "
                      f"(wall {r['wall']:.1f}s)", flush=True)
            print(f"  decisions with gangs {'identical to' if same else 'DIFFERENT from'} "
                  f"data_parallel off", flush=True)
