"""Our results beside the published ones: studies/published.toml, `table`, the report, README.

Expected values are read from studies/published.toml with tomllib here, never through
hpo.readers.published, and the published model -> trial translation is worked out from the
grid order by hand, so the code under test cannot agree with itself by construction.
"""

from __future__ import annotations

import html
import io
import math
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from hpo.report import output as report
from hpo.readers.published import (COMPARED_COLUMNS, SCORE_COLUMNS, load_published, matching_rows,
                           published_from_mapping, rows_for_study)
from hpo.readers.published_table import with_published
from hpo.scheduling.spec import load_spec
from hpo.readers.stored_scores import store_export_scores
from hpo.readers.table import ATTR_METRICS, TEST_SCORE_COLUMNS
from hpo.service.optuna_link import store_finished_trial_attrs, trial_id
from model.config import ConfigError
from studyfiles import BLOG_GRID, cli, run_here
from test_report import build_study

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"
FIGURES = STUDIES / "published.toml"
RAW = tomllib.loads(FIGURES.read_text())
SCORES = ("accuracy", "plcc", "srcc")


def published_row(source: str, label: str) -> dict:
    """A row of the data file by its source and label (the halving winner included)."""
    if source == RAW["halving"]["source"]:
        assert label == f"halving winner, model {RAW['halving']['winner']['model']}"
        return RAW["halving"]["winner"]
    (row,) = [r for t in RAW["table"] if t["source"] == source for r in t["row"] if r["label"] == label]
    return row


def trial_of_model() -> dict[int, int]:
    """Published model -> our trial in a BLOG_GRID study: trial = 4 x lr index + batch index."""
    lrs, batches = BLOG_GRID["lr"], BLOG_GRID["batch_size"]
    return {m["number"]: 4 * lrs.index(m["lr"]) + batches.index(m["batch_size"])
            for m in RAW["halving"]["models"]}


# ---- the data file ------------------------------------------------------------------------
def test_the_data_file_loads_and_every_row_meets_its_studies():
    published = load_published(FIGURES)
    assert len(published.all_rows()) == sum(len(t["row"]) for t in RAW["table"]) + 1
    specs = {load_spec(p).name: load_spec(p) for p in STUDIES.glob("*.toml") if p != FIGURES}
    for table in published.tables:
        for name in table.studies:
            spec = specs[name]  # every study a table names is shipped
            for row in table.rows:  # ... and every row stands beside some configuration of it
                assert any(row in matching_rows([row], spec, p) for p in spec.grid_points()), \
                    (name, row.label)
    # The published halving grid is blog-grid.toml's; model 4 (lr 1e-3, batch 32) is our trial 1.
    blog = specs["blog-grid"]
    (winner,) = rows_for_study(published, "blog-grid")
    matched = [n for n, p in enumerate(blog.grid_points()) if matching_rows([winner], blog, p)]
    assert matched == [trial_of_model()[4]] == [1]
    assert rows_for_study(published, "variants-synthetic") == rows_for_study(published, "variants")
    assert rows_for_study(published, "demo") == []


@pytest.mark.parametrize("edit, key, expected", [
    (lambda r: r["table"][1]["row"][0].update(accuracy=76.6), "table[1].row[0].accuracy", "fraction"),
    (lambda r: r["table"][0]["row"][0]["match"].update(norm="GN"), "table[0].row[0].match.norm",
     "bn, gn, gn-all"),
    (lambda r: r["table"][0]["row"][0]["match"].update(lrate=1), "table[0].row[0].match.lrate", "unknown field"),
    (lambda r: r["table"][2]["row"][0].pop("srcc"), "table[2].row[0].srcc", "missing"),
    (lambda r: r["halving"]["eliminated"][1]["models"].append(4), "halving.eliminated[1].models",
     "expected 4 distinct models"),
    (lambda r: r["halving"]["eliminated"][2].update(epochs=4), "halving.eliminated[2].epochs", "expected 7"),
    (lambda r: r["halving"]["winner"].update(model=5), "halving.winner.model", "never eliminated"),
    (lambda r: r["halving"]["models"][3].update(number=7), "halving.models[3].number", "expected 3"),
])
def test_a_bad_data_file_names_file_and_key(edit, key, expected):
    raw = tomllib.loads(FIGURES.read_text())
    edit(raw)
    with pytest.raises(ConfigError) as err:
        published_from_mapping(raw, "figures.toml")
    assert err.value.key == key and expected in err.value.expected
    assert str(err.value).startswith(f"figures.toml: {key}: ") and "\n" not in str(err.value)


