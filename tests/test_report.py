"""``saan-hpo report``: the HTML report of a running or finished study, checked against the data.

Studies are built from replayed curves by the real worker (in-process threads, or the
``worker`` command), the report is parsed back (plotly's figure JSON, the header, the
metrics table) and opened in headless Chromium over the DevTools protocol (a pipe: no
extra package) to catch JavaScript errors and dialogs and to take a screenshot.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import random
import re
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest

from hpo.readers.results import best_trial
from hpo.report import output, png
from hpo.report.collect import collect
from hpo.scheduling.spec import load_spec
from hpo.service.learning_curves import LearningCurves
from hpo.service.study import open_or_create
from hpo.service.trial_runs import ReplayRun
from hpo.service.worker import Worker
from studyfiles import ClaimLimitedWorker, cli, run_claims, stored_rungs, write_curves, write_study

XSS_NAME = "<img src=x onerror=alert(1)>"  # one path component: a study name may be this


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---- building studies -----------------------------------------------------------------------
class MetricsReplay(ReplayRun):
    """A replay that reports every metric the trainer does, derived from the curve's value."""

    def fit(self, until_epoch, on_epoch_end=None, should_abort=None):
        def all_metrics(epoch, metrics):
            v = metrics[self.metric]
            full = {"srcc": v, "plcc": 0.9 * v, "accuracy": 0.5 + v / 4, "mse": 1.0 - v}
            return on_epoch_end(epoch, full) if on_epoch_end else None

        return super().fit(until_epoch, all_metrics, should_abort=should_abort)


def curves_table(seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    slopes = [rng.uniform(0.005, 0.03) for _ in range(16)]
    return [[round(min(1.0, s * e + rng.uniform(0, 0.05)), 4) for e in range(1, 32)] for s in slopes]


def saturating_curves_table() -> list[list[float]]:
    """Curves shaped like the demo's before it moved to lower learning rates: the first eight
    (rung 0's survivors) start at 0.77-0.88 and level off at 0.95-0.96 within 0.01 of each
    other; the other eight wander between -0.20 and 0.42."""
    rng = random.Random(7)
    table = []
    for i in range(8):
        start, plateau = 0.77 + 0.016 * i, 0.95 + 0.0015 * i
        table.append([round(start + (plateau - start) * (1 - math.exp(-(e - 1) / 2.5))
                            + rng.uniform(-0.004, 0.004), 4) for e in range(1, 32)])
    for i in range(8):
        table.append([round(-0.17 + 0.08 * i + 0.03 * math.sin(e + i), 4) for e in range(1, 32)])
    return table


def build_study(tmp: Path, name: str = "blog", kind: str = "sync-halving", workers: int = 2,
                max_trials: int | None = None, seed: int = 5, storage_url: str | None = None,
                curves: list[list[float]] | None = None, **study_args):
    """A study (on a temp SQLite file by default), run by ``workers`` in-process worker threads;
    ``curves`` replaces the random learning curves of ``seed``."""
    storage = storage_url or f"sqlite:///{tmp / 'study.db'}"
    spec = load_spec(write_study(tmp / "study.toml", name=name, kind=kind, storage=storage,
                                 **study_args))
    table = curves or curves_table(seed)
    curves = LearningCurves.load(write_curves(tmp / "curves.csv", table, study_args.get("grid")), spec)
    open_or_create(spec, storage)

    errors = []

    def work():
        try:
            make_run = lambda p: MetricsReplay(curves, p, spec.metric, 0.002)  # noqa: E731
            if max_trials is None:
                worker = Worker.attach(spec, storage, make_run, poll_seconds=0.01)
            else:
                worker = ClaimLimitedWorker.attach(spec, storage, make_run, poll_seconds=0.01,
                                                   claims=max_trials)
            worker.run()
            worker.close()
        except Exception as err:  # noqa: BLE001 -- surfaced below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors  # e.g. two workers finalizing the same trial at once
    if max_trials is None:
        assert collect(name, storage).finished
    return storage, spec, table


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="module")
def saturating(tmp_path_factory):
    """Rung-0 losers far below the survivors, whose values then crowd together."""
    return build_study(tmp_path_factory.mktemp("saturating"), curves=saturating_curves_table())


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """Half done: a worker that stops after 3 claims."""
    tmp = tmp_path_factory.mktemp("running")
    storage = f"sqlite:///{tmp / 'study.db'}"
    study = write_study(tmp / "study.toml", storage=storage)
    run_claims(study, write_curves(tmp / "curves.csv", curves_table(5)), claims=3)
    return storage, load_spec(study)


