"""Device-resident splits, compiled calls, host snapshots and background checkpoints (model/train.py)."""

import logging

import pytest
import torch

from model.checkpoint import CheckpointWriter, snapshot_to_host
from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
from model.device_data import device_resident
from model.synthetic import make_synthetic_baid
from model.train import ENV_COMPILE_BACKEND, Trainer, read_checkpoint

DETERMINISTIC_KEYS = ("accuracy", "constant_accuracy", "plcc", "srcc", "mse", "train_loss", "lr", "epoch")


@pytest.fixture(scope="module")
def baid(tmp_path_factory):
    return make_synthetic_baid(tmp_path_factory.mktemp("data") / "baid", n=100, size=40, seed=7)


pytestmark = pytest.mark.usefixtures("fresh_resident_data")


def config(root, data=None, **trainer) -> RunConfig:
    defaults = dict(lr=1e-3, batch_size=16, schedule="step", step_size=1, gamma=0.5,
                    deterministic=True, seed=3)
    defaults.update(trainer)
    return RunConfig(data=DataConfig(root=str(root), image_size=32, **(data or {})),
                     model=ModelConfig(backbone="resnet18", head_hidden=32),
                     trainer=TrainerConfig(**defaults))


def same_run(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert [{k: m[k] for k in DETERMINISTIC_KEYS} for m in a.history] == \
           [{k: m[k] for k in DETERMINISTIC_KEYS} for m in b.history]


def test_placement_is_a_pure_decision():
    assert device_resident("auto", "cuda", 100, 1000, 0.5)
    assert not device_resident("auto", "cuda", 600, 1000, 0.5)      # does not fit the share
    assert not device_resident("auto", "cpu", 100, 1000, 0.5)       # auto: only on CUDA
    assert device_resident("on", "cpu", 100, 1000, 0.5)
    assert not device_resident("on", "cpu", 600, 1000, 0.5)
    assert not device_resident("off", "cuda", 1, 1000, 0.5)


def test_device_resident_split_gives_the_same_batches_and_losses(baid, caplog):
    with caplog.at_level(logging.INFO):
        mapped = Trainer(config(baid, {"device_cache": "off"}))
        mapped.fit(2)
    assert any("read from the memory-mapped cache" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resident = Trainer(config(baid, {"device_cache": "on"}))
        resident.fit(2)
    assert any("train split" in r.message and "held on cpu" in r.message for r in caplog.records)
    assert resident.feed.resident["train"] is not None and mapped.feed.resident["train"] is None
    same_run(mapped, resident)

    # the same positions and flips reach the model on both paths
    gen_a, gen_b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for a, b in zip(mapped.feed.batches("train", 16, gen_a), resident.feed.batches("train", 16, gen_b),
                    strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.scores, b.scores)
        assert all(torch.equal(p, q) for p, q in zip(a.style, b.style))


def test_split_that_does_not_fit_falls_back_to_the_memory_map(baid, caplog):
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config(baid, {"device_cache": "on", "device_cache_fraction": 1e-12}))
        trainer.fit(1)
    assert trainer.feed.resident["train"] is None
    assert any("read from the memory-mapped cache" in r.message and "MiB free" in r.message
               for r in caplog.records)


def test_resume_is_exact_with_every_fast_path_and_background_checkpoints(baid, tmp_path):
    cfg = config(baid, {"device_cache": "on"})
    straight = Trainer(cfg)
    straight.fit(3)

    first = Trainer(cfg)
    with CheckpointWriter() as writer:
        futures = []
        first.fit(2, on_epoch_end=lambda epoch, _: futures.append(
            first.save_checkpoint_async(tmp_path / f"e{epoch}.pt", writer)))
        paths = [f.result() for f in futures]  # durable from here on
    assert [p.name for p in paths] == ["e1.pt", "e2.pt"]
    del first
    resumed = Trainer.from_checkpoint(paths[0])  # epoch 1, written while epoch 2 trained
    assert resumed.epoch == 1
    resumed.fit(3)
    same_run(straight, resumed)


def test_snapshot_is_a_host_copy_unaffected_by_later_training(baid):
    trainer = Trainer(config(baid))
    trainer.fit(1)
    snap = trainer.snapshot()
    frozen = snapshot_to_host(snap)  # an independent copy to compare with
    trainer.fit(2)
    for key, tensor in snap["model"].items():
        assert torch.equal(tensor, frozen["model"][key]), key
    moments = snap["optimizer"]["state"]
    assert moments and all(torch.equal(s["exp_avg"], frozen["optimizer"]["state"][i]["exp_avg"])
                           for i, s in moments.items())
    live = trainer.optimizer.state_dict()["state"]
    assert not all(torch.equal(moments[i]["exp_avg"], live[i]["exp_avg"]) for i in moments)


def test_checkpoint_holds_only_what_changes_and_older_full_ones_still_load(baid, tmp_path):
    trainer = Trainer(config(baid))
    trainer.fit(1)
    path = trainer.save_checkpoint(tmp_path / "slim.pt")
    state = read_checkpoint(path)
    assert not any(k.startswith(("style.vgg.", "generic.trunk.conv")) for k in state["model"])
    assert "style_cache" not in state["config"]["data"]  # speed-only defaults are not written

    full = dict(state, model={k: v.clone() for k, v in trainer.model.state_dict().items()})
    old = Trainer(config(baid))
    old.load_state_dict(full)  # a checkpoint that also holds the frozen weights
    old.fit(2)                 # (one trainer at a time: loading a state sets torch's global RNG)
    slim = Trainer.from_checkpoint(path)
    slim.fit(2)
    assert old.epoch == slim.epoch == 2
    same_run(old, slim)


def test_compiled_call_is_compiled_once_per_process(baid, monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setenv(ENV_COMPILE_BACKEND, "eager")  # the graphs, without Inductor's C++ build
    plain = Trainer(config(baid))
    plain.fit(1)
    first = Trainer(config(baid, compile=True))
    first.fit(1)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    second = Trainer(config(baid, compile=True))  # a trial rebuilt on resume, same process
    second.fit(1)
    assert counters["stats"]["unique_graphs"] == graphs
    same_run(plain, first)
    same_run(first, second)


def test_a_second_trainer_of_the_same_model_and_seed_starts_from_the_same_weights(baid):
    """model/train.py keeps the process's last freshly built model and copies it: the copy
    equals a build from the seed bit for bit, training one trainer changes neither the kept
    model nor the next copy, and the global generator is left as it was."""
    from model.saan import build_saan
    from model.train import seeded_saan

    cfg = config(baid)
    first = Trainer(cfg)
    first.fit(1)
    state = torch.random.get_rng_state()
    second = seeded_saan(cfg, cfg.trainer.seed)
    assert torch.equal(torch.random.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.trainer.seed)
        fresh = build_saan(cfg.model)
    built, copied = fresh.state_dict(), second.state_dict()
    assert built.keys() == copied.keys()
    assert all(torch.equal(built[k], copied[k]) for k in built)
    assert [p.requires_grad for p in fresh.parameters()] == [p.requires_grad for p in second.parameters()]
    trained = first.model.state_dict()
    assert any(not torch.equal(trained[k], built[k]) for k in built)  # the first one did train
    other = seeded_saan(cfg, cfg.trainer.seed + 1)  # another seed: another model
    assert any(not torch.equal(other.state_dict()[k], built[k]) for k in built)
