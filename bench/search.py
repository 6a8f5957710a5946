"""Beyond the grid: regret of grid, random and TPE search under equal epoch budgets.

A learning-curve surrogate, continuous in lr, batch size and weight decay, is
fitted to curves recorded from real training of the demo model on synthetic
data (bench/search-curves.csv: a ``none`` study over a grid finer than the
demo's, bench/search-curves.toml). Its fit error is printed. With per-epoch
noise of the fit's residual size, seeded, it is replayed through the real
service (the worker, a throwaway SQLite study: hpo.readers.simulate) for

* ``grid+sync``: today's way, a grid (log-spaced lr x batch sizes [x weight
  decays]) under sync-halving, as large as the budget buys;
* ``random+hb-sync`` and ``tpe+hb-sync``: a [space] under kind hyperband-sync,
  as many brackets as the budget buys;

and Optuna is driven directly on the same noisy surrogate for the anchors,
one trial at a time until the budget is spent (a trial still training then is
cut off there):

* ``optuna tpe+hyperband``: ``TPESampler`` + ``HyperbandPruner``;
* ``optuna random+sha``: ``RandomSampler`` + ``SuccessiveHalvingPruner``.

Every method has the same budget levels (1, 2, 4, 8 epochs, eta 2) and the
same space (lr log-uniform 1e-5..1e-2, batch size 8/16/32/64, weight decay
uniform 0..1e-3). Regret = best value reachable in the space at the final
epoch (noise-free surrogate, dense search) minus the winner's noise-free final
value; median and interquartile range over the seeds, and the epochs each
spent (ours: exactly as planned).

    python bench/search.py [--seeds 20] [--budgets 80 160 320] [--fit-only]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from hpo.readers.simulate import simulate  # noqa: E402
from hpo.scheduling.hyperband_sync import HyperbandSync  # noqa: E402
from hpo.scheduling.rungs import planned_epochs, rung_epochs  # noqa: E402
from hpo.scheduling.spec import spec_from_mapping  # noqa: E402
from hpo.service.surrogate_curves import FORMAT, SurrogateCurves  # noqa: E402

HERE = Path(__file__).resolve().parent
CURVES = HERE / "search-curves.csv"
SURROGATE = HERE / "search-surrogate.json"
INPUTS = [{"name": "lr", "transform": "log10"}, {"name": "batch_size", "transform": "log2"},
          {"name": "weight_decay", "transform": "scale", "scale": 1000.0}]
ETA, RUNGS, MIN_EPOCHS, SCHEDULE = 2, 4, 1, "geometric"
LEVELS = rung_epochs(SCHEDULE, ETA, RUNGS, MIN_EPOCHS)  # 1, 2, 4, 8
FINAL = LEVELS[-1]
LR, BATCHES, WD = (1e-5, 1e-2), [8, 16, 32, 64], (0.0, 1e-3)
SPACE_TOML = {"lr": {"log_uniform": list(LR)}, "batch_size": {"choice": BATCHES},
              "weight_decay": {"uniform": list(WD)}}
RUN = {"data": {"synthetic": True, "root": "unused"}, "model": {"backbone": "resnet18"},
       "trainer": {"epochs": FINAL}}


# ---- the surrogate ------------------------------------------------------------------------
def read_curves(path: Path) -> list[tuple[dict, int, float]]:
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            params = {"lr": float(row["lr"]), "batch_size": int(row["batch_size"]),
                      "weight_decay": float(row["weight_decay"])}
            rows.append((params, int(row["epoch"]), float(row["value"])))
    return rows


def features(params: dict) -> list[float]:
    return [math.log10(params["lr"]), math.log2(params["batch_size"]),
            params["weight_decay"] * 1000.0]


def _kernel(a: np.ndarray, b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    d = (a[:, None, :] - b[None, :, :]) / scales
    return np.exp(-0.5 * np.sum(d**2, axis=2))


def fit_surrogate(rows) -> tuple[dict, dict]:
    """Gaussian-kernel ridge regression per recorded epoch over the configurations.

    Length scales and ridge are chosen by leave-one-configuration-out error (closed
    form for ridge regression); that error is the fit's error printed. The replay
    noise is the curves' own epoch-to-epoch wobble: how far a value sits from the
    mean of its two neighbours, scaled to one value's standard deviation.
    """
    configs = sorted({json.dumps(p, sort_keys=True) for p, _, _ in rows})
    index = {c: i for i, c in enumerate(configs)}
    epochs = sorted({e for _, e, _ in rows})
    table = np.full((len(configs), len(epochs)), np.nan)
    for p, e, v in rows:
        table[index[json.dumps(p, sort_keys=True)], epochs.index(e)] = v
    assert not np.isnan(table).any(), "every configuration needs every epoch"
    x = np.array([features(json.loads(c)) for c in configs])

    def loo(scales, ridge):
        k = _kernel(x, x, scales)
        hat = k @ np.linalg.inv(k + ridge * np.eye(len(x)))
        centred = table - table.mean(axis=0)
        residual = (centred - hat @ centred) / (1 - np.diag(hat))[:, None]
        return residual

    choices = [(np.array([l_lr, l_b, l_wd]), ridge)
               for l_lr in (0.2, 0.3, 0.4, 0.6, 0.8, 1.0) for l_b in (0.8, 1.2, 2.0, 3.0, 5.0)
               for l_wd in (0.5, 1.0, 2.0, 5.0) for ridge in (1e-2, 3e-2, 0.1, 0.3, 1.0)]
    scales, ridge = min(choices, key=lambda c: float(np.mean(loo(*c) ** 2)))
    residual = loo(scales, ridge)
    k = _kernel(x, x, scales)
    means = table.mean(axis=0)
    weights = np.linalg.solve(k + ridge * np.eye(len(x)), table - means)
    # var(v - (a+b)/2) = 1.5 var(v) for iid noise; the median configuration's, since a
    # few diverging ones (lr 1e-2, batch 8) jump by 0.5 and would drown everything else
    inner = table[:, 1:-1] - 0.5 * (table[:, :-2] + table[:, 2:])
    wobble = float(np.median(np.std(inner, axis=1)) / math.sqrt(1.5))
    error = {"loo_rmse": float(np.sqrt(np.mean(residual**2))),
             "loo_rmse_final_epoch": float(np.sqrt(np.mean(residual[:, -1] ** 2))),
             "loo_max_abs": float(np.max(np.abs(residual))),
             "epoch_noise": wobble, "points": int(table.size), "configurations": len(configs),
             "length_scales": scales.tolist(), "ridge": ridge}
    model = {"format": FORMAT, "kind": "kernel-ridge", "metric": "srcc", "inputs": INPUTS,
             "length_scales": scales.tolist(), "centres": x.tolist(),
             "epochs": {str(e): {"mean": float(means[j]), "weights": weights[:, j].tolist()}
                        for j, e in enumerate(epochs)},
             "fit": {**error, "curves": str(CURVES.relative_to(HERE.parent))},
             "noise": {"sigma": wobble, "seed": 0}}
    return model, error


def best_reachable(surrogate: SurrogateCurves) -> tuple[float, dict]:
    """The best noise-free final value in the space: a dense grid, then a finer one around it."""
    best = (-math.inf, {})
    for batch in BATCHES:
        for lr in np.logspace(math.log10(LR[0]), math.log10(LR[1]), 241):
            for wd in np.linspace(WD[0], WD[1], 41):
                params = {"lr": float(lr), "batch_size": batch, "weight_decay": float(wd)}
                value = surrogate.expected(params, FINAL)
                if value > best[0]:
                    best = (value, params)
    return best


# ---- the methods --------------------------------------------------------------------------
def noisy(model: dict, seed: int) -> SurrogateCurves:
    return SurrogateCurves({**model, "noise": {**model["noise"], "seed": seed}}, str(SURROGATE))


def grid_for(budget: int) -> dict:
    """The largest grid of the space whose sync-halving plan fits the budget."""
    best = None
    for n_lr in range(2, 33):
        for n_wd in (1, 2, 3, 4):
            n = n_lr * len(BATCHES) * n_wd
            if planned_epochs(n, ETA, LEVELS) <= budget and (best is None or n > best[0]):
                best = (n, n_lr, n_wd)
    _, n_lr, n_wd = best
    lrs = [float(f"{x:.3g}") for x in np.logspace(math.log10(LR[0]), math.log10(LR[1]), n_lr)]
    wds = [float(f"{x:.3g}") for x in (np.linspace(WD[0], WD[1], n_wd + 2)[1:-1])]
    return {"lr": lrs, "batch_size": BATCHES, "weight_decay": wds}


def brackets_for(budget: int) -> int:
    count = 0
    while HyperbandSync("hyperband-sync", ETA, RUNGS, MIN_EPOCHS, SCHEDULE,
                        n_brackets=count + 1).planned_epochs() <= budget:
        count += 1
    return count


def study_spec(name: str, budget: int, seed: int, sampler: str | None):
    scheduler = {"eta": ETA, "rungs": RUNGS, "min_epochs": MIN_EPOCHS, "schedule": SCHEDULE}
    raw = {"study": {"name": name, "metric": "srcc", "direction": "maximize"}, **RUN}
    if sampler is None:
        raw.update(grid=grid_for(budget), scheduler={**scheduler, "kind": "sync-halving"})
    else:
        raw.update(space=SPACE_TOML, scheduler={**scheduler, "kind": "hyperband-sync",
                                                "brackets": brackets_for(budget),
                                                "sampler": sampler, "seed": seed})
    return spec_from_mapping(raw, f"bench/search.py ({name})")


def through_service(model, best, budget, seed, sampler):
    spec = study_spec(f"search-{sampler or 'grid'}", budget, seed, sampler)
    curves = noisy(model, seed)
    result = simulate(spec, curves)
    assert result.epochs_spent == result.planned_epochs == spec.planned_epochs(), result
    return best - curves.expected(result.winner, FINAL), result.epochs_spent


def optuna_direct(model, best, budget, seed, sampler_name):
    """Optuna's own sampler and asynchronous pruner, one trial at a time, on the surrogate."""
    curves = noisy(model, seed)
    if sampler_name == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
        pruner = optuna.pruners.HyperbandPruner(min_resource=MIN_EPOCHS, max_resource=FINAL,
                                                reduction_factor=ETA)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=MIN_EPOCHS,
                                                        reduction_factor=ETA,
                                                        min_early_stopping_rate=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    spent = 0
    while spent < budget:
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(*LR, log=True),
                           "batch_size": optuna.distributions.CategoricalDistribution(BATCHES),
                           "weight_decay": optuna.distributions.FloatDistribution(*WD)})
        state, value = optuna.trial.TrialState.COMPLETE, None
        for epoch in range(1, FINAL + 1):
            if spent == budget:  # the budget ends mid-trial: it never finishes
                state = optuna.trial.TrialState.FAIL
                break
            value = curves.value(trial.params, epoch)
            spent += 1
            trial.report(value, epoch)
            if epoch < FINAL and trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        winner = study.best_trial.params
    else:  # nothing finished: the furthest trial's best value
        winner = max(study.trials, key=lambda t: (max(t.intermediate_values, default=0),
                                                  t.intermediate_values.get(
                                                      max(t.intermediate_values, default=0), -9)))
        winner = winner.params
    return best - curves.expected(winner, FINAL), spent


