"""Curve files (``simulate``, ``--replay-curves``) are validated like study files, and
non-finite values have one meaning: they rank last and print as strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from studyfiles import cli, write_curves, write_study

GRID = {"lr": [1e-3, 1e-4], "batch_size": [8, 16]}
TABLE = [[round(0.1 * i + 0.01 * e, 4) for e in range(1, 8)] for i in range(4)]
HEADER = "lr,batch_size,epoch,value"


def good_rows() -> list[str]:
    rows = []
    for i, (lr, bs) in enumerate([(1e-3, 8), (1e-3, 16), (1e-4, 8), (1e-4, 16)]):
        rows += [f"{lr},{bs},{e},{TABLE[i][e - 1]}" for e in range(1, 8)]
    return rows


def edited(change) -> str:
    """The good file with ``change(lines)`` applied; lines[0] is the header (line 1)."""
    lines = [HEADER, *good_rows()]
    change(lines)
    return "\n".join(lines) + "\n"


def replace_cell(line: int, column: int, text: str):
    def change(lines):
        cells = lines[line - 1].split(",")
        cells[column - 1] = text
        lines[line - 1] = ",".join(cells)
    return change


# (kind, file text, what the one error line must contain: "line L, column C")
MALFORMED = [
    ("non-numeric value", edited(replace_cell(3, 4, "abc")), "line 3, column 4 (value)"),
    ("empty value cell", edited(replace_cell(4, 4, "")), "line 4, column 4 (value)"),
    ("NA value", edited(replace_cell(4, 4, "NA")), "line 4, column 4 (value)"),
    ("empty axis cell", edited(replace_cell(5, 1, "")), "line 5, column 1 (lr)"),
    ("non-numeric axis", edited(replace_cell(5, 2, "big")), "line 5, column 2 (batch_size)"),
    ("fractional epoch", edited(replace_cell(6, 3, "2.5")), "line 6, column 3 (epoch)"),
    ("epoch written as float", edited(replace_cell(6, 3, "5.0")), "line 6, column 3 (epoch)"),
    ("epoch zero", edited(replace_cell(2, 3, "0")), "line 2, column 3 (epoch)"),
    ("duplicated row with another value",
     edited(lambda lines: lines.append("0.001,8,3,0.99")), "line 30, column 4 (value)"),
    ("exactly duplicated row", edited(lambda lines: lines.insert(5, lines[3])),
     "line 6, column 3 (epoch): epoch 3 of {'lr': 0.001, 'batch_size': 8} again, as on line 4"),
    ("the same row written another way", edited(lambda lines: lines.append("1e-3,8.0,3,0.03")),
     "line 30, column 3 (epoch)"),
    ("extra column", edited(lambda lines: lines.__setitem__(0, HEADER + ",note")), "line 1, column 5"),
    ("missing column", "lr,batch_size,epoch\n0.001,8,1\n", "line 1: column 'value'"),
    ("short row", edited(lambda lines: lines.__setitem__(7, "0.001,8,7")), "line 8, column 4"),
    ("long row", edited(lambda lines: lines.__setitem__(7, "0.001,8,7,0.1,9")), "line 8, column 5"),
    ("missing epoch of a pruned trial", edited(lambda lines: lines.pop(2)), "line 3, column 3 (epoch)"),
    ("configuration without rows", edited(lambda lines: [lines.pop(1) for _ in range(7)]),
     "no rows for configuration {'lr': 0.001, 'batch_size': 8}"),
    ("empty file", "", "line 1: empty file"),
]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("curves")
    return write_study(tmp / "small.toml", grid=GRID, rungs=2)


@pytest.mark.parametrize("kind,text,where", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_curve_file_is_one_line_naming_file_line_and_column(study, tmp_path, kind,
                                                                         text, where):
    curves = tmp_path / "curves.csv"
    curves.write_text(text)
    result = cli("simulate", str(study), "--curves", str(curves))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(curves) in lines[0] and where in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("change,where", [
    (replace_cell(3, 4, "abc"), "line 3, column 4 (value)"),
    (lambda lines: lines.insert(5, lines[3]), "line 6, column 3 (epoch)"),  # an exact duplicate
], ids=["non-numeric value", "exactly duplicated row"])
def test_launch_replay_curves_is_validated_before_anything_is_stored(study, tmp_path, change, where):
    curves = tmp_path / "curves.csv"
    curves.write_text(edited(change))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = cli("launch", str(study), "--storage", storage, "--replay-curves", str(curves))
    assert result.returncode == 2 and where in result.stderr and str(curves) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "study.db").exists()


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_nan_and_inf_rank_last_are_counted_and_print_as_strict_json(study, tmp_path):
    table = [list(curve) for curve in TABLE]
    table[3][0] = float("nan")  # the best configuration diverges at rung 0 ...
    table[2][2] = float("inf")  # ... and an infinite value at the last rung (epoch 3)
    table[0][2] = float("-inf")
    curves = write_curves(tmp_path / "c.csv", table, GRID)
    with open(curves, "a") as fh:  # a configuration of another grid: allowed, counted
        fh.write("0.5,8,1,0.9\n0.5,8,2,0.9\n")
    result = cli("simulate", str(study), "--curves", str(curves), "--json")
    assert result.returncode == 0, result.stderr
    out = strict_json(result.stdout)
    assert out["non_finite_values"] == 3 and out["outside_grid_rows"] == 2
    rung0, rung1 = out["rungs"]
    by_trial = {c["trial"]: c for c in rung0["compared"]}
    assert by_trial[3]["value"] is None and by_trial[3]["non_finite"] is True
    assert 3 not in rung0["survivors"]  # NaN is pruned at its rung although it was the best
    assert rung0["survivors"] == [2, 1]
    last = {c["trial"]: c for c in rung1["compared"]}
    assert last[2]["non_finite"] and last[2]["value"] is None
    assert rung1["survivors"] == [1]  # inf never wins, not even when maximizing
    assert out["winner_trial"] == 1 and math.isfinite(out["winner_value"])

    text = cli("simulate", str(study), "--curves", str(curves))
    assert text.returncode == 0, text.stderr
    assert "#3=non-finite" in text.stdout and "outside this grid (ignored): 2" in text.stdout


def test_all_non_finite_at_the_last_rung_means_no_winner_and_null_json(study, tmp_path):
    table = [[float("nan")] * 7 for _ in range(4)]
    curves = write_curves(tmp_path / "c.csv", table, GRID)
    result = cli("simulate", str(study), "--curves", str(curves), "--json")
    assert result.returncode == 0, result.stderr
    out = strict_json(result.stdout)
    assert out["winner"] is None and out["winner_value"] is None
    assert out["best_value"] is None and out["best_value_non_finite"] is True
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout


def test_one_table_serves_grids_that_vary_different_settings(study, tmp_path):
    """A column naming another grid's setting is allowed; a row with a value there belongs to
    that grid and is counted as outside this one; the rest replay as if the column were absent."""
    lines = edited(lambda lines: None).splitlines()
    shared = [lines[0] + ",model.norm"] + [line + "," for line in lines[1:]]
    shared += [f",16,{e},0.99,gn" for e in range(1, 8)]  # a row of a grid varying model.norm
    curves = tmp_path / "shared.csv"
    curves.write_text("\n".join(shared) + "\n")
    plain = tmp_path / "plain.csv"
    plain.write_text(edited(lambda lines: None))
    outputs = []
    for path in (curves, plain):
        result = cli("simulate", str(study), "--curves", str(path), "--json")
        assert result.returncode == 0, result.stderr
        outputs.append(strict_json(result.stdout))
    assert outputs[0]["outside_grid_rows"] == 7 and outputs[1]["outside_grid_rows"] == 0
    assert outputs[0]["rungs"] == outputs[1]["rungs"]
    assert outputs[0]["winner_trial"] == outputs[1]["winner_trial"]

    # A column that names no setting is still refused.
    bad = tmp_path / "bad.csv"
    bad.write_text(curves.read_text().replace("model.norm", "notes", 1))
    refused = cli("simulate", str(study), "--curves", str(bad))
    assert refused.returncode == 2 and "line 1, column 5 ('notes'): unexpected column" in refused.stderr
    assert "Traceback" not in refused.stderr
