"""The published figures (studies/published.toml) and how a study is compared with them.

Pure functions over validated data: :func:`load_published` reads and checks the
file (a bad file is one :class:`ConfigError` line naming file and key), then

- :func:`rows_for_study` and :func:`matching_rows` say which published rows a
  trial of a study stands beside (``saan-hpo table``): the study's name picks
  the published tables (``studies`` in the file; a ``<name>-synthetic`` twin
  counts as ``<name>``), each row's ``match`` picks the trials whose
  configuration -- grid point or the study's fixed settings -- has those values;
- :func:`halving_trials` and :func:`compare_ladder` put the published
  successive-halving run beside a study with the same grid (``saan-hpo
  report``): the grid is recognised by its configurations, not by its name or
  axis order, and the published model numbers are translated to trial numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from model.config import ConfigError, check_value, field_of, read_toml, resolve_field
from hpo.scheduling.rungs import SCHEDULES, rung_epochs

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "studies" / "published.toml"
PATH_ENV = "SAAN_HPO_PUBLISHED"  # another figures file (tests; a fork's own figures)
FILE_NAME = DEFAULT_PATH.name  # lives among the study files but is not one
SYNTHETIC_SUFFIX = "-synthetic"  # hpo.scheduling.synthetic_twin names for a study's small twin
SCORES = ("accuracy", "plcc", "srcc")
# Columns `table` adds: the published row's label, then each score and (ours - published).
LABEL_COLUMN = "published"
SCORE_COLUMNS = tuple(c for s in SCORES for c in (f"published_{s}", f"diff_{s}"))
COMPARED_COLUMNS = (LABEL_COLUMN, *SCORE_COLUMNS)


@dataclass(frozen=True)
class PublishedRow:
    source: str  # "paper", "blog Table 1", ...
    label: str
    match: dict[str, Any]  # "section.field" -> value
    scores: dict[str, float]  # accuracy (fraction), plcc, srcc
    note: str = ""

    @property
    def title(self) -> str:
        return f"{self.source}: {self.label}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class PublishedTable:
    id: str
    source: str
    title: str
    studies: tuple[str, ...]
    rows: tuple[PublishedRow, ...]


@dataclass(frozen=True)
class Elimination:
    iteration: int  # 1-based, as the blog counts
    epochs: int  # cumulative epochs when compared
    models: tuple[int, ...]


@dataclass(frozen=True)
class PublishedHalving:
    source: str
    title: str
    studies: tuple[str, ...]
    eta: int
    schedule: str
    min_epochs: int
    models: dict[int, dict[str, Any]]  # model number -> {"section.field": value}
    eliminated: tuple[Elimination, ...]
    winner: int
    winner_epochs: int
    winner_scores: dict[str, float]

    @property
    def boundaries(self) -> list[int]:
        return [e.epochs for e in self.eliminated] + [self.winner_epochs]

    def winner_row(self) -> PublishedRow:
        return PublishedRow(self.source, f"halving winner, model {self.winner}",
                            dict(self.models[self.winner]), dict(self.winner_scores),
                            f"{self.winner_epochs} epochs")


@dataclass(frozen=True)
class Published:
    source: str
    tables: tuple[PublishedTable, ...]
    halving: PublishedHalving

    def all_rows(self) -> list[PublishedRow]:
        return [r for t in self.tables for r in t.rows] + [self.halving.winner_row()]


# ---- loading ------------------------------------------------------------------------
def published_path() -> Path:
    return Path(os.environ.get(PATH_ENV) or DEFAULT_PATH)


def load_published_if_any() -> Published | None:
    """The figures file ($SAAN_HPO_PUBLISHED, else studies/published.toml); None when the
    default file is absent (an install without the repository's studies/)."""
    if not os.environ.get(PATH_ENV) and not DEFAULT_PATH.is_file():
        return None
    return load_published()


def load_published(path: str | Path | None = None) -> Published:
    path = Path(path) if path is not None else published_path()
    return published_from_mapping(read_toml(path), str(path))


def published_from_mapping(raw: Mapping[str, Any], source: str) -> Published:
    _keys(raw, {"table", "halving"}, source, "", required={"table", "halving"})
    tables = raw["table"]
    if not isinstance(tables, list) or not tables:
        raise ConfigError(source, "table", "expected one or more [[table]] sections")
    parsed = tuple(_table(t, source, f"table[{i}]") for i, t in enumerate(tables))
    ids = [t.id for t in parsed]
    for i, table_id in enumerate(ids):
        if ids.index(table_id) != i:
            raise ConfigError(source, f"table[{i}].id", f"expected a unique id, {table_id!r} repeats")
    return Published(source, parsed, _halving(raw["halving"], source))


def _keys(table: Any, known: set[str], source: str, prefix: str,
          required: set[str] = frozenset()) -> None:
    where = prefix or "top level"
    if not isinstance(table, Mapping):
        raise ConfigError(source, where, "expected a table")
    for key in table:
        if key not in known:
            raise ConfigError(source, f"{prefix}.{key}" if prefix else key,
                              f"unknown key (known: {', '.join(sorted(known))})")
    for key in sorted(required - set(table)):
        raise ConfigError(source, f"{prefix}.{key}" if prefix else key, "missing")


def _text(table: Mapping, key: str, source: str, prefix: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise ConfigError(source, f"{prefix}.{key}", f"expected a non-empty string, got {value!r}")
    return value


def _studies(table: Mapping, source: str, prefix: str) -> tuple[str, ...]:
    value = table.get("studies")
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v.strip() for v in value)):
        raise ConfigError(source, f"{prefix}.studies", f"expected a list of study names, got {value!r}")
    return tuple(value)


