"""model/style_cache.py: the VGG's style statistics computed once equal the VGG run every step;
a damaged or stale statistics file is rebuilt, never used."""

import json
import logging

import numpy as np
import pytest
import torch

from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
from model.data import normalise_batch, open_split
from model.rowfile import file_checksum
from model.saan import SAAN
from model.style_cache import open_style_table
from model.synthetic import make_synthetic_baid
from model.train import Trainer


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synthetic_baid(tmp_path_factory.mktemp("src") / "baid", n=90, size=40, seed=5)


pytestmark = pytest.mark.usefixtures("fresh_resident_data")


def config(root, **data) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root), image_size=32, **data),
                     model=ModelConfig(backbone="resnet18", head_hidden=32),
                     trainer=TrainerConfig(lr=1e-3, batch_size=16, schedule="constant",
                                           deterministic=True, seed=2))


class VGGCalls:
    """Counts forward calls of the style branch's VGG."""

    def __init__(self, trainer):
        self.n = 0
        trainer.model.style.vgg.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def run(cfg):
    """Predictions before training, two epochs' history, predictions after, VGG calls while
    training and evaluating (after the statistics are built), the trainer.

    One trainer at a time: each seeds torch's global RNG (dropout) when it is built.
    """
    trainer = Trainer(cfg)
    calls = VGGCalls(trainer)
    before = {split: trainer.predict(split)[0] for split in ("val", "test")}
    trainer.feed.style_table("train")  # with the cache: computed here, once
    built = calls.n
    history = trainer.fit(2)
    return before, history, trainer.predict("val")[0], calls.n - built, trainer


def test_cached_statistics_give_the_same_predictions_and_loss(baid):
    before_c, history_c, after_c, calls_c, cached = run(config(baid))
    before_v, history_v, after_v, calls_v, _ = run(config(baid, style_cache=False))
    for split in ("val", "test"):
        np.testing.assert_allclose(before_c[split], before_v[split], rtol=0, atol=1e-5)
    for mc, mv in zip(history_c, history_v, strict=True):
        assert mc["train_loss"] == pytest.approx(mv["train_loss"], rel=1e-4, abs=1e-6)
        assert mc["mse"] == pytest.approx(mv["mse"], rel=1e-3, abs=1e-5)
    np.testing.assert_allclose(after_c, after_v, rtol=0, atol=1e-3)
    assert calls_c == 0   # the tables were built before; the VGG never runs in training
    assert calls_v > 10   # every batch
    assert cached.feed.tables["train"].flips == 2 and cached.feed.tables["val"].flips == 1


def test_cached_statistics_match_the_vgg_under_bf16_autocast():
    torch.manual_seed(0)
    model = SAAN("resnet18", head_hidden=32).eval()
    images = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    x = normalise_batch(images)
    with torch.inference_mode():
        style = model.style.style_stats(x)  # fp32, as the cache computes them
        with torch.autocast("cpu", dtype=torch.bfloat16):
            uncached = model(x).float()
            cached = model(x, style).float()
        fp32, fp32_cached = model(x), model(x, style)
    assert torch.allclose(cached, uncached, atol=2e-2)
    assert torch.allclose(fp32_cached, fp32, atol=1e-6)


def test_statistics_equal_the_branchs_own_for_both_flips(baid):
    data = open_split(DataConfig(root=str(baid), image_size=32), "train")
    torch.manual_seed(1)
    branch = SAAN("resnet18", head_hidden=8).style
    table = open_style_table(data, branch, True, torch.device("cpu"), torch.contiguous_format,
                             logging.getLogger("t"))
    assert table.built and table.values.shape == (len(data), 2, 2, 128)
    positions = torch.tensor([4, 0, 9])
    x = normalise_batch(torch.from_numpy(data.images(positions.numpy())))
    flip = torch.tensor([True, False, True])
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    mean, std = branch.style_stats(x)
    got_mean, got_std = table.gather(positions, flip)
    assert torch.allclose(got_mean, mean, atol=1e-5) and torch.allclose(got_std, std, atol=1e-5)
    again = open_style_table(data, branch, True, torch.device("cpu"), torch.contiguous_format,
                             logging.getLogger("t"))
    assert not again.built and torch.equal(again.values, table.values)


def _flip_byte(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([255 - byte[0]]))


@pytest.mark.parametrize("damage", ["bytes", "truncated", "metadata", "row-behind-checksum", "stale"])
def test_damaged_or_stale_statistics_are_rebuilt_never_used(baid, caplog, damage):
    data = open_split(DataConfig(root=str(baid), image_size=32), "val")
    torch.manual_seed(1)
    branch = SAAN("resnet18", head_hidden=8).style
    args = (branch, False, torch.device("cpu"), torch.contiguous_format, logging.getLogger("t"))
    first = open_style_table(data, *args)
    path, meta_path = first.path, first.path.with_suffix(".json")
    if damage == "bytes":
        _flip_byte(path, path.stat().st_size - 5)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-16])
    elif damage == "metadata":
        meta_path.write_text(meta_path.read_text()[:30])
    elif damage == "row-behind-checksum":  # the open check passes; the row CRC must catch it
        _flip_byte(path, path.stat().st_size - 5)
        meta = json.loads(meta_path.read_text())
        meta["checksum"] = file_checksum(path)
        meta_path.write_text(json.dumps(meta))
    else:  # the pixel cache was rebuilt: statistics from the old build are stale
        from model.cache import invalidate
        invalidate(data.cache)
        data = open_split(DataConfig(root=str(baid), image_size=32), "val")
        assert data.cache.built
    with caplog.at_level(logging.WARNING):
        rebuilt = open_style_table(data, *args)
    assert rebuilt.built
    expected = {"stale": "stale", "row-behind-checksum": "fail their checksum"}.get(damage, "unusable")
    assert any(expected in r.message for r in caplog.records), [r.message for r in caplog.records]
    assert torch.allclose(rebuilt.values, first.values, atol=1e-6)
    assert not open_style_table(data, *args).built  # the rebuilt file is committed


def test_other_vgg_weights_get_other_statistics(baid):
    data = open_split(DataConfig(root=str(baid), image_size=32), "val")
    tables = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        branch = SAAN("resnet18", head_hidden=8).style
        tables.append(open_style_table(data, branch, False, torch.device("cpu"),
                                       torch.contiguous_format, logging.getLogger("t")))
    assert all(t.built for t in tables) and tables[0].path != tables[1].path
    assert not torch.allclose(tables[0].values, tables[1].values)


def test_without_pixel_cache_the_vgg_runs(baid):
    trainer = Trainer(config(baid, cache=False))
    calls = VGGCalls(trainer)
    trainer.predict("val")
    assert calls.n > 0 and trainer.feed.style_table("val") is None