@pytest.fixture(scope="module")
def xss(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xss")
    storage, _, _ = build_study(tmp, name=XSS_NAME, workers=1)
    return storage


# ---- reading a report back ------------------------------------------------------------------
def figure_json(page: str, div_id: str) -> dict:
    """The data and layout plotly was given for one div: ``Plotly.newPlot("id", data, layout, ...)``."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert match, f"no figure {div_id}"
    decoder = json.JSONDecoder()
    data, pos = decoder.raw_decode(page, match.end())
    pos = re.compile(r",\s*").match(page, pos).end()
    layout, _ = decoder.raw_decode(page, pos)
    return {"data": data, "layout": layout}


def table_rows(page: str) -> dict[int, list[str]]:
    body = page.split('<table id="metrics-table">', 1)[1].split("</table>", 1)[0]
    rows = {}
    for number, cells in re.findall(r'<tr data-trial="(\d+)"[^>]*>(.*?)</tr>', body):
        rows[int(number)] = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells)]
    return rows


def export_winner(storage: str, name: str, tmp: Path) -> int:
    done = cli("export", "--study", name, "--storage", storage, "-o", str(tmp / "best.toml"))
    assert done.returncode == 0, done.stderr
    return int(re.search(r": trial (\d+) ", done.stdout).group(1))


def trial_traces(page: str) -> list[dict]:
    """The survivor figure's one trace per trial (not the overlay of pruned trials' last points)."""
    return [tr for tr in figure_json(page, "survivor-curves")["data"] if "trial" in tr["meta"]]


def check_curves(page: str, storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """One survivor-curve trace per trial that reported, its points exactly Optuna's values."""
    trials = optuna.load_study(study_name=name, storage=storage).trials
    reported = {t.number: t for t in trials if t.intermediate_values}
    traces = trial_traces(page)
    assert len(traces) == len(reported)
    for trace in traces:
        t = reported[trace["meta"]["trial"]]
        assert trace["x"] == sorted(t.intermediate_values)
        assert trace["y"] == [t.intermediate_values[e] for e in trace["x"]]
        end = trace["marker"]["symbol"][-1]
        if t.state == optuna.trial.TrialState.PRUNED:
            assert end == "x", (t.number, end)  # ends where it was pruned: its last report
    # ... and every pruned trial's last point again, drawn above all lines (never hidden).
    pruned = {t.number: t for t in trials if t.state == optuna.trial.TrialState.PRUNED}
    overlay = [tr for tr in figure_json(page, "survivor-curves")["data"] if "pruned_ends" in tr["meta"]]
    if pruned:
        assert len(overlay) == 1
        ends = overlay[0]
        assert figure_json(page, "survivor-curves")["data"][-1]["meta"] == ends["meta"]  # on top
        assert sorted(ends["meta"]["pruned_ends"]) == sorted(pruned)
        for n, x, y in zip(ends["meta"]["pruned_ends"], ends["x"], ends["y"]):
            last = max(pruned[n].intermediate_values)
            assert (x, y) == (last, pruned[n].intermediate_values[last])
        assert ends["marker"]["symbol"] == "x" and ends["marker"]["size"] >= 12
    else:
        assert overlay == []
    return trials


