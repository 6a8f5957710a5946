"""A replayed hyperband-sync study over a [space]: real SQLite studies, the real worker, no torch."""

from __future__ import annotations

import json

import optuna
import pytest
import sqlalchemy as sa

from hpo.scheduling.spec import load_spec
from hpo.service import db
from hpo.service.bracket_sampler import sample_bracket
from hpo.service.coordination import Coordinator
from hpo.service.study import open_or_create
from hpo.service.surrogate_curves import SurrogateCurves
from hpo.service.trial_runs import run_factory
from hpo.service.worker import Worker
from studyfiles import cli, epoch_rows, stored_rungs, study_rows, write_space_study, write_surrogate


def run_study(study_file, surrogate_file, workers: int = 1):
    spec = load_spec(study_file)
    curves = SurrogateCurves.load(surrogate_file, spec)
    open_or_create(spec, spec.storage)
    worker = Worker.attach(spec, spec.storage, run_factory(spec, curves=curves))
    try:
        assert worker.run() == 0
    finally:
        worker.close()
    return spec, curves


def trials_params(storage, name):
    return {r.number: json.loads(r.params_json) for r in study_rows(storage, db.trials, name)}


@pytest.fixture
def surrogate(tmp_path):
    return write_surrogate(tmp_path / "surrogate.json")


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_replayed_study_equals_an_independent_computation_of_its_brackets(tmp_path, surrogate, sampler):
    storage = f"sqlite:///{tmp_path / 'h.db'}"
    study = write_space_study(tmp_path / "h.toml", sampler=sampler, eta=2, rungs=3, brackets=4,
                              storage=storage)
    spec, curves = run_study(study, surrogate)
    policy = spec.policy
    params = trials_params(storage, spec.name)
    assert sorted(params) == list(range(policy.trial_count()))
    # every configuration lies in the space
    for config in params.values():
        assert all(spec.space[k].contains(v) for k, v in config.items()), config
    # each bracket halved by hand on the surrogate's values
    rungs = {epoch_rung[0]: epoch_rung for epoch_rung in enumerate(stored_rungs(storage, spec.name))}
    for bracket in policy.brackets():
        alive = list(bracket.trials)
        for k, (rung, level) in enumerate(zip(bracket.rungs, bracket.levels)):
            ordered = sorted(alive, key=lambda n: (-curves.value(params[n], level), n))
            keep = len(ordered) if k == len(bracket.levels) - 1 else max(1, len(ordered) // 2)
            epoch, compared, survivors = rungs[rung][1]
            assert (epoch, compared, survivors) == (level, sorted(alive), ordered[:keep])
            alive = ordered[:keep]
    kept = [r for r in epoch_rows(storage, spec.name) if r.kept]
    assert len(kept) == spec.planned_epochs()  # spent exactly as planned
    # Optuna's view: params with their real distributions, each bracket's last rung COMPLETE
    ostudy = optuna.load_study(study_name=spec.name, storage=storage)
    completed = [t for t in ostudy.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == sum(b.sizes(policy.eta)[-1] for b in policy.brackets())
    lr = ostudy.trials[0].distributions["lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
    assert ostudy.best_trial.params == params[ostudy.best_trial.number]


def test_same_stored_results_give_the_same_configurations(tmp_path, surrogate):
    first = write_space_study(tmp_path / "a.toml", name="a", brackets=4,
                              storage=f"sqlite:///{tmp_path / 'a.db'}")
    second = write_space_study(tmp_path / "b.toml", name="b", brackets=4,
                               storage=f"sqlite:///{tmp_path / 'b.db'}")
    spec, _ = run_study(first, surrogate)
    run_study(second, surrogate)
    a = trials_params(spec.storage, "a")
    assert a == trials_params(load_spec(second).storage, "b")
    # and a bracket drawn again from the stored results of the brackets before it is the same
    coordinator = Coordinator(db.create_service_engine(spec.storage), spec)
    policy = spec.policy
    for bracket in policy.brackets():
        results = coordinator.results(range(bracket.first_trial))
        again = sample_bracket(spec.space, "tpe", policy.seed, spec.direction, bracket,
                               policy.boundaries, results)
        assert again == [a[n] for n in bracket.trials]
    coordinator.engine.dispose()
    # another seed draws other configurations
    other = write_space_study(tmp_path / "c.toml", name="c", brackets=4, seed=1,
                              storage=f"sqlite:///{tmp_path / 'c.db'}")
    run_study(other, surrogate)
    assert trials_params(load_spec(other).storage, "c")[0] != a[0]


def test_tpe_brackets_open_one_after_another_random_ones_at_launch(tmp_path):
    for sampler, opened in (("tpe", 1), ("random", 3)):
        storage = f"sqlite:///{tmp_path / (sampler + '.db')}"
        spec = load_spec(write_space_study(tmp_path / f"{sampler}.toml", name=sampler,
                                           sampler=sampler, storage=storage))
        open_or_create(spec, storage)
        numbers = sorted(trials_params(storage, sampler))
        brackets = spec.policy.brackets()[:opened]
        assert numbers == [n for b in brackets for n in b.trials]
        coordinator = Coordinator(db.create_service_engine(storage), spec)
        assert coordinator.open_count() == spec.n_configurations()  # unopened brackets count
        coordinator.engine.dispose()


def test_launch_prints_the_plan_and_runs_two_workers(tmp_path, surrogate):
    storage = f"sqlite:///{tmp_path / 'l.db'}"
    study = write_space_study(tmp_path / "l.toml", name="l", storage=storage, rungs=3, brackets=3)
    done = cli("launch", str(study), "--workers", "2", "--replay-curves", str(surrogate),
               cwd=tmp_path, env={"SAAN_HPO_NO_PROGRESS": "1"})
    assert done.returncode == 0, done.stderr
    spec = load_spec(study)
    assert f"{spec.planned_epochs()} epochs planned" in done.stdout
    assert "brackets 4@1 2@2 1@4 = 8; 3@2 1@4 = 8; 3@4 = 12" in done.stdout  # bracket 0 of the plan, before anything trains
    kept = [r for r in epoch_rows(storage, "l") if r.kept]
    assert len(kept) == spec.planned_epochs()


def test_status_report_export_and_simulate_read_a_space_study(tmp_path, surrogate):
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    study = write_space_study(tmp_path / "r.toml", name="r", storage=storage, brackets=4)
    spec, _ = run_study(study, surrogate)
    status = cli("status", str(study))
    assert status.returncode == 0, status.stderr
    assert "bracket 3 (s=2, n=4)" in status.stdout and "finished" in status.stdout
    assert f"epochs spent {spec.planned_epochs()} of {spec.planned_epochs()} planned" in status.stdout
    report = cli("report", str(study), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Configurations drawn" in html and "log_uniform" in html
    export = cli("export", str(study), "-o", str(tmp_path / "best.toml"))
    assert export.returncode == 0, export.stderr
    best = optuna.load_study(study_name="r", storage=storage).best_trial
    assert f"lr = {best.params['lr']!r}" in (tmp_path / "best.toml").read_text()
    simulated = cli("simulate", str(study), "--curves", str(surrogate))
    assert simulated.returncode == 0, simulated.stderr
    assert f"epochs spent: {spec.planned_epochs()} (plan {spec.planned_epochs()}" in simulated.stdout
    assert f"winner: {best.params}" in simulated.stdout  # the same draws, the same winner


def test_two_workers_on_postgresql_draw_and_decide_as_one_worker_on_sqlite(tmp_path, surrogate, pg_url):
    """The brackets' opening (one worker draws each, saan_brackets) under two real workers on a
    real PostgreSQL server: the same configurations drawn, the same rungs decided, the plan
    spent exactly, as one in-process worker on SQLite."""
    alone = write_space_study(tmp_path / "alone.toml", name="pg", sampler="tpe", rungs=3, brackets=4,
                              storage=f"sqlite:///{tmp_path / 'alone.db'}")
    spec, _ = run_study(alone, surrogate)
    fleet = write_space_study(tmp_path / "fleet.toml", name="pg", sampler="tpe", rungs=3, brackets=4,
                              storage=pg_url)
    done = cli("launch", str(fleet), "--workers", "2", "--replay-curves", str(surrogate),
               "--replay-epoch-seconds", "0.02", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert trials_params(pg_url, "pg") == trials_params(spec.storage, "pg")
    assert stored_rungs(pg_url, "pg") == stored_rungs(spec.storage, "pg")
    kept = [r for r in epoch_rows(pg_url, "pg") if r.kept]
    assert len(kept) == len({(r.number, r.epoch) for r in kept}) == spec.planned_epochs()
