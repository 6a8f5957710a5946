"""model/cache.py: one build across processes, rebuild on a changed CSV or size, damage never used."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model.rowfile import file_checksum
from model.config import DataConfig
from model.data import open_split
from model.images import decode_resized
from model.synthetic import make_synthetic_baid

REPO = Path(__file__).resolve().parents[1]

# A worker process: wait for the go file, open the split (building the cache
# slowly, so the other process surely arrives during the build), report.
WORKER = """
import json, logging, os, sys, time
from pathlib import Path
import model.cache as cache
from model.config import DataConfig
from model.data import open_split

root, cache_dir, go = sys.argv[1:4]
decode = cache.decode_or_error
def slow(args):
    time.sleep(0.04)
    return decode(args)
cache.decode_or_error = slow
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
while not Path(go).exists():
    time.sleep(0.005)
data = open_split(DataConfig(root=root, image_size=16, cache_dir=cache_dir), "train")
print(json.dumps({"built": data.cache.built, "path": str(data.cache.path),
                  "sum": int(data.images(list(range(len(data)))).astype("int64").sum())}))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synthetic_baid(tmp_path_factory.mktemp("src") / "baid", n=60, size=40, seed=4)


def cfg(root, **kw) -> DataConfig:
    return DataConfig(root=str(root), image_size=16, **kw)


def decoded(data) -> np.ndarray:
    return np.stack([decode_resized(data.root / "images" / n, data.image_size) for n in data.names])


def test_two_processes_starting_together_build_once(baid, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SAAN_HPO_NO_PROGRESS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(baid), str(tmp_path / "cache"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    time.sleep(0.5)  # let both import and start polling
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    logs = "".join(err for _, err in outs)
    assert sorted(r["built"] for r in results) == [False, True]  # one build, one reuse
    assert logs.count("(once)") == 1, logs                         # one build log line in all
    assert "waiting for another process" in logs, logs             # the other one waited
    assert results[0]["path"] == results[1]["path"] and results[0]["sum"] == results[1]["sum"]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1      # no temporary file left


def test_reused_then_rebuilt_when_csv_or_size_changes(baid):
    first = open_split(cfg(baid), "train")
    assert first.cache.built
    again = open_split(cfg(baid), "train")
    assert not again.cache.built and again.cache.path == first.cache.path

    csv = baid / "dataset" / "train_set.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))  # a row dropped
    changed = open_split(cfg(baid), "train")
    assert changed.cache.built and changed.cache.path != first.cache.path and len(changed) == len(first) - 1
    assert np.array_equal(changed.images(np.arange(len(changed))), decoded(changed))

    resized = open_split(DataConfig(root=str(baid), image_size=8), "train")
    assert resized.cache.built and resized.pixels.shape[1:] == (8, 8, 3)


def _damage(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([255 - byte[0]]))


@pytest.mark.parametrize("damage", ["pixels", "header", "truncated", "metadata"])
def test_damaged_cache_is_detected_at_open_and_rebuilt(baid, caplog, damage):
    first = open_split(cfg(baid), "val")
    path, meta = first.cache.path, first.cache.path.with_suffix(".json")
    del first
    if damage == "pixels":
        _damage(path, path.stat().st_size - 7)
    elif damage == "header":
        _damage(path, 60)  # inside the .npy header's shape text
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-48])
    else:
        meta.write_text(meta.read_text()[:40])
    with caplog.at_level(logging.WARNING):
        rebuilt = open_split(cfg(baid), "val")
    assert rebuilt.cache.built
    assert any("unusable" in r.message and "rebuilding" in r.message for r in caplog.records)
    assert np.array_equal(rebuilt.images(np.arange(len(rebuilt))), decoded(rebuilt))


def test_damage_the_open_check_misses_is_caught_on_first_read(baid, caplog):
    """Files over 64 MiB are checksummed in samples at open; each row's CRC catches the rest."""
    data = open_split(cfg(baid), "train")
    path, meta_path = data.cache.path, data.cache.path.with_suffix(".json")
    old_build = data.cache.build_id
    del data
    row = 5
    row_bytes = 16 * 16 * 3
    header = path.stat().st_size - 42 * row_bytes  # 42 train rows
    _damage(path, header + row * row_bytes + 100)
    meta = json.loads(meta_path.read_text())
    meta["checksum"] = file_checksum(path)  # as if the damage fell between the sampled blocks
    meta_path.write_text(json.dumps(meta))

    damaged = open_split(cfg(baid), "train")
    assert not damaged.cache.built  # the open check passed
    with caplog.at_level(logging.WARNING):
        batch = damaged.images(np.array([row, 0, 7]))
    assert any("fail their checksum" in r.message for r in caplog.records)
    assert damaged.cache.built and damaged.cache.build_id != old_build
    assert np.array_equal(batch, decoded(damaged)[[row, 0, 7]])
    # the rebuilt file is the committed one: the next process reuses it
    assert not open_split(cfg(baid), "train").cache.built
