"""The service's overhead per reported epoch, next to plain Optuna's, on the same storage.

Service: a synchronous-halving study whose epochs cost nothing (replayed
curves), run by one in-process worker: claim, Optuna report, checkpoint
write, epoch record under the lease, pause, rung decision, finalisation.
Plain Optuna: ask, then ``trial.report`` + ``trial.should_prune`` per epoch
(SuccessiveHalvingPruner), then tell, for the same number of epochs.
Both on SQLite and, when a server is given (--pg-url or
SAAN_HPO_TEST_PG_URL), PostgreSQL, with 16 and 256 trials. Prints ms per
epoch and the ratio service/plain; the last line is the worst ratio.

    python bench/coordination.py [--pg-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.common import grid_of, write_random_curves, write_study  # noqa: E402
from hpo.scheduling.spec import load_spec  # noqa: E402
from hpo.service import optuna_link  # noqa: E402
from hpo.service.learning_curves import LearningCurves  # noqa: E402
from hpo.service.study import open_or_create  # noqa: E402
from hpo.service.trial_runs import run_factory  # noqa: E402
from hpo.service.worker import Worker  # noqa: E402


def service_ms_per_epoch(tmp: Path, storage: str, grid: dict, name: str) -> tuple[float, int]:
    spec = load_spec(write_study(tmp / f"{name}.toml", name, grid, storage=storage))
    spec = dataclasses.replace(spec, lease_seconds=3600.0)
    curves = LearningCurves.load(write_random_curves(tmp / f"{name}.csv", grid, spec.final_epoch), spec)
    open_or_create(spec, storage)
    worker = Worker.attach(spec, storage, run_factory(spec, curves=curves), poll_seconds=0.0)
    started = time.perf_counter()
    worker.run()
    seconds = time.perf_counter() - started
    epochs = spec.planned_epochs()
    worker.close()
    return 1000 * seconds / epochs, epochs


def optuna_ms_per_epoch(storage: str, n_trials: int, epochs_per_trial: list[int], name: str) -> float:
    rdb = optuna_link.optuna_storage(storage)
    study = optuna.create_study(study_name=name, storage=rdb, direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    total = 0
    started = time.perf_counter()
    for i in range(n_trials):
        trial = study.ask()
        for epoch in range(1, epochs_per_trial[i] + 1):
            trial.report(0.001 * epoch + 0.0001 * i, epoch)
            trial.should_prune()  # the decision is ignored: same epochs as the service
            total += 1
        study.tell(trial, 0.001 * epochs_per_trial[i])
    return 1000 * (time.perf_counter() - started) / total


def epochs_per_trial(n: int) -> list[int]:
    """The epochs each trial gets in the service's halving run (same total)."""
    from hpo.scheduling.rungs import rung_epochs, rung_sizes

    boundaries = rung_epochs("cumulative", 2, 5, 1)
    sizes = rung_sizes(n, 2, 5)
    out = []
    for k, size in enumerate(sizes):
        stop_here = size - (sizes[k + 1] if k + 1 < len(sizes) else 0)
        out += [boundaries[k]] * stop_here
    return out


def fresh_pg_database(server_url: str) -> tuple[str, callable]:
    url = sa.make_url(server_url)
    name = f"saan_hpo_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url.set(database="postgres"), poolclass=sa.NullPool,
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=os.environ.get("SAAN_HPO_TEST_PG_URL"))
    parser.add_argument("--trials", type=int, nargs="+", default=[16, 256])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backends = ["sqlite"] + (["postgresql"] if args.pg_url else [])
    if not args.pg_url:
        print("PostgreSQL: no --pg-url or SAAN_HPO_TEST_PG_URL; measuring SQLite only")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for backend in backends:
            for n in args.trials:
                side = int(n ** 0.5)
                grid = grid_of(side, n // side)
                cleanup = []
                if backend == "sqlite":
                    service_url = f"sqlite:///{tmp / f'service-{n}.db'}"
                    plain_url = f"sqlite:///{tmp / f'plain-{n}.db'}"
                else:
                    service_url, drop1 = fresh_pg_database(args.pg_url)
                    plain_url, drop2 = fresh_pg_database(args.pg_url)
                    cleanup = [drop1, drop2]
                try:
                    service, epochs = service_ms_per_epoch(tmp, service_url, grid, f"svc-{backend}-{n}")
                    plain = optuna_ms_per_epoch(plain_url, n, epochs_per_trial(n), f"plain-{backend}-{n}")
                finally:
                    for drop in cleanup:
                        drop()
                ratios.append(service / plain)
                print(f"{backend:<10} {n:>4} trials, {epochs:>5} epochs: service {service:6.2f} ms/epoch, "
                      f"plain Optuna {plain:6.2f} ms/epoch, ratio {service / plain:.2f}", flush=True)
    print(f"worst service/plain-Optuna overhead ratio: {max(ratios):.2f}")


if __name__ == "__main__":
    main()
