"""The report's worker timeline shows gangs (issue 20, point 5): which workers trained which
trial, when, and at which rank count -- read off saan_epochs.gang_json of a replayed study."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hpo.report.collect import collect
from hpo.report.figures import esc, worker_timeline
from studyfiles import epoch_rows, grid_points, write_curves, write_study
from test_gang_study import run_threads  # real Worker threads on one study file

GRID = {"lr": [1e-3, 1e-4], "batch_size": [64, 32]}  # 4 trials, rungs at epochs 1, 3, 7: 12 epochs


def replayed(tmp_path: Path, mode: str):
    """A small grid replayed by 4 worker threads with ``data_parallel = mode``: once the rungs
    thin the trials out, idle workers join the survivors' gangs (mode "on")."""
    storage = f"sqlite:///{tmp_path / (mode + '.db')}"
    study = write_study(tmp_path / f"{mode}.toml", name=f"dp-{mode}", grid=GRID, rungs=3,
                        storage=storage)
    study.write_text(study.read_text().replace("[study]\n", f'[study]\ndata_parallel = "{mode}"\n'))
    table = [[0.9 - 0.04 * i + 0.001 * e for e in range(1, 8)] for i in range(len(grid_points(GRID)))]
    run_threads(study, write_curves(tmp_path / "curves.csv", table, GRID), workers=4, seconds=0.05)
    return storage, collect(f"dp-{mode}", storage)


def bars(trace) -> list[tuple[str, int, range, str]]:
    """(row label, trial, epochs, hover) per bar of a timeline trace."""
    out = []
    for y, text, hover in zip(trace.y, trace.text, trace.customdata):
        number, first, last = re.fullmatch(r"#(\d+) e(\d+)(?:-(\d+))?", text).groups()
        out.append((y, int(number), range(int(first), int(last or first) + 1), hover))
    return out


def test_member_rows_carry_the_epochs_their_gangs_trained(tmp_path):
    storage, data = replayed(tmp_path, "on")
    label = {w: esc(w[-6:]) for w in data.workers}  # a worker as hover text names it
    rows = {w: f"{esc(name)} [{label[w]}]" for w, name in data.workers.items()}  # its row
    ganged = [(r.number, r.epoch, r.worker, json.loads(r.gang_json))
              for r in epoch_rows(storage, "dp-on") if r.gang_json and json.loads(r.gang_json)]
    assert ganged, "4 workers on 4 trials thinned to 1 form gangs"
    fig = worker_timeline(data)
    holders, members = fig.data
    assert members.name == "as gang member" and fig.layout.showlegend
    member_bars, holder_bars = bars(members), bars(holders)
    for number, epoch, holder, gang in ganged:
        size = f"gang of {len(gang) + 1} (holder {label[holder]}; members "
        for member in gang:  # a bar on the member's own row, over this epoch of this trial
            [hover] = [h for y, n, span, h in member_bars
                       if y == rows[member] and n == number and epoch in span]
            assert size in hover and label[member] in hover and "as gang member" in hover, hover
        [hover] = [h for y, n, span, h in holder_bars
                   if y == rows[holder] and n == number and epoch in span]
        assert size in hover, hover
    # and nothing else: a member bar's epochs are exactly those whose gang names that worker
    drawn = sum(len(span) for _, _, span, _ in member_bars)
    assert drawn == sum(len(gang) for *_, gang in ganged)
    assert set(members.marker.color) <= set(holders.marker.color)  # the trials' colours


def test_a_study_without_gangs_has_no_member_bars(tmp_path):
    storage, data = replayed(tmp_path, "off")
    assert not data.member_epochs and all(not r.gang_json for r in epoch_rows(storage, "dp-off"))
    fig = worker_timeline(data)
    [holders] = fig.data  # the one trace a timeline always had
    assert holders.name == "stints" and not fig.layout.showlegend
    assert not any("gang" in hover for hover in holders.customdata)
    assert sum(len(span) for *_, span, _ in bars(holders)) == len(data.epochs) == 12
