"""model/train.py: exact resume, learning on synthetic data, schedules, checkpoints."""

import io
import math

import pytest
import torch

from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
from model.errors import CheckpointError
from model.synthetic import make_synthetic_baid
from model.train import Trainer, learning_rate

DETERMINISTIC_KEYS = ("accuracy", "constant_accuracy", "plcc", "srcc", "mse", "train_loss", "lr", "epoch")


@pytest.fixture(scope="module")
def baid(tmp_path_factory):
    return make_synthetic_baid(tmp_path_factory.mktemp("data") / "baid", n=300, size=64, seed=1)


def config(root, **trainer) -> RunConfig:
    defaults = dict(lr=1e-3, batch_size=16, schedule="constant", deterministic=True, seed=3)
    defaults.update(trainer)
    return RunConfig(data=DataConfig(root=str(root), image_size=32),
                     model=ModelConfig(backbone="resnet18", head_hidden=64),
                     trainer=TrainerConfig(**defaults))


def test_learns_synthetic_rule(baid):
    trainer = Trainer(config(baid))
    history = trainer.fit(4)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4] and trainer.epoch == 4
    assert history[-1]["srcc"] > 0.5, history
    expected = {"accuracy", "constant_accuracy", "plcc", "srcc", "mse", "train_loss",
                "epoch_seconds", "images_per_s"}
    assert expected <= set(history[-1])


def test_resume_is_exact(baid):
    cfg = config(baid, schedule="step", step_size=1, gamma=0.5)  # lr changes every epoch
    straight = Trainer(cfg)
    straight.fit(3)

    first = Trainer(cfg)
    first.fit(1)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    del first
    resumed = Trainer(cfg)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert resumed.epoch == 1
    resumed.fit(3)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for ma, mb in zip(straight.history, resumed.history, strict=True):
        assert {k: ma[k] for k in DETERMINISTIC_KEYS} == {k: mb[k] for k in DETERMINISTIC_KEYS}


def test_checkpoint_leaves_out_frozen_weights_and_roundtrips(baid, tmp_path):
    trainer = Trainer(config(baid))
    trainer.fit(1)
    state = trainer.state_dict()
    assert not any(k.startswith("style.vgg.") for k in state["model"])
    assert "generic.trunk.conv1.weight" not in state["model"]
    assert "generic.trunk.bn1.running_mean" in state["model"]  # faithful mode: BN stats change
    assert state["config"] == trainer.cfg.to_mapping() and state["format"] == 1

    path = trainer.save_checkpoint(tmp_path / "ck.pt")
    again = Trainer.from_checkpoint(path)
    assert again.epoch == 1 and again.history == trainer.history
    assert again.evaluate("val") == trainer.evaluate("val")
    pred, true, names = again.predict("test")
    assert len(pred) == len(true) == len(names) == 45


def test_bad_checkpoints_raise_checkpoint_error(baid, tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        Trainer.from_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pt"):
        Trainer.from_checkpoint(tmp_path / "bad.pt")
    trainer = Trainer(config(baid))
    state = trainer.state_dict()
    other = Trainer(config(baid, seed=4))  # other seed: other random frozen weights
    with pytest.raises(CheckpointError, match="frozen"):
        other.load_state_dict(state)


def test_on_epoch_end_false_stops(baid):
    trainer = Trainer(config(baid))
    seen = []
    trainer.fit(5, on_epoch_end=lambda epoch, metrics: seen.append(epoch) or False)
    assert seen == [1] and trainer.epoch == 1


def test_learning_rate_schedules():
    paper = TrainerConfig(lr=1e-5, schedule="paper")
    # docs/saan.md: 0-based epochs 0-10 at 1e-5, 11-20 at 1e-6, ..., 31-40 at 1e-8, 1e-9 after
    expected = {1: 1e-5, 11: 1e-5, 12: 1e-6, 21: 1e-6, 22: 1e-7, 41: 1e-8, 42: 1e-9, 100: 1e-9}
    for epoch, lr in expected.items():
        assert math.isclose(learning_rate(paper, epoch), lr, rel_tol=1e-9), epoch
    step = TrainerConfig(lr=1e-5, schedule="step")
    expected = {1: 1e-5, 10: 1e-5, 11: 1e-6, 20: 1e-6, 21: 1e-7, 41: 1e-9, 100: 1e-9}
    for epoch, lr in expected.items():
        assert math.isclose(learning_rate(step, epoch), lr, rel_tol=1e-9), epoch
    assert learning_rate(TrainerConfig(lr=3e-4, schedule="constant"), 77) == 3e-4


def test_frozen_generic_bn_option_keeps_stats(baid):
    cfg = config(baid)
    cfg.model.freeze_generic_bn = True
    trainer = Trainer(cfg)
    before = trainer.model.generic.trunk.bn1.running_mean.clone()
    trainer.fit(1)
    assert torch.equal(before, trainer.model.generic.trunk.bn1.running_mean)
    assert "generic.trunk.bn1.running_mean" not in trainer.state_dict()["model"]
