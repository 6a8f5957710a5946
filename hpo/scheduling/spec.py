"""Study files: TOML with ``[study]``, ``[grid]``, ``[scheduler]`` and a run config.

Example (studies/demo.toml)::

    [study]
    name = "demo"
    metric = "srcc"            # a key of model.metrics.compute_metrics
    direction = "maximize"

    [grid]                     # any data/model/trainer field may be an axis
    lr = [1e-3, 1e-4, 1e-5, 1e-6]
    batch_size = [64, 32, 16, 8]

    [scheduler]
    kind = "sync-halving"      # sync-halving | asha | hyperband | none
    eta = 2
    rungs = 5
    min_epochs = 1
    schedule = "cumulative"    # cumulative: 1,3,7,15,31 | geometric: 1,2,4,8,16

    [data] ... [model] ... [trainer] ...   # fixed values, see model/config.py

Everything is validated up front; any problem is a ConfigError naming the file
and the key. The *spec hash* covers what decides results (grid, scheduler,
objective, model and trainer settings) and not where things live (storage,
artifacts, data paths, device), so a worker on another machine with BAID
mounted elsewhere may attach, but one with another grid may not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from model.config import ConfigError, RunConfig, check_value, field_of, read_toml
from hpo.scheduling.gangs import DEFAULT_MAX_GANG, DEFAULT_MIN_RANK_BATCH, GangLimits
from hpo.scheduling.policies import POLICIES, policy_for
from hpo.scheduling.policy import Policy
from hpo.scheduling.time_budget import parse_duration
from hpo.scheduling.rungs import SCHEDULES
from hpo.scheduling.space import Space, parse_space, space_identity
from hpo.scheduling.hyperband_sync import SAMPLERS

SCHEDULER_KINDS = tuple(POLICIES)
METRICS = ("srcc", "plcc", "accuracy", "mse", "train_loss")
STUDY_KEYS = {"name", "storage", "artifacts", "metric", "direction", "lease_seconds", "description",
              "priority", "time_budget", "tensorboard", "mlflow", "max_retries", "data_parallel",
              "min_rank_batch", "max_gang", "gang_timeout"}
# [study] data_parallel: "auto" trains a trial's epoch on a gang of idle workers on CUDA
# workers only (CPU values stay bit for bit: docs/design.md, "Data-parallel epochs");
# "on" forces gangs on any device (replay benchmarks and tests); "off" never.
DATA_PARALLEL = ("auto", "off", "on")
SCHEDULER_KEYS = {"kind", "eta", "rungs", "min_epochs", "schedule", "epochs", "brackets", "sampler",
                  "seed"}
# Kinds that draw configurations from a [space] instead of listing a [grid].
SPACE_KINDS = ("hyperband-sync",)
# Scheduler settings added after studies were stored: left out of the hashed
# identity while at their default, so every stored study keeps its spec hash.
LATER_SCHEDULER_DEFAULTS = {"brackets": 0, "sampler": "", "seed": 0}
# Fields that say where things are on one machine, not what is computed.
LOCAL_FIELDS = {("data", "root"), ("data", "cache_dir"), ("data", "num_workers"),
                ("model", "weights_dir"), ("trainer", "device"),
                # speed-only: the same values are trained with or without them
                ("data", "style_cache"), ("data", "device_cache"), ("data", "device_cache_fraction"),
                ("trainer", "compile")}


@dataclass(frozen=True)
class SchedulerSpec:
    kind: str = "sync-halving"
    eta: int = 2
    rungs: int = 5
    min_epochs: int = 1
    schedule: str = "cumulative"
    epochs: int = 0  # kind "none": epochs per trial (0: trainer.epochs)
    brackets: int = 0  # kind hyperband-sync: brackets in all (0: one Hyperband round)
    sampler: str = ""  # kind hyperband-sync: random | tpe (empty: random)
    seed: int = 0  # kind hyperband-sync: the sampler's seed

    def boundaries(self, trainer_epochs: int) -> list[int]:
        """Epochs at which trials are compared; the last one is the full budget."""
        return list(policy_for(self, trainer_epochs).boundaries)


@dataclass
class StudySpec:
    name: str
    source: str
    storage: str
    artifacts: str
    metric: str
    direction: str
    grid: dict[str, list[Any]]
    scheduler: SchedulerSpec
    run: RunConfig
    lease_seconds: float = 30.0
    # Not part of the spec hash: they say how long and where to, not what is computed.
    time_budget: float | None = None  # seconds from the study's creation; then claim nothing new
    tensorboard: str | None = None  # directory for TensorBoard event files, one folder per trial
    mlflow: bool = False  # log to MLflow (its tracking URI from the environment), if installed
    # A trial whose run raises is retried from its checkpoint this many times,
    # then FAILED. Operational like lease_seconds: not part of the spec's hash.
    max_retries: int = 2
    description: str = ""
    # Workers serving several studies claim from higher priorities first
    # (hpo/scheduling/fleet.py). Operational, like lease_seconds: it orders
    # work between studies and never changes a result, so it is not hashed and
    # a launch may change it on a running study.
    priority: int = 0
    # Distributions to draw configurations from (kind hyperband-sync) instead of a grid.
    space: Space = dataclasses.field(default_factory=dict)
    # Gangs (hpo/scheduling/gangs.py, hpo/service/gang_offers.py). Operational: with
    # replay they change only when epochs end, and the values are the curves'; not hashed.
    data_parallel: str = "auto"
    min_rank_batch: int = DEFAULT_MIN_RANK_BATCH
    max_gang: int = DEFAULT_MAX_GANG
    # Seconds a gang's rendezvous and each of its collectives may take
    # (hpo/service/rendezvous.py): a member that died mid-epoch makes the holder's
    # next collective raise within this, and the epoch is discarded.
    gang_timeout: float = 60.0

    @property
    def gang_limits(self) -> GangLimits:
        return GangLimits(min_rank_batch=self.min_rank_batch, max_gang=self.max_gang)

    def gangs_on(self, device_kind: str) -> bool:
        """Whether a worker of ``device_kind`` ("cpu", "cuda") forms gangs in this study."""
        if self.data_parallel == "auto":
            return device_kind == "cuda"
        return self.data_parallel == "on"

    @property
    def sampled(self) -> bool:
        """Configurations are drawn from ``space`` as the study goes, not listed up front."""
        return bool(self.space)

    @property
    def axes(self) -> list[str]:
        """The settings a study varies: the grid's axes or the space's dimensions."""
        return list(self.space or self.grid)

    def n_configurations(self) -> int:
        trial_count = getattr(self.policy, "trial_count", None)
        return trial_count() if self.sampled and trial_count else len(self.grid_points())

    # ---- the grid ------------------------------------------------------
    def grid_points(self) -> list[dict[str, Any]]:
        """Every configuration, in a fixed order: trial number i is point i."""
        axes = list(self.grid)
        return [dict(zip(axes, values)) for values in itertools.product(*self.grid.values())]

    def run_config(self, params: Mapping[str, Any]) -> RunConfig:
        return self.run.replace(**params)

    @property
    def final_epoch(self) -> int:
        return self.boundaries[-1]

    @property
    def policy(self) -> Policy:
        """The scheduler kind's pure decisions (hpo/scheduling/policies.py)."""
        return policy_for(self.scheduler, self.run.trainer.epochs, self.direction)

    @property
    def boundaries(self) -> list[int]:
        return list(self.policy.boundaries)

    def planned_epochs(self) -> int:
        """Epochs the study spends (an upper bound unless ``policy.plan_is_exact``)."""
        return self.policy.planned_epochs(self.n_configurations())

    def full_grid_epochs(self) -> int:
        """Every configuration trained to the full budget (for a space: those the plan draws)."""
        return self.n_configurations() * self.final_epoch

    # ---- identity ------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        run = self.run.to_mapping()
        for section, name in LOCAL_FIELDS:
            run[section].pop(name, None)
        scheduler = dataclasses.asdict(self.scheduler)
        for key, default in LATER_SCHEDULER_DEFAULTS.items():
            if scheduler[key] == default:
                del scheduler[key]
        identity = {
            "metric": self.metric,
            "direction": self.direction,
            "grid": self.grid,
            "scheduler": scheduler,
            "run": run,
        }
        if self.space:
            identity["space"] = space_identity(self.space)
        return identity

    def settings(self) -> dict[str, Any]:
        """The [study] settings that are stored beside the identity but not hashed.

        A fleet worker given no study file serves the study with these
        (hpo/service/stored_studies.py); a launch with changed values stores them anew.
        """
        return {"lease_seconds": self.lease_seconds, "description": self.description,
                "priority": self.priority, "time_budget": self.time_budget,
                "max_retries": self.max_retries, "tensorboard": self.tensorboard,
                "mlflow": self.mlflow, "data_parallel": self.data_parallel,
                "min_rank_batch": self.min_rank_batch, "max_gang": self.max_gang,
                "gang_timeout": self.gang_timeout}

    def spec_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# A study's name becomes a folder (runs/<name>/) and part of artifact ids: one
