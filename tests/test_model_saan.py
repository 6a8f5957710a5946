"""model/saan.py and model/weights.py: counts, variants, gradients, freezing, weights."""

import itertools

import pytest
import torch

from model.config import ModelConfig
from model.errors import WeightsError
from model.saan import VGGEncoder, adain, build_saan, count_parameters
from model.weights import load_pretrained


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return build_saan(ModelConfig())


def test_default_parameter_counts_match_saan_md(paper_model):
    m = paper_model
    assert count_parameters(m) == 30_809_537
    assert count_parameters(m, trainable_only=True) == 18_760_513
    assert count_parameters(m.generic) == 8_543_296
    assert count_parameters(m.style.trunk) == 1_444_928
    assert count_parameters(m.style.vgg) == 3_505_728
    assert count_parameters(m.fusion) == 4_725_504
    assert count_parameters(m.head.norm) == 3_072
    assert count_parameters(m.head.mlp) == 12_587_009
    assert count_parameters(m.generic, trainable_only=True) == 0
    assert count_parameters(m.style.vgg, trainable_only=True) == 0


def test_paper_shapes_at_small_input(paper_model):
    m = paper_model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert m.generic(x).shape == (2, 1024, 4, 4)
        assert m.style.vgg(x).shape == (2, 512, 8, 8)
        assert m.style(x).shape == (2, 512, 4, 4)
        out = m(x)
    assert out.shape == (2,) and ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("backbone,norm,branches", list(itertools.product(
    ["resnet18"], ["bn", "gn", "gn-all"], ["both", "no_style", "no_generic"])) + [
    ("resnet50", "gn-all", "no_style"), ("resnet50", "gn", "no_generic")])
def test_every_variant_builds_and_predicts(backbone, norm, branches):
    m = build_saan(ModelConfig(backbone=backbone, norm=norm, branches=branches, head_hidden=64))
    m.train()
    out = m(torch.randn(3, 3, 64, 64))
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    expected_norm = torch.nn.GroupNorm if norm != "bn" else torch.nn.BatchNorm2d
    assert isinstance(m.fusion.norm, expected_norm)
    assert isinstance(m.head.norm, torch.nn.GroupNorm if norm == "gn-all" else torch.nn.BatchNorm2d)
    assert (m.fusion.norm.weight == 0).all() and (m.fusion.norm.bias == 0).all()
    style, generic = {"resnet18": (128, 256), "resnet50": (512, 1024)}[backbone]
    channels = {"both": style + generic, "no_style": generic, "no_generic": style}[branches]
    assert m.head.mlp[0].in_features == channels * 4


def test_resnet18_style_branch_cuts_vgg_at_relu2_1():
    m = build_saan(ModelConfig(backbone="resnet18"))
    assert len(m.style.vgg.features) == 7 and m.style.vgg.out_channels == 128


def test_gradients_reach_trainable_parts_only():
    torch.manual_seed(0)
    m = build_saan(ModelConfig(backbone="resnet18", head_hidden=32)).train()
    # the non-local block starts as identity with zero-init norm weights; give it a
    # nudge so gradients flow through θ/φ/g too
    with torch.no_grad():
        m.fusion.norm.weight.fill_(0.1)
    m(torch.randn(4, 3, 64, 64)).sum().backward()
    for name, p in m.named_parameters():
        if name.startswith(("generic.", "style.vgg.")):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_generic_bn_train_mode_faithful_and_frozen_option():
    x = torch.randn(4, 3, 64, 64)
    for freeze, should_change in ((False, True), (True, False)):
        m = build_saan(ModelConfig(backbone="resnet18", freeze_generic_bn=freeze, head_hidden=8))
        m.train()
        assert m.generic.training is not freeze
        before = m.generic.trunk.bn1.running_mean.clone()
        m(x)
        assert (not torch.equal(before, m.generic.trunk.bn1.running_mean)) is should_change
        keys = m.changing_state_dict().keys()
        assert ("generic.trunk.bn1.running_mean" in keys) is should_change
        assert not any(k.startswith("style.vgg.") for k in keys)
        assert "generic.trunk.conv1.weight" not in keys


def test_adain_matches_definition():
    torch.manual_seed(0)
    c, s = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 7, 7) * 3 + 1
    out = adain(c, s)
    flat = out.flatten(2)
    assert torch.allclose(flat.mean(2), s.flatten(2).mean(2), atol=1e-5)
    assert torch.allclose(flat.std(2), s.flatten(2).std(2), rtol=1e-4)


def _resnet18_state(prefix=""):
    from torchvision.models import resnet18
    return {prefix + k: v for k, v in resnet18(weights=None).state_dict().items()}


def _vgg19_state():
    # the features part of torchvision's vgg19 file (same keys), without its big classifier
    return VGGEncoder(cut=37).state_dict()


def test_pretrained_path_strips_prefixes_and_loads(tmp_path, monkeypatch):
    state = _resnet18_state("module.")
    torch.save(state, tmp_path / "ssl.pth")
    torch.save(_vgg19_state(), tmp_path / "vgg19-dcbb9e9d.pth")
    cfg = ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "ssl.pth"), weights_dir=str(tmp_path))
    m = load_pretrained(build_saan(cfg), cfg)
    assert torch.equal(m.generic.trunk.layer3[0].conv1.weight, state["module.layer3.0.conv1.weight"])
    assert torch.equal(m.style.trunk.bn1.running_var, state["module.bn1.running_var"])


def test_partial_state_dict_is_an_error(tmp_path):
    state = _resnet18_state()
    del state["layer2.0.bn1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    cfg = ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "partial.pth"))
    with pytest.raises(WeightsError, match="layer2.0.bn1.weight"):
        load_pretrained(build_saan(cfg), cfg)


def test_missing_weights_names_file_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cfg = ModelConfig(backbone="resnet18", pretrained="imagenet", weights_dir=str(tmp_path / "w"))
    with pytest.raises(WeightsError) as err:
        load_pretrained(build_saan(cfg), cfg)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "w") in msg
    assert str(tmp_path / "th" / "hub" / "checkpoints") in msg and "\n" not in msg
    cfg = ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="nope.pth"):
        load_pretrained(build_saan(cfg), cfg)


def test_imagenet_files_found_in_torch_home(tmp_path, monkeypatch):
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.save(_resnet18_state(), hub / "resnet18-f37072fd.pth")
    vgg = _vgg19_state()
    torch.save(vgg, hub / "vgg19-dcbb9e9d.pth")
    cfg = ModelConfig(backbone="resnet18", pretrained="imagenet")
    m = load_pretrained(build_saan(cfg), cfg)
    assert torch.equal(m.style.vgg.features[5].weight, vgg["features.5.weight"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_own_resnet_is_torchvisions_bit_for_bit(name):
    """model/resnet.py (no torchvision import in training processes) against torchvision's: the
    same keys, the same initial weights from the same seed, the generator left in the same
    place (so a model built after it draws the same), and the same outputs."""
    import torchvision.models

    import model.resnet

    torch.manual_seed(3)
    theirs, after_theirs = getattr(torchvision.models, name)(weights=None), torch.rand(4)
    torch.manual_seed(3)
    ours, after_ours = getattr(model.resnet, name)(), torch.rand(4)
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert torch.equal(after_theirs, after_ours)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(theirs.eval()(x), ours.eval()(x))
    out_theirs = theirs.train()(x).sum()
    out_ours = ours.train()(x).sum()
    out_theirs.backward(), out_ours.backward()
    assert torch.equal(theirs.conv1.weight.grad, ours.conv1.weight.grad)
