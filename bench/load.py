"""PostgreSQL under load: a large fleet of replay workers, some SIGKILLed and restarted.

    python bench/load.py [--url URL] [--workers 64] [--epoch-seconds 0.2] [--kills N]
                         [--lease-seconds 3] [--seed 0]

The three published studies (studies/blog-grid.toml, variants.toml, ablation.toml,
740 epochs; copies with a short lease so a killed worker's trial is taken over
soon) are created in a fresh database on the server of ``--url`` (default
$SAAN_HPO_TEST_PG_URL; dropped afterwards) and served by N fleet workers
(``saan-hpo worker --storage URL``) replaying seeded curves, no torch. Every
worker imports first and all start together (bench/load_worker.py); at random
moments (seeded: random shares of the planned epochs) a worker holding a trial
is SIGKILLed and a replacement started, N/10 times by default. Prints claims per
second, p50/p99 latency of claims and lease renewals (timed in the workers),
lease takeovers, connections held at peak, connection refusals logged, duplicate
epochs (kept twice: must be 0), FAILED trials, tracebacks in the workers' logs,
and whether every study decided exactly as it does alone with one worker (on
SQLite, bench/fleet.py). Exit 1 when any of those checks fails.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.fleet import ROOT, STUDIES, read_outcome, run_pool, same_as_alone, write_curves  # noqa: E402
from bench.load_figures import Figures, collect_figures  # noqa: E402
from hpo.scheduling.spec import load_spec  # noqa: E402

SAMPLE_SECONDS = 0.2  # how often connections and progress are looked at


@dataclass
class Fleet:
    """The worker processes of one run, with their logs and timing files."""

    folder: Path
    command: list[str]
    go: Path
    live: list[subprocess.Popen] = field(default_factory=list)
    done: list[subprocess.Popen] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)

    def start(self) -> subprocess.Popen:
        n = len(self.live) + len(self.done)
        log = open(self.folder / f"worker-{n:03d}.log", "w")
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load_worker.py"),
                                 str(self.folder / f"timings-{n:03d}.txt"), str(self.go), "--",
                                 *self.command], cwd=self.folder, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "SAAN_HPO_NO_PROGRESS": "1"})
        log.close()  # the child holds it
        self.live.append(proc)
        return proc

    def reap(self) -> None:
        for proc in [p for p in self.live if p.poll() is not None]:
            self.live.remove(proc)
            self.done.append(proc)

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.killed.add(proc.pid)
        self.reap()

    def stop_all(self) -> None:
        for proc in self.live:
            proc.kill()
            proc.wait()
        self.reap()


def short_lease_copies(folder: Path, lease_seconds: float) -> list[Path]:
    """The published study files with ``lease_seconds`` set (not part of the spec hash)."""
    copies = []
    for name in STUDIES:
        text = (ROOT / "studies" / f"{name}.toml").read_text()
        text, n = re.subn(r'^(name = "[^"]*")$', rf"\1\nlease_seconds = {lease_seconds}", text,
                          count=1, flags=re.M)
        if n != 1:
            raise SystemExit(f"studies/{name}.toml: no name line to put lease_seconds after")
        copies.append(folder / f"{name}.toml")
        copies[-1].write_text(text)
    return copies


class Database:
    """A fresh database on the server of ``server_url``, dropped (sessions and all) at exit."""

    def __init__(self, server_url: str):
        self.server = sa.make_url(server_url)
        self.name = f"saan_hpo_load_{uuid.uuid4().hex[:12]}"
        self.url = self.server.set(database=self.name).render_as_string(hide_password=False)
        self.admin = sa.create_engine(self.server.set(database="postgres"), poolclass=sa.NullPool,
                                      isolation_level="AUTOCOMMIT")

    def __enter__(self) -> "Database":
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self

    def __exit__(self, *exc) -> None:
        # FORCE ends the sessions still in the database; a role without pg_signal_backend may
        # not end an autovacuum worker (PostgreSQL 15), which the load often starts: it ends
        # by itself in moments, so try again a few times.
        for attempt in range(10):
            try:
                with self.admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
                break
            except sa.exc.ProgrammingError as err:
                if "pg_signal_backend" not in str(err) or attempt == 9:
                    raise
                time.sleep(1.0)
        self.admin.dispose()


def kill_points(rng: random.Random, kills: int, planned: int) -> list[int]:
    """Kept-epoch counts at which to kill: random moments between 5 % and 85 % of the work."""
    return sorted(int(planned * rng.uniform(0.05, 0.85)) for _ in range(kills))


def victim(rng: random.Random, fleet: Fleet, conn: sa.Connection) -> subprocess.Popen:
    """A live worker that holds a trial now (so its lease must be taken over), else any."""
    holders = set(conn.execute(sa.text(
        "SELECT pid FROM saan_workers WHERE state = 'active' AND current_trial IS NOT NULL"))
        .scalars())
    live = sorted(fleet.live, key=lambda p: p.pid)
    holding = [p for p in live if p.pid in holders]
    return rng.choice(holding or live)


def drive(db: Database, fleet: Fleet, planned: int, kills: int, seed: int, timeout: float) -> dict:
    """Start the fleet, kill and replace at the kill points, sample connections, wait for the end."""
    rng = random.Random(seed)
    points = kill_points(rng, kills, planned)
    engine = sa.create_engine(db.url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    samples, kill_times = [], []
    with engine.connect() as conn:
        count_sessions = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND pid <> pg_backend_pid()")
        kept = sa.text("SELECT count(*) FROM saan_epochs WHERE kept")
        fleet.go.touch()
        started = time.monotonic()
        while True:
            fleet.reap()
            samples.append(conn.execute(count_sessions).scalar_one())
            if not fleet.live:
                break
            if time.monotonic() - started > timeout:
                fleet.stop_all()
                raise SystemExit(f"load: not finished after {timeout:.0f}s; workers stopped "
                                 f"(logs were in {fleet.folder})")
            if points and conn.execute(kept).scalar_one() >= points[0]:
                points.pop(0)
                fleet.kill(victim(rng, fleet, conn))
                kill_times.append(time.monotonic() - started)
                fleet.start()
            time.sleep(SAMPLE_SECONDS)
        wall = time.monotonic() - started
        max_connections = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
    engine.dispose()
    return {"samples": samples, "wall": wall, "kill_times": kill_times,
            "max_connections": max_connections}


def run_load(url: str, workers: int = 64, epoch_seconds: float = 0.2, kills: int | None = None,
             lease_seconds: float = 3.0, seed: int = 0, timeout: float = 1800.0,
             say=print) -> Figures:
    """One run: the single-worker runs on SQLite, then the fleet on PostgreSQL; its figures."""
    kills = round(workers / 10) if kills is None else kills
    with tempfile.TemporaryDirectory(prefix="saan-hpo-load-") as tmp:
        tmp = Path(tmp)
        curves = write_curves(tmp / "curves.csv", seed=seed)
        say(f"single-worker runs on SQLite: {', '.join(STUDIES)}")
        alone = {name: run_pool(tmp, [name], 1, curves, 0.0, tag="alone") for name in STUDIES}
        files = short_lease_copies(tmp, lease_seconds)
        planned = sum(load_spec(f).planned_epochs() for f in files)
        with Database(url) as db:
            made = subprocess.run([sys.executable, "-m", "hpo.cli", "launch", *map(str, files),
                                   "--storage", db.url, "--artifacts", str(tmp / "artifacts"),
                                   "--workers", "0", "--replay-curves", str(curves)],
                                  cwd=tmp, capture_output=True, text=True)
            if made.returncode:  # one line; the command itself would show the URL's password
                last = (made.stderr.strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"load: creating the studies failed (exit {made.returncode}): {last}")
            fleet = Fleet(tmp, ["worker", "--storage", db.url, "--replay-curves", str(curves),
                                "--replay-epoch-seconds", str(epoch_seconds)], tmp / "go")
            try:
                for _ in range(workers):
                    fleet.start()
                say(f"{workers} workers started; go once every one has imported")
                wait_imported(fleet, workers)
                run = drive(db, fleet, planned, kills, seed, timeout)
            finally:
                fleet.stop_all()  # none left behind, whatever went wrong (a no-op after a full run)
            together = read_outcome(db.url)
            figures = collect_figures(db.url, fleet.folder, fleet.done, fleet.killed, run, together,
                                      same_as_alone(together, alone), planned)
    figures.setting = (f"{workers} replay workers, {epoch_seconds} s epochs, lease "
                       f"{lease_seconds} s, {', '.join(STUDIES)} ({planned} epochs planned), "
                       f"{len(run['kill_times'])} SIGKILLed and restarted (seed {seed})")
    figures.workers = workers
    return figures


def wait_imported(fleet: Fleet, workers: int, timeout: float = 600.0) -> None:
    """Until every worker has imported (its timings file exists: bench/load_worker.py), so
    that start-up stays out of the measured run; a worker that exits meanwhile ends the wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.reap()
        if fleet.done or len(list(fleet.folder.glob("timings-*.txt"))) >= workers:
            return
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("SAAN_HPO_TEST_PG_URL"),
                        help="a PostgreSQL server and a role that may CREATE DATABASE "
                             "(default $SAAN_HPO_TEST_PG_URL)")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--epoch-seconds", type=float, default=0.2)
    parser.add_argument("--kills", type=int, default=None, help="default: 10 %% of the workers")
    parser.add_argument("--lease-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or $SAAN_HPO_TEST_PG_URL: a PostgreSQL server is needed")
    figures = run_load(args.url, args.workers, args.epoch_seconds, args.kills, args.lease_seconds,
                       args.seed, args.timeout)
    for line in figures.lines():
        print(line, flush=True)
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