# path component, never "a/b" (nested folders), "." or ".." (outside runs/), no
# control characters, not starting with "-" (it would read as an option).
STUDY_NAME = re.compile(r"(?!\.{1,2}$)[^/\\\x00-\x1f\x7f\s-][^/\\\x00-\x1f\x7f]{0,127}")


def check_study_name(name: str, source: str, key: str) -> str:
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        raise ConfigError(source, key, "expected one path component (no '/', '\\', control "
                          f"characters, '.' or '..'; at most 128 characters), got {name!r}")
    return name


def default_storage(name: str) -> str:
    return f"sqlite:///runs/{name}/study.db"


def default_artifacts(name: str) -> str:
    return f"runs/{name}/artifacts"


def load_spec(path: str | Path) -> StudySpec:
    return spec_from_mapping(read_toml(path), str(path))


def spec_from_mapping(raw: Mapping[str, Any], source: str) -> StudySpec:
    for section in raw:
        if section not in ("study", "grid", "space", "scheduler", "data", "model", "trainer"):
            raise ConfigError(source, section, "unknown section (expected study, grid, space, "
                              "scheduler, data, model, trainer)")
    study = _table(raw, "study", source)
    _check_keys(study, STUDY_KEYS, source, "study")
    name = study.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(source, "study.name", "expected a non-empty string")
    check_study_name(name, source, "study.name")
    metric = study.get("metric", "srcc")
    if metric not in METRICS:
        raise ConfigError(source, "study.metric", f"expected one of {', '.join(METRICS)}, got {metric!r}")
    default_direction = "minimize" if metric in ("mse", "train_loss") else "maximize"
    direction = study.get("direction", default_direction)
    if direction not in ("maximize", "minimize"):
        raise ConfigError(source, "study.direction", f"expected maximize or minimize, got {direction!r}")
    lease = study.get("lease_seconds", 30)
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
        raise ConfigError(source, "study.lease_seconds", f"expected a number > 0, got {lease!r}")
    priority = study.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(source, "study.priority", f"expected an integer, got {priority!r}")
    if not isinstance(study.get("mlflow", False), bool):
        raise ConfigError(source, "study.mlflow", f"expected true or false, got {study['mlflow']!r}")
    retries = study.get("max_retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(source, "study.max_retries", f"expected an integer >= 0, got {retries!r}")
    data_parallel = study.get("data_parallel", "auto")
    if data_parallel not in DATA_PARALLEL:
        raise ConfigError(source, "study.data_parallel", f"expected one of {', '.join(DATA_PARALLEL)}, "
                          f"got {data_parallel!r}")
    gang_ints = {}
    for key, default in (("min_rank_batch", DEFAULT_MIN_RANK_BATCH), ("max_gang", DEFAULT_MAX_GANG)):
        value = study.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(source, f"study.{key}", f"expected an integer >= 1, got {value!r}")
        gang_ints[key] = value
    gang_timeout = study.get("gang_timeout", 60)
    if isinstance(gang_timeout, bool) or not isinstance(gang_timeout, (int, float)) or not gang_timeout > 0:
        raise ConfigError(source, "study.gang_timeout", f"expected a number of seconds > 0, got {gang_timeout!r}")
    for key in ("storage", "artifacts", "description", "tensorboard"):
        if key in study and not isinstance(study[key], str):
            raise ConfigError(source, f"study.{key}", f"expected a string, got {study[key]!r}")

    run = RunConfig.from_mapping({k: raw[k] for k in ("data", "model", "trainer") if k in raw},
                                 source=source)
    scheduler = _scheduler(_table(raw, "scheduler", source), source)
    space: Space = {}
    if scheduler.kind in SPACE_KINDS:
        if "grid" in raw:
            raise ConfigError(source, "grid", f"kind {scheduler.kind} draws from a [space]: write "
                              "the grid's axes there, e.g. lr = { choice = [1e-3, 1e-4] }")
        if "space" not in raw:
            raise ConfigError(source, "space", f"kind {scheduler.kind} needs a [space] table, "
                              "e.g. lr = { log_uniform = [1e-6, 1e-2] }")
        space = parse_space(raw["space"], source)
        grid: dict[str, list[Any]] = {}
    else:
        if "space" in raw:
            raise ConfigError(source, "space", f"only with kind {' or '.join(SPACE_KINDS)} (kind "
                              f"{scheduler.kind} runs the points of a [grid])")
        grid = _grid(_table(raw, "grid", source), source)
    spec = StudySpec(
        name=name,
        source=source,
        storage=study.get("storage") or default_storage(name),
        artifacts=study.get("artifacts") or default_artifacts(name),
        metric=metric,
        direction=direction,
        grid=grid,
        scheduler=scheduler,
        run=run,
        lease_seconds=float(lease),
        priority=priority,
        time_budget=(parse_duration(study["time_budget"], source) if "time_budget" in study else None),
        tensorboard=study.get("tensorboard") or None,
        mlflow=bool(study.get("mlflow", False)),
        max_retries=retries,
        description=study.get("description", ""),
        space=space,
        data_parallel=data_parallel,
        gang_timeout=float(gang_timeout),
        **gang_ints,
    )
    return spec


def _table(raw: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(source, name, "expected a table")
    return table


def _check_keys(table: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(source, f"{prefix}.{key}", f"unknown key (known: {', '.join(sorted(known))})")


def _grid(table: Mapping[str, Any], source: str) -> dict[str, list[Any]]:
    if not table:
        raise ConfigError(source, "grid", "expected at least one axis, e.g. lr = [1e-3, 1e-4]")
    grid = {}
    for key, values in table.items():
        try:
            spec_field = field_of(key)
        except KeyError:
            raise ConfigError(source, f"grid.{key}", "unknown field: expected a data, model or "
                              "trainer field (bare like lr, or dotted like model.norm)") from None
        if not isinstance(values, list) or not values:
            raise ConfigError(source, f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
        checked = [check_value(spec_field, v, source, f"grid.{key}") for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError(source, f"grid.{key}", f"expected distinct values, got {values!r}")
        grid[key] = checked
    return grid


def _scheduler(table: Mapping[str, Any], source: str) -> SchedulerSpec:
    _check_keys(table, SCHEDULER_KEYS, source, "scheduler")
    kind = table.get("kind", "sync-halving")
    if kind not in SCHEDULER_KINDS:
        raise ConfigError(source, "scheduler.kind", f"expected one of {', '.join(SCHEDULER_KINDS)}, got {kind!r}")
    schedule = table.get("schedule", "cumulative")
    if schedule not in SCHEDULES:
        raise ConfigError(source, "scheduler.schedule", f"expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    ints = {}
    for key, default, minimum in (("eta", 2, 2), ("rungs", 5, 1), ("min_epochs", 1, 1), ("epochs", 0, 0)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(source, f"scheduler.{key}", f"expected an integer >= {minimum}, got {value!r}")
        ints[key] = value
    extra: dict[str, Any] = {}
    if kind in SPACE_KINDS:
        for key, minimum in (("brackets", 0), ("seed", 0)):
            value = table.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(source, f"scheduler.{key}", f"expected an integer >= {minimum}, "
                                  f"got {value!r}")
            extra[key] = value
        sampler = table.get("sampler", "random")
        if sampler not in SAMPLERS:
            raise ConfigError(source, "scheduler.sampler", f"expected one of {', '.join(SAMPLERS)}, "
                              f"got {sampler!r}")
        # stored as given; random is the default, written out so the hash says it
        extra["sampler"] = sampler
    else:
        for key in ("brackets", "sampler", "seed"):
            if key in table:
                raise ConfigError(source, f"scheduler.{key}", f"only with kind "
                                  f"{' or '.join(SPACE_KINDS)}, not {kind}")
    return SchedulerSpec(kind=kind, schedule=schedule, **ints, **extra)