METHODS = [
    ("grid+sync", lambda m, b, n, s: through_service(m, b, n, s, None)),
    ("random+hb-sync", lambda m, b, n, s: through_service(m, b, n, s, "random")),
    ("tpe+hb-sync", lambda m, b, n, s: through_service(m, b, n, s, "tpe")),
    ("optuna tpe+hyperband", lambda m, b, n, s: optuna_direct(m, b, n, s, "tpe")),
    ("optuna random+sha", lambda m, b, n, s: optuna_direct(m, b, n, s, "random")),
]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", type=int, nargs="+", default=[80, 160, 320])
    parser.add_argument("--fit-only", action="store_true", help="fit and write the surrogate only")
    parser.add_argument("--methods", nargs="+", default=[m for m, _ in METHODS],
                        help="a subset of the methods (default: all)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("hpo").setLevel(logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    rows = read_curves(CURVES)
    model, error = fit_surrogate(rows)
    SURROGATE.write_text(json.dumps(model, indent=1) + "\n")
    print(f"surrogate fitted to {error['points']} values of {error['configurations']} recorded "
          f"curves ({CURVES.name}), kernel ridge per epoch, length scales "
          f"{', '.join(f'{v:g}' for v in error['length_scales'])}, ridge {error['ridge']:g}: "
          f"leave-one-configuration-out rmse {error['loo_rmse']:.4f} (final epoch "
          f"{error['loo_rmse_final_epoch']:.4f}, max |error| {error['loo_max_abs']:.4f}); replay "
          f"noise sigma {error['epoch_noise']:.4f} (median epoch-to-epoch wobble); wrote {SURROGATE.name}")
    best, where = best_reachable(SurrogateCurves(model, str(SURROGATE)))
    print(f"best reachable at epoch {FINAL}: srcc {best:.4f} at lr {where['lr']:.3g}, batch "
          f"{where['batch_size']}, weight decay {where['weight_decay']:.3g}")
    if args.fit_only:
        return 0
    print(f"levels {LEVELS} (eta {ETA}); {args.seeds} seeds; regret = best reachable - winner's "
          "noise-free final value")
    header = f"{'budget':>6}  {'method':<22} {'spent':>9}  {'median':>7}  {'IQR':>17}"
    print(header)
    summary = {}
    started = time.monotonic()
    for budget in args.budgets:
        for name, run in METHODS:
            if name not in args.methods:
                continue
            regrets, spent = [], []
            for seed in range(args.seeds):
                regret, used = run(model, best, budget, seed)
                regrets.append(regret)
                spent.append(used)
            q1, median, q3 = quartiles(regrets)
            spent_text = (f"{spent[0]}" if len(set(spent)) == 1 else f"{min(spent)}-{max(spent)}")
            print(f"{budget:>6}  {name:<22} {spent_text:>9}  {median:>7.4f}  "
                  f"[{q1:.4f}, {q3:.4f}]", flush=True)
            summary[(budget, name)] = median
    ours = "tpe+hb-sync"
    print(f"({time.monotonic() - started:.0f} s)")
    for budget in args.budgets:
        others = {n: m for (b, n), m in summary.items() if b == budget and n != ours}
        if (budget, ours) not in summary or not others:
            continue
        best_other = min(others, key=others.get)
        verdict = "lowest" if summary[(budget, ours)] <= others[best_other] else \
            f"not lowest ({best_other} {others[best_other]:.4f})"
        print(f"budget {budget}: {ours} median regret {summary[(budget, ours)]:.4f}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