def test_table_with_a_bad_data_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "figures.toml"
    bad.write_text(FIGURES.read_text().replace("accuracy = 0.7634", "accuracy = 76.34"))
    done = cli("table", "--study", "variants", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
               env={"SAAN_HPO_PUBLISHED": str(bad)})
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert f"{bad}: halving.winner.accuracy: expected a fraction" in done.stderr
    assert not (tmp_path / "none.db").exists()  # failed before touching any storage


# ---- table: a tiny variants study on synthetic data ---------------------------------------------
# Which published row each configuration of the tiny grid stands beside (by the blog's names).
TINY_GRID = '"model.norm" = ["bn", "gn-all"]\n"trainer.loss" = ["mse", "huber"]\nbatch_size = [16]\n'
EXPECTED = {("bn", "mse"): None,
            ("bn", "huber"): ("blog Table 2", "all BN, Huber, batch 16"),
            ("gn-all", "mse"): ("blog Table 1", "GN only (both GN), batch 16"),
            ("gn-all", "huber"): ("blog Table 2", "all GN, Huber, batch 16")}


def _tiny_variants(tmp: Path, name: str) -> Path:
    text = (STUDIES / "variants.toml").read_text()
    text = re.sub(r"\[grid\]\n.*?\n\n", "[grid]\n" + TINY_GRID + "\n", text, count=1, flags=re.S)
    text = text.replace('name = "variants"', f'name = "{name}"', 1)
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def test_table_of_a_variants_study_prints_the_published_rows(tmp_path, monkeypatch, capsys):
    """The launch, the scoring ``table --format csv`` and ``export --evaluate`` run in this
    process (each process that imports torch costs seconds of start-up); the markdown ``table``,
    which only reads the stored scores, runs as the command does, in a process of its own."""
    monkeypatch.chdir(tmp_path)  # where the twin's relative data, storage and artifacts go
    study = _tiny_variants(tmp_path, "variants")
    done = run_here(capsys, "launch", study, "--data", "synthetic", "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    name = "variants-synthetic"
    storage = f"sqlite:///{tmp_path / 'runs' / name / 'study.db'}"
    done = run_here(capsys, "table", "--study", name, "--storage", storage, "--format", "csv")
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(io.StringIO(done.stdout), keep_default_na=False, na_values=[""])
    assert list(frame.columns) == ["trial", "norm", "loss", "batch_size", "state", "epochs",
                                   *TEST_SCORE_COLUMNS, "published", *SCORE_COLUMNS]
    assert len(frame) == 4 and list(frame["trial"]) == [0, 1, 2, 3]
    for _, row in frame.iterrows():
        expected = EXPECTED[(row["norm"], row["loss"])]
        if expected is None:
            assert pd.isna(row["published"]) and row[list(SCORE_COLUMNS)].isna().all()
            continue
        source, label = expected
        figures = published_row(source, label)
        assert row["published"].startswith(f"{source}: {label}")
        for score in SCORES:
            assert row[f"published_{score}"] == pytest.approx(figures[score], abs=1e-9)
            assert row[f"diff_{score}"] == pytest.approx(row[score] - figures[score], abs=2e-6)

    done = cli("table", "--study", name, "--storage", storage, cwd=tmp_path)  # markdown
    assert done.returncode == 0, done.stderr[-3000:]
    header, _, *lines = done.stdout.splitlines()
    assert all(c in header for c in COMPARED_COLUMNS) and len(lines) == 4
    gn_all_mse = next(line for line in lines if "gn-all" in line and " mse " in line)
    figures = published_row(*EXPECTED[("gn-all", "mse")])
    assert all(f" {figures[s]:.4f} " in gn_all_mse for s in SCORES)
    diff = frame[(frame["norm"] == "gn-all") & (frame["loss"] == "mse")]["diff_srcc"].iloc[0]
    assert f" {diff:+.4f} " in gn_all_mse

    # export --evaluate keeps its test scores on the winner's trial (the report reads them).
    done = run_here(capsys, "export", "--study", name, "--storage", storage, "-o", tmp_path / "best.toml",
                    "--evaluate")
    assert done.returncode == 0, done.stderr[-3000:]
    printed = dict(re.findall(r"(\w+) (-?\d+\.\d{4})", done.stdout.split("test: ", 1)[1].splitlines()[0]))
    import optuna

    stored = optuna.load_study(study_name=name, storage=storage).best_trial.user_attrs
    assert {k: f"{v:.4f}" for k, v in stored["export_test_metrics"].items() if k in printed} == printed
    assert set(SCORES) <= set(printed)

    # The same study under a name no published table lists prints as before.
    spec = load_spec(study)
    other = SimpleNamespace(name="my-variants", grid=spec.grid, run=spec.run)
    assert with_published(frame, other, load_published(FIGURES)) is frame


def test_ablation_rows_with_two_published_counterparts_are_listed_once_each():
    published = load_published(FIGURES)
    spec = load_spec(STUDIES / "ablation.toml")
    measured = {"accuracy": 0.75, "constant_accuracy": 0.7, "plcc": 0.3, "srcc": 0.35, "mse": 0.5}
    frame = pd.DataFrame([{"trial": n, "branches": p["model.branches"], "state": "complete",
                           "epochs": 44, **measured} for n, p in enumerate(spec.grid_points())])
    out = with_published(frame, spec, published)
    labels = {(r["branches"], r["published"]) for _, r in out.iterrows()}
    assert labels == {("both", "blog Table 4: SAAN (paper)"),
                      ("no_style", "blog Table 4: paper, without style-specific branch"),
                      ("no_style", "blog Table 4: retested, without style-specific branch"),
                      ("no_generic", "blog Table 4: paper, without generic branch"),
                      ("no_generic", "blog Table 4: retested, without generic branch")}
    for _, r in out.iterrows():
        figures = published_row("blog Table 4", r["published"].split(": ", 1)[1])
        assert r["diff_plcc"] == pytest.approx(0.3 - figures["plcc"])


# ---- the report: the published ladder beside ours ----------------------------------------------
def _text(cell: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", cell))


def _pairs(cell: str) -> list[int]:
    """Trial numbers named in a cell, each checked against its published model number."""
    pairs = [(int(t), int(m)) for t, m in re.findall(r"trial (\d+) = model (\d+)", _text(cell))]
    translate = trial_of_model()
    assert all(translate[m] == t for t, m in pairs), pairs
    return [t for t, _ in pairs]


def ladder_rows(page: str) -> dict[int, dict[str, str]]:
    body = page.split('<table id="published-ladder"', 1)[1].split("</table>", 1)[0]
    rows = {}
    for rung, cells in re.findall(r'<tr data-rung="(\d+)">(.*?)</tr>', body, flags=re.S):
        rows[int(rung)] = dict(re.findall(r'<td class="([a-z-]+)">(.*?)</td>', cells, flags=re.S))
    return rows


def winner_rows(page: str) -> dict[str, list[str]]:
    body = page.split('<table id="published-winner"', 1)[1].split("</table>", 1)[0]
    return {cls: [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, flags=re.S)]
            for cls, cells in re.findall(r'<tr class="([a-z-]+)">(.*?)</tr>', body, flags=re.S)}


def published_out() -> dict[int, list[int]]:
    translate = trial_of_model()
    return {k: sorted(translate[m] for m in step["models"])
            for k, step in enumerate(RAW["halving"]["eliminated"])}


def test_report_shows_the_published_ladder_beside_a_study_that_reproduces_it(tmp_path):
    # Curves that rank the configurations as the publication's run did: the models it
    # eliminated after iteration k score 0.1 k (+ a little by trial), its winner 0.9.
    translate = trial_of_model()
    rank = {translate[RAW["halving"]["winner"]["model"]]: 9}
    for k, step in enumerate(RAW["halving"]["eliminated"], start=1):
        rank.update({translate[m]: k for m in step["models"]})
    table = [[round(0.1 * rank[t] + 0.001 * t, 4)] * 31 for t in range(16)]
    storage, spec, _ = build_study(tmp_path, curves=table, workers=1)
    page, data, _ = report.render("blog", storage)
    assert '<section id="section-published">' in page and 'href="#section-published"' in page
    rows = ladder_rows(page)
    assert sorted(rows) == [0, 1, 2, 3]
    for k, expected in published_out().items():
        assert _pairs(rows[k]["published-out"]) == expected
        assert _pairs(rows[k]["measured-out"]) == expected
        assert _text(rows[k]["verdict"]) == "same"
    winners = winner_rows(page)
    assert _pairs(winners["published-winner"][0]) == _pairs(winners["our-winner"][0]) == [1]
    figures = RAW["halving"]["winner"]
    assert winners["published-winner"][1:] == [str(figures["epochs"])] + [f"{figures[s]:.4f}" for s in SCORES]
    assert "not scored on the test split yet" in winners["our-winner"][2]
    assert "Winners: the same configuration." in page

    # Once `table` has stored the winner's test scores, they stand beside the published ones.
    import optuna

    best = optuna.load_study(study_name="blog", storage=storage).best_trial
    ours = {"accuracy": 0.7512, "constant_accuracy": 0.76, "plcc": 0.4021, "srcc": 0.3987, "mse": 0.61}
    rdb = optuna.storages.RDBStorage(storage)
    store_finished_trial_attrs(rdb, trial_id(rdb, "blog", best.number), {ATTR_METRICS: ours})
    winners = winner_rows(report.render("blog", storage)[0])
    assert winners["our-winner"][2:5] == [f"{ours[s]:.4f}" for s in SCORES]
    assert "saan-hpo table" in winners["our-winner"][5]
    assert winners["difference"][2:] == [f"{ours[s] - figures[s]:+.4f}" for s in SCORES]


def test_report_names_where_the_measured_ladder_disagrees(tmp_path):
    storage, spec, _ = build_study(tmp_path, workers=2)  # random curves (seed 5)
    from studyfiles import stored_rungs

    measured = {k: sorted(set(compared) - set(kept))
                for k, (_, compared, kept) in enumerate(stored_rungs(storage, "blog"))}
    page, data, _ = report.render("blog", storage)
    rows = ladder_rows(page)
    disagreements = 0
    for k, expected in published_out().items():
        assert _pairs(rows[k]["published-out"]) == expected
        assert _pairs(rows[k]["measured-out"]) == measured[k]
        verdict = _text(rows[k]["verdict"])
        if expected == measured[k]:
            assert verdict == "same"
            continue
        disagreements += 1
        only_published, only_ours = verdict.removeprefix("differ: only published ").split("; only ours ")
        assert sorted(_pairs(only_published)) == sorted(set(expected) - set(measured[k]))
        assert sorted(_pairs(only_ours)) == sorted(set(measured[k]) - set(expected))
    assert disagreements  # these curves do not reproduce the published run

    # export --evaluate's scores are shown when table has not scored the winner.
    winner = data.winner.number
    ours = {"accuracy": 0.7, "plcc": 0.3, "srcc": 0.35}
    store_export_scores(storage, "blog", winner, ours)
    winners = winner_rows(report.render("blog", storage)[0])
    assert _pairs(winners["our-winner"][0]) == [winner]
    assert winners["our-winner"][2:5] == [f"{ours[s]:.4f}" for s in SCORES]
    assert "export --evaluate" in winners["our-winner"][5]


def test_report_of_another_grid_has_no_published_section(tmp_path):
    build_study(tmp_path, rungs=2, grid={"lr": [1e-3, 1e-4], "batch_size": [64, 32]}, workers=1)
    page, data, _ = report.render("blog", f"sqlite:///{tmp_path / 'study.db'}")
    assert data.published is None and "section-published" not in page


# ---- README ---------------------------------------------------------------------------------
def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Reproducing the published results")
    return text[start:text.index("\n## ", start + 3)]


def markdown_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append([current[0]] + current[2:])  # header, then rows (rule dropped)
            current = []
    return tables


def _percent(cell: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?) %", cell)
    assert match, cell
    return float(match.group(1)) / 100


def test_every_number_readme_quotes_comes_from_the_data_file():
    section = readme_section()
    tables = markdown_tables(section)
    (figures,) = [t for t in tables if t[0][:5] == ["source", "published row", "accuracy", "PLCC", "SRCC"]]
    quoted = set()
    for source, label, accuracy, plcc, srcc, *_ in figures[1:]:
        row = published_row(source, label)
        assert _percent(accuracy) == pytest.approx(row["accuracy"], abs=1e-9), label
        assert float(plcc) == pytest.approx(row["plcc"], abs=1e-9) and float(srcc) == pytest.approx(row["srcc"], abs=1e-9)
        quoted.add((source, label))
    every = {(t["source"], r["label"]) for t in RAW["table"] for r in t["row"]}
    every.add((RAW["halving"]["source"], f"halving winner, model {RAW['halving']['winner']['model']}"))
    assert quoted == every and len(figures) - 1 == len(every)  # each row quoted once

    (ladder,) = [t for t in tables if t[0][0] == "iteration"]
    blog = load_spec(STUDIES / "blog-grid.toml").grid_points()
    for (iteration, epochs, models, trials), step in zip(ladder[1:], RAW["halving"]["eliminated"], strict=True):
        assert (int(iteration), int(epochs)) == (step["iteration"], step["epochs"])
        assert [int(m) for m in models.split(", ")] == step["models"]
        ours = [n for n, p in enumerate(blog) for m in RAW["halving"]["models"]
                if m["number"] in step["models"] and (p["lr"], p["batch_size"]) == (m["lr"], m["batch_size"])]
        assert sorted(int(t) for t in trials.split(", ")) == sorted(ours)

    # Outside the tables: any percentage or three-decimal correlation is one of the file's.
    values = {round(v, 6) for t in RAW["table"] for r in t["row"] for v in (r[s] for s in SCORES)}
    values |= {round(RAW["halving"]["winner"][s], 6) for s in SCORES}
    prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
    for number in re.findall(r"(\d+(?:\.\d+)?) ?%", prose):
        assert round(float(number) / 100, 6) in values, number
    for number in re.findall(r"(?<![\d.])0\.\d{3}(?!\d)", prose):
        assert round(float(number), 6) in values, number
    assert "none are quoted" not in section and "not yet measured" in section


# ---- Huber ----------------------------------------------------------------------------------
def test_huber_threshold_defaults_to_1_and_is_an_axis_of_its_own_study():
    from model.train import Trainer

    variants = load_spec(STUDIES / "variants.toml")
    delta = load_spec(STUDIES / "variants-huber-delta.toml")
    assert variants.run.trainer.huber_delta == 1.0 and "trainer.huber_delta" not in variants.grid
    assert delta.grid["trainer.huber_delta"] == [1.0, 0.1] and delta.run.trainer.loss == "huber"
    assert {k: v for k, v in delta.grid.items() if k != "trainer.huber_delta"} == \
        {k: v for k, v in variants.grid.items() if k != "trainer.loss"}
    # The threshold reaches the loss: errors of 0.5 are quadratic under 1.0, linear under 0.1.
    pred, target = torch.zeros(4), torch.full((4,), 0.5)
    for point in delta.grid_points()[:2]:
        cfg = delta.run_config(point)
        loss = Trainer._loss(SimpleNamespace(cfg=cfg), pred, target).item()
        d = cfg.trainer.huber_delta
        assert loss == pytest.approx(0.5 * 0.25 if d >= 0.5 else d * (0.5 - d / 2))
    assert not math.isclose(*(Trainer._loss(SimpleNamespace(cfg=delta.run_config(p)), pred, target).item()
                              for p in delta.grid_points()[:2]))