def _score(table: Mapping, key: str, source: str, prefix: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        what = "a fraction in [0, 1] (76.80 % is 0.768)" if key == "accuracy" else "a number in [-1, 1]"
        raise ConfigError(source, f"{prefix}.{key}", f"expected {what}, got {value!r}")
    if key == "accuracy" and value < 0:
        raise ConfigError(source, f"{prefix}.{key}", f"expected a fraction in [0, 1], got {value!r}")
    return float(value)


def _settings(raw: Any, source: str, prefix: str) -> dict[str, Any]:
    """Study-file fields -> values, keyed "section.field" and checked like a grid's values."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(source, prefix, "expected a table of settings, e.g. { batch_size = 16 }")
    settings = {}
    for key, value in raw.items():
        try:
            section, name = resolve_field(key)
        except KeyError:
            raise ConfigError(source, f"{prefix}.{key}", "unknown field: expected a data, model or "
                              "trainer field (bare like lr, or dotted like model.norm)") from None
        settings[f"{section}.{name}"] = check_value(field_of(key), value, source, f"{prefix}.{key}")
    return settings


def _table(raw: Any, source: str, prefix: str) -> PublishedTable:
    _keys(raw, {"id", "source", "title", "studies", "row"}, source, prefix,
          required={"id", "source", "studies", "row"})
    rows = raw["row"]
    if not isinstance(rows, list) or not rows:
        raise ConfigError(source, f"{prefix}.row", "expected one or more [[table.row]] sections")
    table_source = _text(raw, "source", source, prefix)
    parsed = []
    for i, row in enumerate(rows):
        where = f"{prefix}.row[{i}]"
        _keys(row, {"label", "note", "match", *SCORES}, source, where,
              required={"label", "match", *SCORES})
        parsed.append(PublishedRow(
            source=table_source, label=_text(row, "label", source, where),
            match=_settings(row["match"], source, f"{where}.match"),
            scores={s: _score(row, s, source, where) for s in SCORES},
            note=_text(row, "note", source, where, default="")))
    return PublishedTable(_text(raw, "id", source, prefix), table_source,
                          _text(raw, "title", source, prefix, default=""),
                          _studies(raw, source, prefix), tuple(parsed))


def _int(table: Mapping, key: str, source: str, prefix: str, minimum: int) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(source, f"{prefix}.{key}", f"expected an integer >= {minimum}, got {value!r}")
    return value


def _halving(raw: Any, source: str) -> PublishedHalving:
    p = "halving"
    _keys(raw, {"source", "title", "studies", "eta", "rungs", "min_epochs", "schedule", "models",
                "eliminated", "winner"}, source, p,
          required={"source", "studies", "eta", "rungs", "schedule", "models", "eliminated", "winner"})
    eta, rungs = _int(raw, "eta", source, p, 2), _int(raw, "rungs", source, p, 2)
    min_epochs = _int({"min_epochs": raw.get("min_epochs", 1)}, "min_epochs", source, p, 1)
    schedule = raw["schedule"]
    if schedule not in SCHEDULES:
        raise ConfigError(source, f"{p}.schedule", f"expected one of {', '.join(SCHEDULES)}, got {schedule!r}")

    models = _models(raw["models"], source, f"{p}.models")
    epochs = rung_epochs(schedule, eta, rungs, min_epochs)
    eliminated = raw["eliminated"]
    if not isinstance(eliminated, list) or len(eliminated) != rungs - 1:
        raise ConfigError(source, f"{p}.eliminated", f"expected {rungs - 1} entries (one per "
                          f"iteration before the last), got {eliminated!r}")
    alive, parsed = set(models), []
    for i, entry in enumerate(eliminated):
        where = f"{p}.eliminated[{i}]"
        _keys(entry, {"iteration", "epochs", "models"}, source, where,
              required={"iteration", "epochs", "models"})
        if entry["iteration"] != i + 1:
            raise ConfigError(source, f"{where}.iteration", f"expected {i + 1}, got {entry['iteration']!r}")
        if entry["epochs"] != epochs[i]:
            raise ConfigError(source, f"{where}.epochs", f"expected {epochs[i]} ({schedule} schedule, "
                              f"eta {eta}), got {entry['epochs']!r}")
        out = entry["models"]
        keep = max(1, len(alive) // eta)
        if (not isinstance(out, list) or not all(isinstance(m, int) and m in alive for m in out)
                or len(set(out)) != len(out) or len(out) != len(alive) - keep):
            raise ConfigError(source, f"{where}.models", f"expected {len(alive) - keep} distinct "
                              f"models still in the run ({sorted(alive)}), got {out!r}")
        alive -= set(out)
        parsed.append(Elimination(i + 1, epochs[i], tuple(out)))

    winner = raw["winner"]
    _keys(winner, {"model", "epochs", *SCORES}, source, f"{p}.winner",
          required={"model", "epochs", *SCORES})
    if winner["model"] not in alive or len(alive) != 1:
        raise ConfigError(source, f"{p}.winner.model", f"expected the one model never eliminated "
                          f"({sorted(alive)}), got {winner['model']!r}")
    if winner["epochs"] != epochs[-1]:
        raise ConfigError(source, f"{p}.winner.epochs", f"expected {epochs[-1]}, got {winner['epochs']!r}")
    return PublishedHalving(
        source=_text(raw, "source", source, p), title=_text(raw, "title", source, p, default=""),
        studies=_studies(raw, source, p), eta=eta, schedule=schedule, min_epochs=min_epochs,
        models=models, eliminated=tuple(parsed), winner=winner["model"], winner_epochs=epochs[-1],
        winner_scores={s: _score(winner, s, source, f"{p}.winner") for s in SCORES})


def _models(raw: Any, source: str, prefix: str) -> dict[int, dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigError(source, prefix, "expected a list of { number = N, <field> = value, ... }")
    models: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(raw):
        where = f"{prefix}[{i}]"
        if not isinstance(entry, Mapping) or entry.get("number") != i:
            raise ConfigError(source, f"{where}.number", f"expected {i} (models in number order)")
        models[i] = _settings({k: v for k, v in entry.items() if k != "number"}, source, where)
    keys = {tuple(sorted(m)) for m in models.values()}
    points = {_point_key(m) for m in models.values()}
    if len(keys) != 1 or len(points) != len(models):
        raise ConfigError(source, prefix, "expected every model to set the same fields, "
                          "each to a different combination")
    return models


# ---- matching trials with published rows ---------------------------------------------
def canonical(key: str) -> str:
    section, name = resolve_field(key)
    return f"{section}.{name}"


def base_name(study: str) -> str:
    return study.removesuffix(SYNTHETIC_SUFFIX)


def rows_for_study(published: Published, study: str) -> list[PublishedRow]:
    """The published rows a study reproduces (none: the study is not a published one)."""
    name = base_name(study)
    rows = [r for t in published.tables if name in t.studies for r in t.rows]
    if name in published.halving.studies:
        rows.append(published.halving.winner_row())
    return rows


def settings_of(spec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of one trial's configuration, keyed "section.field"."""
    values = {f"{section}.{name}": value
              for section, fields in spec.run.to_mapping().items() for name, value in fields.items()}
    values.update({canonical(axis): value for axis, value in params.items()})
    return values


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def row_matches(row: PublishedRow, settings: Mapping[str, Any]) -> bool:
    return all(key in settings and same_value(settings[key], value) for key, value in row.match.items())


def matching_rows(rows: list[PublishedRow], spec, params: Mapping[str, Any]) -> list[PublishedRow]:
    settings = settings_of(spec, params)
    return [r for r in rows if row_matches(r, settings)]


def differences(measured: Mapping[str, float], row: PublishedRow) -> dict[str, float]:
    """ours - published for each score we have (NaN where we have none)."""
    return {s: (measured[s] - row.scores[s]) if _is_number(measured.get(s)) else math.nan
            for s in SCORES}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


# ---- the halving ladder ----------------------------------------------------------------
def _point_key(settings: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in settings.items()))