# ---- the finished study ---------------------------------------------------------------------
def test_finished_report_shows_the_study_as_stored(finished, tmp_path):
    storage, spec, table = finished
    out = tmp_path / "r.html"
    done = cli("report", "--study", "blog", "--storage", storage, "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    trials = check_curves(page, storage, "blog")
    winner = export_winner(storage, "blog", tmp_path)

    # Pruned trials end at the rung where the stored decision pruned them.
    rungs = stored_rungs(storage, "blog")
    assert [r[0] for r in rungs] == spec.boundaries == [1, 3, 7, 15, 31]
    pruned_at = {n: epoch for epoch, compared, kept in rungs for n in compared if n not in kept}
    traces = {tr["meta"]["trial"]: tr for tr in trial_traces(page)}
    assert len(traces) == 16
    for number, epoch in pruned_at.items():
        assert traces[number]["x"][-1] == epoch
        assert traces[number]["y"][-1] == table[number][epoch - 1]
    assert len(pruned_at) == 15 and winner not in pruned_at

    # The winner: Optuna's best trial, the one export names, highlighted and in the header.
    assert traces[winner]["meta"]["winner"] and traces[winner]["marker"]["symbol"][-1] == "star"
    assert traces[winner]["line"]["width"] > max(t["line"]["width"] for n, t in traces.items() if n != winner)
    assert f'<div id="winner" data-trial="{winner}">' in page
    assert "Winner: trial" in page and "finished" in page
    # Rung boundaries drawn where the spec puts them.
    lines = [s["x0"] for s in figure_json(page, "survivor-curves")["layout"]["shapes"]]
    assert lines == spec.boundaries

    # Rung ladder: every stored decision, its values and who went on.
    ladder = figure_json(page, "rung-ladder")["data"]
    marks = {(k, int(label[1:])): tr["name"] for tr in ladder if tr.get("mode") == "markers+text"
             for k, x, label in zip(tr["meta"]["rungs"], tr["x"], tr["text"]) if abs(x - k) < 0.5}
    expected = {(k, n): ("finished" if k == 4 else "survived") if n in kept else "pruned"
                for k, (_, compared, kept) in enumerate(rungs) for n in compared}
    assert marks == expected

    # Grid map: rung reached and last value per configuration.
    heat = figure_json(page, "grid-map")["data"][0]
    reached = {n: sum(e <= max(t.intermediate_values) for e in spec.boundaries) - 1
               for n, t in enumerate(trials)}
    # Columns: the first axis (lr), rows: the second (batch size); trial n is grid point n.
    assert [[heat["z"][j][i] for i in range(4)] for j in range(4)] == \
        [[reached[4 * i + j] for i in range(4)] for j in range(4)]
    assert all(f"#{n}<br>" in heat["text"][n % 4][n // 4] for n in range(16))

    # Budget: all 80 epochs, against the plan, on an axis that runs to the plan (not to
    # the full grid's 496, which would flatten it); both workers in the timeline.
    budget = figure_json(page, "budget")
    assert budget["data"][0]["y"][-1] == 80 == spec.planned_epochs()
    assert {s["y0"] for s in budget["layout"]["shapes"]} == {80}
    assert 80 < budget["layout"]["yaxis"]["range"][1] < 100 and "496" in budget["layout"]["title"]["text"]
    bars = figure_json(page, "worker-timeline")["data"][0]
    assert len(set(bars["y"])) >= 2  # (a worker that re-attached shows as another row)
    assert sum(int(t.split("e")[1].split("-")[-1]) - int(t.split("e")[1].split("-")[0]) + 1
               for t in bars["text"]) == 80

    # Metrics table: every trial, params, state, epochs and last scores from the trial.
    rows = table_rows(page)
    assert sorted(rows) == list(range(16))
    for t in trials:
        last = t.user_attrs["last_metrics"]
        row = rows[t.number]
        assert row[3] == t.state.name.lower() and int(row[4]) == max(t.intermediate_values)
        assert [float(c) for c in row[7:11]] == pytest.approx(
            [last["accuracy"], last["plcc"], last["srcc"], last["mse"]], abs=1e-4)
    assert "sqlite:///" in page and str(storage).split("///")[1] in page


def test_16_trial_report_renders_fast_and_small(finished, tmp_path):
    storage, _, _ = finished
    started = time.perf_counter()
    page, data, _ = output.render("blog", storage)
    seconds = time.perf_counter() - started
    size = len(page.encode())
    print(f"\nreport of 16 trials / 5 rungs: {seconds:.2f}s, {size / 1e6:.2f} MB")
    assert len(data.trials) == 16 and size < 10_000_000
    assert page.count("Plotly.newPlot(") == 6
    assert page.count("Copyright (c)") <= 2 and "cdn.plot.ly" not in page.split("</script>")[-1]


def test_on_postgresql_with_the_password_masked(pg_url, tmp_path):
    from sqlalchemy import make_url

    password = make_url(pg_url).password
    assert password, "the test server's URL carries a password"
    grid = {"lr": [1e-3, 1e-4], "batch_size": [64, 32]}
    build_study(tmp_path, rungs=2, grid=grid, storage_url=pg_url)
    page, data, _ = output.render("blog", pg_url)
    check_curves(page, pg_url, "blog")
    assert data.finished and data.winner is not None and len(data.epochs) == 4 + 2 * 2
    assert password not in page and "***" in page


# ---- a running study ---------------------------------------------------------------------------
def test_running_study_is_reported_as_a_snapshot(running, tmp_path):
    storage, spec = running
    out = tmp_path / "running.html"
    done = cli("report", "--study", "blog", "--storage", storage, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "running (snapshot)" in done.stdout
    page = out.read_text()
    trials = check_curves(page, storage, "blog")
    reported = [t for t in trials if t.intermediate_values]
    assert len(reported) == 3 and all(max(t.intermediate_values) == 1 for t in reported)
    assert '<div id="winner" data-trial="">' in page and "no trial has completed yet" in page
    ladder = figure_json(page, "rung-ladder")["data"]
    assert [tr["name"] for tr in ladder] == ["pending"] and len(ladder[0]["x"]) == 3
    rows = table_rows(page)
    assert len(rows) == 16 and sum(r[3] == "paused" for r in rows.values()) == 3
    assert sum(r[3] == "waiting" for r in rows.values()) == 13
    assert 'class="state running"' in page


# ---- every scheduler kind --------------------------------------------------------------------
@pytest.mark.parametrize("kind, schedule, max_trials", [
    ("asha", "geometric", None), ("hyperband", "geometric", None), ("none", "cumulative", None),
    ("asha", "geometric", 4)])
def test_every_scheduler_kind(tmp_path, kind, schedule, max_trials):
    extra = "epochs = 6" if kind == "none" else ""
    storage, spec, _ = build_study(tmp_path, kind=kind, schedule=schedule, extra=extra,
                                   max_trials=max_trials, workers=1)
    page, data, figures = output.render("blog", storage)
    trials = check_curves(page, storage, "blog")
    best = best_trial("blog", storage)
    if max_trials is None:
        assert data.finished and best is not None
        assert data.winner.number == best.number
        assert f'data-trial="{best.number}">' in page
    else:
        assert not data.finished
        assert sum(bool(t.intermediate_values) for t in trials) == 4
    # The ladder's final rung holds exactly the trials that reached the last boundary.
    final = [r for r in data.rungs if r.epoch == spec.final_epoch]
    full = sorted(t.number for t in trials if spec.final_epoch in t.intermediate_values)
    assert sorted(e.trial for r in final for e in r.entries) == full
    assert set(figures) == {"survivor-curves", "rung-ladder", "rung-margins", "grid-map", "budget",
                            "worker-timeline"}


# ---- the command ---------------------------------------------------------------------------
def test_default_output_open_and_unknown_study(finished, tmp_path, monkeypatch):
    storage, _, _ = finished
    import webbrowser
    from hpo.cli import main

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--study", "blog", "--storage", storage, "--open"]) == 0
    out = tmp_path / "reports" / "blog.html"
    assert out.exists() and opened == [out.resolve().as_uri()]
    done = cli("report", "--study", "nope", "--storage", storage, cwd=tmp_path)
    assert done.returncode == 2 and "'nope': not found" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_to_dashboard_stores_the_survivor_curves(finished, tmp_path):
    storage, _, _ = finished
    done = cli("report", "--study", "blog", "--storage", storage, "-o", str(tmp_path / "r.html"),
               "--to-dashboard")
    assert done.returncode == 0, done.stderr
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    study = optuna.load_study(study_name="blog", storage=storage)
    graphs = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert set(graphs) == set(output.DASHBOARD_GRAPHS)
    curves = json.loads(graphs[output.DASHBOARD_GRAPH_ID])
    assert len([tr for tr in curves["data"] if "trial" in tr["meta"]]) == 16
    timeline = json.loads(graphs["saan-worker-timeline"])
    assert timeline["data"][0]["type"] == "bar"
    # optuna-dashboard draws each into a 450 px box as wide as half its page: a fixed
    # height under 450 with room for title and x axis, no fixed width, no wide legend.
    for figure in (curves, timeline):
        layout = figure["layout"]
        assert layout["height"] <= 450 and "width" not in layout and layout["showlegend"] is False
        assert layout["margin"]["t"] >= 50 and layout["margin"]["b"] >= 40
        assert len(layout["title"]["text"]) <= 60


def test_survivor_axis_follows_the_survivors_of_rung_0(saturating, tmp_path):
    """Rung-0 losers score down to -0.20; the survivors sit in 0.77..0.96."""
    storage, spec, table = saturating
    page, _, _ = output.render("blog", storage)
    figure = figure_json(page, "survivor-curves")
    trials = optuna.load_study(study_name="blog", storage=storage).trials
    epoch, compared, kept = stored_rungs(storage, "blog")[0]
    survivors = [v for t in trials if t.number in kept for v in t.intermediate_values.values()]
    everyone = [v for t in trials for v in t.intermediate_values.values()]
    assert len(kept) == 8 and min(everyone) < 0 < 0.7 < min(survivors)
    low, high = figure["layout"]["yaxis"]["range"]
    assert low <= min(survivors) and high >= max(survivors)  # every survivor value is on the axis
    assert (high - low) < 0.5 * (max(everyone) - min(everyone))  # ... and they fill it
    assert low > min(everyone)  # rung-0 losers below it: one click away
    (menu,) = figure["layout"]["updatemenus"]
    ranges = {b["label"]: b["args"][0]["yaxis.range"] for b in menu["buttons"]}
    assert ranges["survivors of rung 0"] == [low, high]
    full_low, full_high = ranges["all trials"]
    assert full_low <= min(everyone) and full_high >= max(everyone)


def test_rung_decisions_show_the_values_compared_and_the_cut(saturating):
    storage, spec, _ = saturating
    page, _, _ = output.render("blog", storage)
    figure = figure_json(page, "rung-margins")
    panels = {tr["meta"]["rung"]: tr for tr in figure["data"]}
    cuts = sorted(shape["y0"] for shape in figure["layout"]["shapes"])
    titles = [a["text"] for a in figure["layout"]["annotations"]]
    rungs = stored_rungs(storage, "blog")
    assert sorted(panels) == list(range(len(rungs)))
    expected_cuts = []
    for k, (epoch, compared, kept) in enumerate(rungs):
        panel = panels[k]
        values = dict(zip(panel["meta"]["trials"], panel["meta"]["values"]))
        trials = panel["meta"]["trials"]
        assert sorted(trials) == sorted(compared) and panel["meta"]["kept"] == len(kept)
        assert trials[:len(kept)] == kept  # went on, best first (as stored), above the cut
        shown = [values[n] for n in trials]
        assert shown[:len(kept)] == sorted(shown[:len(kept)], reverse=True)
        assert shown[len(kept):] == sorted(shown[len(kept):], reverse=True)
        if len(kept) < len(compared):
            expected_cuts.append(len(kept) - 0.5)
            margin = values[kept[-1]] - max(values[n] for n in compared if n not in kept)
            assert margin >= 0 and f"margin {margin:.4f}" in titles[k]
            assert f"epoch {epoch}" in titles[k]
    assert cuts == sorted(expected_cuts) and len(cuts) == 4  # every rung but the last cut someone


def test_ladder_labels_do_not_collide(saturating):
    from hpo.report.collect import collect
    from hpo.report.figures import LABEL_PX, LADDER_PLOT_PX, dodge, ladder_positions

    assert dodge([0.5, 0.5, 0.5, 0.9], gap=0.1) == [0, 1, -1, 0]
    storage, _, _ = saturating
    data = collect("blog", storage)
    at = ladder_positions(data)
    values = [e.value for view in data.rungs for e in view.entries]
    gap = (max(values) - min(values)) * LABEL_PX / LADDER_PLOT_PX  # one label's height, in values
    points = [(at[(view.rung, e.trial)], e.value, view.rung) for view in data.rungs for e in view.entries]
    crowded = 0
    for i, (x1, y1, k1) in enumerate(points):
        assert abs(x1 - k1) < 0.5  # a nudged point stays in its rung's column
        for x2, y2, _ in points[i + 1:]:
            if abs(y1 - y2) < gap:
                crowded += 1
                assert abs(x1 - x2) >= 0.1, (x1, y1, x2, y2)  # side by side, not on top
    assert crowded > 10  # rungs 1-3 sit within 0.01 of each other


def test_timeline_never_draws_a_pause_at_a_rung_as_training(saturating):
    storage, spec, _ = saturating
    page, data, _ = output.render("blog", storage)
    bars = figure_json(page, "worker-timeline")["data"][0]
    spans = [tuple(int(e) for e in text.split(" e")[1].split("-")) for text in bars["text"]]
    assert sum(span[-1] - span[0] + 1 for span in spans) == 80
    for span in spans:
        assert not any(span[0] <= b < span[-1] for b in spec.boundaries), span


def test_png_without_a_browser_is_one_clear_error(finished, tmp_path):
    storage, _, _ = finished
    done = cli("report", "--study", "blog", "--storage", storage, "-o", str(tmp_path / "r.html"),
               "--png", str(tmp_path / "png"), env={"BROWSER_PATH": str(tmp_path / "no-chrome")})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no Chrome/Chromium found" in done.stderr
    assert not (tmp_path / "png").exists() and not (tmp_path / "r.html").exists()


def chromium_or_fail() -> str:
    found = png.find_browser()
    if found is None:
        if in_ci():
            pytest.fail("CI=true but no chromium: .ci/run installs it", pytrace=False)
        pytest.skip("no chromium (apt-get install chromium)")
    return found


def test_png_export_writes_each_figure(finished, tmp_path):
    chromium_or_fail()
    storage, _, _ = finished
    done = cli("report", "--study", "blog", "--storage", storage, "-o", str(tmp_path / "r.html"),
               "--png", str(tmp_path / "png"), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == sorted(f"{f}.png" for f in ("survivor-curves", "rung-ladder", "rung-margins",
                                                "grid-map", "budget", "worker-timeline"))
    assert all((tmp_path / "png" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


# ---- in the browser -------------------------------------------------------------------------
class DevTools:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (CDP messages end in NUL)."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--remote-debugging-pipe")

    def __init__(self, executable: str, profile: Path, log: Path):
        to_read, self._to = os.pipe()
        self._from, from_write = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        command = ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', executable,
                   *self.FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(command, stdin=to_read, stdout=from_write, stderr=self._log)
        os.close(to_read)
        os.close(from_write)
        self._buffer, self._next_id = b"", 0
        self.replies: dict[int, dict] = {}
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda: self.replies.pop(message["id"], None), timeout, method)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        return self._wait(lambda: next((e for e in self.events if e["method"] == method), None),
                          timeout, method)

    def _wait(self, found, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while (result := found()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium: no {what} within {timeout}s")
            ready, _, _ = select.select([self._from], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
            *messages, self._buffer = self._buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self.replies[message["id"]] = message
                    continue
                self.events.append(message)
                if message.get("method") == "Page.javascriptDialogOpening":  # never block on alert()
                    self._next_id += 1
                    os.write(self._to, json.dumps({
                        "id": self._next_id, "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True}, "sessionId": message.get("sessionId")}).encode() + b"\0")
        return result

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to)
        os.close(self._from)
        self._log.close()


def open_page(browser: DevTools, path: Path, shot: Path | None = None) -> dict:
    """Load a report; its console errors, exceptions, dialogs, DOM facts and a screenshot."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    first_event = len(browser.events)
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000,
                                                        "deviceScaleFactor": 1, "mobile": False}, session)
    browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session)
    browser.wait_event("Page.loadEventFired")

    def evaluate(expression: str):
        return browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                 "awaitPromise": True}, session)["result"].get("value")

    deadline = time.monotonic() + 30
    drawn = ("Array.from(document.querySelectorAll('.plotly-graph-div'))"
             ".filter(g => g._fullLayout && g.querySelector('.main-svg')).length")
    while evaluate(drawn) < 6:
        assert time.monotonic() < deadline, "plotly did not draw six figures"
        time.sleep(0.1)
    facts = evaluate("""JSON.stringify({
        title: document.title, h1: document.getElementById('study-name').textContent,
        figures: Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => [g.id, g.data.length]),
        curves: document.querySelectorAll('#survivor-curves .scatterlayer .trace').length,
        rows: document.querySelectorAll('#metrics-table tbody tr').length,
        scripts: document.scripts.length,
        yrange: document.getElementById('survivor-curves')._fullLayout.yaxis.range,
        plot_px: document.getElementById('survivor-curves')._fullLayout._size.h,
        buttons: Array.from(document.querySelectorAll('#survivor-curves .updatemenu-button text'))
            .map(t => t.textContent)})""")
    # The "all trials" button, clicked as a user would: the axis then spans every value.
    full_range = evaluate("""new Promise(done => {
        const g = document.getElementById('survivor-curves');
        const button = Array.from(g.querySelectorAll('.updatemenu-button'))
            .find(b => b.textContent === 'all trials');
        if (!button) { done(null); return; }
        g.once('plotly_relayout', () => done(g._fullLayout.yaxis.range));
        button.dispatchEvent(new MouseEvent('click', {bubbles: true}));
        setTimeout(() => done('no relayout'), 5000); })""")
    # Sorting the metrics table by a heading works (and throws nothing).
    sorted_first = evaluate("""(() => { const th = document.querySelectorAll('#metrics-table th')[0];
        th.click(); th.click();
        return document.querySelector('#metrics-table tbody tr').getAttribute('data-trial'); })()""")
    if shot is not None:
        box = evaluate("JSON.stringify(document.getElementById('survivor-curves').getBoundingClientRect())")
        box = json.loads(box)
        scroll = evaluate("window.scrollY")
        image = browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": box["x"], "y": box["y"] + scroll, "width": box["width"],
                     "height": box["height"], "scale": 1}}, session)["data"]
        shot.write_bytes(base64.b64decode(image))
    events = browser.events[first_event:]
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    errors += [e["params"] for e in events if e["method"] == "Runtime.consoleAPICalled"
               and e["params"]["type"] in ("error", "assert")]
    errors += [e["params"]["entry"] for e in events if e["method"] == "Log.entryAdded"
               and e["params"]["entry"]["level"] == "error"]
    dialogs = [e["params"] for e in events if e["method"] == "Page.javascriptDialogOpening"]
    browser.send("Target.closeTarget", {"targetId": target})
    return {**json.loads(facts), "errors": errors, "dialogs": dialogs, "sorted_first": sorted_first,
            "full_range": full_range}


def test_a_hostile_study_name_appears_only_escaped(xss, tmp_path):
    page, _, figures = output.render(XSS_NAME, xss)
    assert XSS_NAME not in page
    assert "alert(1)" not in page.replace(html.escape(XSS_NAME), "")  # not in figures, not raw
    assert f'<h1 id="study-name">{html.escape(XSS_NAME)}</h1>' in page
    assert f"<title>{html.escape(XSS_NAME)} - saan-hpo report</title>" in page
    assert all("alert" not in figure.to_json() for figure in figures.values())
    assert output.default_output(XSS_NAME).parent == Path("reports")  # no path from the name


def test_reports_open_in_chromium_without_errors_and_a_hostile_name_stays_text(
        finished, running, xss, saturating, tmp_path):
    executable = chromium_or_fail()
    pages = {}
    for label, storage, name in (("finished", finished[0], "blog"), ("running", running[0], "blog"),
                                 ("xss", xss, XSS_NAME), ("saturating", saturating[0], "blog")):
        page, _, _ = output.render(name, storage)
        pages[label] = tmp_path / f"{label}.html"
        pages[label].write_text(page)

    browser = DevTools(executable, tmp_path / "profile", tmp_path / "chromium.log")
    shots = {label: tmp_path / f"survivor-curves-{label}.png" for label in ("finished", "saturating")}
    try:
        seen = {label: open_page(browser, path, shots.get(label)) for label, path in pages.items()}
    finally:
        browser.close()
    keep = os.environ.get("SAAN_HPO_REPORT_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots.values():
            shutil.copy(shot, Path(keep) / shot.name)
    for label, facts in seen.items():
        assert facts["errors"] == [], (label, facts["errors"])
        assert facts["dialogs"] == [], (label, facts["dialogs"])
        assert [n for _, n in facts["figures"]] and len(facts["figures"]) == 6
        assert facts["rows"] == 16 and facts["sorted_first"] == "15"
    # 16 trial curves and, drawn last, the x marks of the 15 pruned trials' last points.
    assert seen["finished"]["curves"] == 17 and dict(seen["finished"]["figures"])["survivor-curves"] == 17
    assert seen["running"]["curves"] == 3 and seen["running"]["buttons"] == []
    assert seen["xss"]["h1"] == XSS_NAME and seen["xss"]["title"].startswith(XSS_NAME)

    # The saturating study at 1400 px: the axis plotly drew spans the survivors of rung 0, so their band
    # fills most of the plot's height; the button brings every trial back.
    storage = saturating[0]
    trials = optuna.load_study(study_name="blog", storage=storage).trials
    kept = stored_rungs(storage, "blog")[0][2]
    survivors = [v for t in trials if t.number in kept for v in t.intermediate_values.values()]
    everyone = [v for t in trials for v in t.intermediate_values.values()]
    facts = seen["saturating"]
    low, high = facts["yrange"]
    assert low <= min(survivors) and high >= max(survivors)
    band_px = (max(survivors) - min(survivors)) / (high - low) * facts["plot_px"]
    assert band_px > 0.6 * facts["plot_px"] and facts["plot_px"] > 300, (band_px, facts["plot_px"])
    assert facts["buttons"] == ["survivors of rung 0", "all trials"]
    full_low, full_high = facts["full_range"]
    assert full_low <= min(everyone) and full_high >= max(everyone)
    for shot in shots.values():
        image = shot.read_bytes()
        assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 20_000
