"""model/data.py, model/cache.py, model/synthetic.py: layout, bad input, cache, transforms."""

import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from model.config import DataConfig
from model.data import IMAGENET_MEAN, IMAGENET_STD, flip_batch, iterate_batches, normalise_batch, open_split
from model.dataset_index import ensure_dataset, split_rows
from model.images import decode_resized
from model.errors import DataError, ImageError
from model.synthetic import make_synthetic_baid


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synthetic_baid(tmp_path_factory.mktemp("src") / "baid", n=40, size=40, seed=2)


def cfg(root, **kw) -> DataConfig:
    return DataConfig(root=str(root), image_size=16, **kw)


def test_synthetic_layout_and_scores(source):
    for split, n in (("train", 28), ("val", 6), ("test", 6)):
        rows = split_rows(cfg(source), split)
        assert len(rows) == n
        assert all((source / "images" / name).is_file() and 1 <= score <= 10 for name, score in rows)
    scores = np.array([s for split in ("train", "val", "test") for _, s in split_rows(cfg(source), split)])
    assert 3.5 < scores.mean() < 5.5 and 1.0 < scores.std() < 2.5


def test_synthetic_generation_races_safely(tmp_path):
    root = tmp_path / "race"
    threads = [threading.Thread(target=make_synthetic_baid, args=(root, 12, 24, 0)) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]
    assert len(list((root / "images").iterdir())) == 12


def test_synthetic_flag_generates_missing_root(tmp_path):
    data = open_split(DataConfig(root=str(tmp_path / "gen"), synthetic=True, synthetic_n=20,
                                 synthetic_size=24, image_size=16), "train")
    assert len(data) == 14 and data.pixels.shape == (14, 16, 16, 3)


def test_synthetic_splits_of_a_chosen_validation_size(tmp_path):
    """synthetic_val_n images validate and as many test; the first images train."""
    cfg_ = DataConfig(root=str(tmp_path / "gen"), synthetic=True, synthetic_n=30, synthetic_val_n=10,
                      synthetic_size=24, image_size=16)
    ensure_dataset(cfg_)
    sizes = {split: len(split_rows(cfg_, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 10, "val": 10, "test": 10}
    with pytest.raises(ValueError, match="fewer than half"):
        make_synthetic_baid(tmp_path / "bad", n=20, size=24, val_n=10)


def test_missing_folder_csv_and_column(tmp_path, baid):
    with pytest.raises(DataError, match="nowhere"):
        open_split(cfg(tmp_path / "nowhere"), "train")
    (baid / "dataset" / "test_set.csv").unlink()
    with pytest.raises(DataError, match="test_set.csv"):
        open_split(cfg(baid), "test")
    (baid / "dataset" / "train_set.csv").write_text("image,rating\na.jpg,3\n")
    with pytest.raises(DataError, match="train_set.csv: column 'score' missing"):
        open_split(cfg(baid), "train")
    (baid / "dataset" / "train_set.csv").write_text("image,score\na.jpg,eleven\n")
    with pytest.raises(DataError, match="train_set.csv:2: column 'score'"):
        open_split(cfg(baid), "train")


def test_val_carved_from_train_when_val_csv_absent(baid):
    (baid / "dataset" / "val_set.csv").unlink()
    c = cfg(baid, val_fraction=0.25, split_seed=7)
    train, val = split_rows(c, "train"), split_rows(c, "val")
    assert len(val) == 7 and len(train) == 21
    assert not {n for n, _ in train} & {n for n, _ in val}
    assert val == split_rows(c, "val")
    assert val != split_rows(cfg(baid, val_fraction=0.25, split_seed=8), "val")


@pytest.mark.parametrize("use_cache", [True, False])
def test_bad_images_skip_counts_or_fatal_names(baid, caplog, use_cache):
    rows = split_rows(cfg(baid), "train")
    broken, missing = baid / "images" / rows[3][0], baid / "images" / rows[5][0]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated JPEG
    missing.unlink()
    with caplog.at_level(logging.WARNING):
        data = open_split(cfg(baid, cache=use_cache), "train")
    # the cache decodes every image; without it PIL's verify() reads each file
    assert sorted(data.skipped) == sorted([rows[3][0], rows[5][0]]) and len(data) == 26
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.message]
    assert len(warnings) == 1 and f"skipped {len(data.skipped)} of 28" in warnings[0].message
    with pytest.raises(ImageError, match=rows[3][0]):
        open_split(cfg(baid, cache=use_cache, on_bad_image="fatal",
                       cache_dir=str(baid / "other-cache")), "train")


def test_truncated_jpeg_fatal_names_file(baid):
    name = split_rows(cfg(baid), "train")[0][0]
    path = baid / "images" / name
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match=name):
        open_split(cfg(baid, on_bad_image="fatal"), "train")


def test_cache_reused_rebuilt_on_csv_change_and_on_corruption(baid, caplog):
    first = open_split(cfg(baid), "val")
    cache_files = sorted((baid / ".saan-cache").glob("val-*.npy"))
    assert len(cache_files) == 1
    assert np.array_equal(first.images(np.arange(len(first))),
                          np.stack([decode_resized(baid / "images" / n, 16) for n in first.names]))
    again = open_split(cfg(baid), "val")
    assert np.array_equal(np.asarray(again.pixels), np.asarray(first.pixels))
    assert cache_files[0].stat().st_mtime_ns == sorted((baid / ".saan-cache").glob("val-*.npy"))[0].stat().st_mtime_ns

    # a changed CSV (last row dropped) is another key: a new cache file
    csv = baid / "dataset" / "val_set.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))
    open_split(cfg(baid), "val")
    assert len(list((baid / ".saan-cache").glob("val-*.npy"))) == 2

    # corrupt pixels (same size): the checksum catches it and the cache is rebuilt
    path = sorted((baid / ".saan-cache").glob("val-*.npy"), key=lambda p: p.stat().st_mtime_ns)[-1]
    raw = bytearray(path.read_bytes())
    raw[-10:] = bytes(255 - b for b in raw[-10:])
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        rebuilt = open_split(cfg(baid), "val")
    assert any("checksum mismatch" in r.message for r in caplog.records)
    assert np.array_equal(rebuilt.images(np.arange(len(rebuilt))),
                          np.stack([decode_resized(baid / "images" / n, 16) for n in rebuilt.names]))
    # truncated file: size check
    path.write_bytes(path.read_bytes()[:-100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        open_split(cfg(baid), "val")
    assert any("size" in r.message for r in caplog.records)


def test_decode_resize_matches_paper_transform(baid):
    name = split_rows(cfg(baid), "train")[0][0]
    with Image.open(baid / "images" / name) as img:
        expected = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR))
    assert np.array_equal(decode_resized(baid / "images" / name, 16), expected)


def test_normalise_and_flip():
    images = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    x = normalise_batch(images)
    assert x.shape == (2, 3, 4, 5)
    ref = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, ref)
    flipped = flip_batch(x, torch.tensor([True, False]))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def test_batches_shuffle_with_generator_and_keep_order_without(source):
    data = open_split(cfg(source), "train")
    ordered = torch.cat([s for _, s in iterate_batches(data, 8)])
    assert torch.equal(ordered, torch.from_numpy(data.scores))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = torch.cat([s for _, s in iterate_batches(data, 8, g1)])
    b = torch.cat([s for _, s in iterate_batches(data, 8, g2)])
    assert torch.equal(a, b) and not torch.equal(a, ordered)
    assert torch.equal(a.sort().values, ordered.sort().values)