def halving_trials(halving: PublishedHalving, spec) -> dict[int, int] | None:
    """Published model number -> our trial number, when the study's grid is the published one.

    Trial ``i`` of a study is its grid point ``i``; the grid is the published one when
    its configurations, as sets of field values, are exactly the published models
    (axis names and order may differ). None for any other grid.
    """
    points = spec.grid_points()
    if len(points) != len(halving.models):
        return None
    ours = {}
    for number, point in enumerate(points):
        ours[_point_key({canonical(k): v for k, v in point.items()})] = number
    mapping = {m: ours.get(_point_key(s)) for m, s in halving.models.items()}
    if any(n is None for n in mapping.values()):
        return None
    return mapping


@dataclass(frozen=True)
class RungComparison:
    rung: int  # 0-based, as the report's ladder
    published_epochs: int
    measured_epochs: int | None
    published_out: tuple[int, ...]  # our trial numbers
    measured_out: tuple[int, ...] | None  # None: rung not decided yet

    @property
    def decided(self) -> bool:
        return self.measured_out is not None

    @property
    def only_published(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.published_out) - set(self.measured_out or ())))

    @property
    def only_measured(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.measured_out or ()) - set(self.published_out)))

    @property
    def agree(self) -> bool | None:
        if not self.decided:
            return None
        return set(self.published_out) == set(self.measured_out)


@dataclass
class LadderComparison:
    halving: PublishedHalving
    trial_of_model: dict[int, int]
    rungs: list[RungComparison]
    published_winner: int  # our trial number of the published winner
    measured_winner: int | None
    winner_settled: bool = False  # our study is finished
    measured_rung_epochs: list[int] = field(default_factory=list)

    @property
    def model_of_trial(self) -> dict[int, int]:
        return {t: m for m, t in self.trial_of_model.items()}

    @property
    def same_epochs(self) -> bool:
        return self.measured_rung_epochs == self.halving.boundaries

    def published_fate(self, trial: int) -> str:
        """Where the publication's run left this configuration."""
        for r in self.rungs:
            if trial in r.published_out:
                return f"out at rung {r.rung}"
        return "the winner"

    def measured_fate(self, trial: int) -> str:
        """Where our study left (or has so far left) this configuration."""
        for r in self.rungs:
            if r.measured_out is not None and trial in r.measured_out:
                return f"out at rung {r.rung}"
        if trial == self.measured_winner:
            return "the winner" if self.winner_settled else "best so far"
        return "still in"


def compare_ladder(halving: PublishedHalving, trial_of_model: Mapping[int, int],
                   boundaries: list[int], measured_out: Mapping[int, list[int]],
                   measured_winner: int | None, finished: bool) -> LadderComparison:
    """The published eliminations beside ours, rung by rung.

    ``measured_out``: for each *decided* rung (0-based) of our study, the trials it
    pruned; rungs missing from it are not decided yet. ``boundaries``: our rung epochs.
    """
    rungs = []
    for k, elimination in enumerate(halving.eliminated):
        out = measured_out.get(k)
        rungs.append(RungComparison(
            rung=k, published_epochs=elimination.epochs,
            measured_epochs=boundaries[k] if k < len(boundaries) else None,
            published_out=tuple(sorted(trial_of_model[m] for m in elimination.models)),
            measured_out=tuple(sorted(out)) if out is not None else None))
    return LadderComparison(halving, dict(trial_of_model), rungs, trial_of_model[halving.winner],
                            measured_winner, finished, list(boundaries))
