"""Pretrained weights, from local files only.

``ModelConfig.pretrained`` is one of:

- ``"none"``: everything random, the VGG style encoder included. No weights ship
  with this package (licences, size), so tests and the synthetic demo run this way.
- ``"imagenet"``: torchvision's own files, found by their published names in
  ``ModelConfig.weights_dir`` and then ``$TORCH_HOME/hub/checkpoints`` (default
  ``~/.cache/torch/hub/checkpoints``), i.e. wherever torchvision once downloaded them.
- a path to a ResNet state dict (e.g. a self-supervised ResNet-50). ``module.`` /
  ``model.`` prefixes are stripped, and every conv and BN tensor of the kept trunks
  must load. The paper's own loader used ``strict=False`` with unstripped keys and
  so silently loaded nothing; here a partial load is an error. The VGG still
  comes from torchvision's ImageNet file, as in the paper.

Nothing is ever downloaded: torchvision's ``weights=`` download path is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from model.config import ModelConfig
from model.errors import WeightsError
from model.saan import SAAN, ResNetTrunk

# torchvision's file names; for ResNet-50 both the V1 and V2 files are accepted.
IMAGENET_FILES = {
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "resnet18": ("resnet18-f37072fd.pth",),
    "vgg19": ("vgg19-dcbb9e9d.pth",),
}
STRIP_PREFIXES = ("module.", "model.")


def search_dirs(weights_dir: str = "") -> list[Path]:
    dirs = [Path(weights_dir).expanduser()] if weights_dir else []
    torch_home = os.environ.get("TORCH_HOME", "~/.cache/torch")
    dirs.append(Path(torch_home).expanduser() / "hub" / "checkpoints")
    return dirs


def find_imagenet_file(arch: str, weights_dir: str = "") -> Path:
    """The first of torchvision's files for ``arch`` in the search dirs, else WeightsError."""
    names, dirs = IMAGENET_FILES[arch], search_dirs(weights_dir)
    for directory in dirs:
        for name in names:
            if (directory / name).is_file():
                return directory / name
    raise WeightsError(f"{' or '.join(names)}: ImageNet weights for {arch} not found; looked in "
                       f"{', '.join(str(d) for d in dirs)} (set model.weights_dir, or "
                       f"model.pretrained = \"none\")")


# Files read in this process, by (path, size, mtime): a worker building a
# model per trial reads each weight file once. Values are only ever copied
# from (load_state_dict), never changed. At most two files (a ResNet and VGG-19).
_READ: dict[tuple, dict[str, torch.Tensor]] = {}
_READ_MAX = 2


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _READ:
        if len(_READ) >= _READ_MAX:
            _READ.pop(next(iter(_READ)))
        _READ[key] = _read_state_dict(path)
    return _READ[key]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # common wrapper of training scripts
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {strip_prefix(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def strip_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_resnet_trunk(trunk: ResNetTrunk, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy every tensor of ``trunk`` from ``state``; any missing or misshapen one is an error."""
    own = trunk.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{source}: {len(missing)} of the trunk's tensors missing "
                           f"(e.g. {missing[0]!r}); is this a {type(trunk).__name__} of the "
                           f"configured backbone?")
    for key, value in own.items():
        if key in state and state[key].shape != value.shape:
            raise WeightsError(f"{source}: {key}: shape {tuple(state[key].shape)}, "
                               f"expected {tuple(value.shape)} (wrong backbone?)")
    trunk.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def load_vgg(model: SAAN, weights_dir: str) -> None:
    if model.style is None:
        return
    path = find_imagenet_file("vgg19", weights_dir)
    state = read_state_dict(path)
    own = model.style.vgg.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"{path}: {missing[0]!r} missing; expected torchvision's vgg19 file")
    model.style.vgg.load_state_dict({k: state[k] for k in own})


def load_pretrained(model: SAAN, cfg: ModelConfig) -> SAAN:
    """Load ``cfg.pretrained`` into ``model`` in place (see module docstring)."""
    if cfg.pretrained == "none":
        return model
    if cfg.pretrained == "imagenet":
        source = find_imagenet_file(cfg.backbone, cfg.weights_dir)
    else:
        source = Path(cfg.pretrained).expanduser()
    state = read_state_dict(source)
    for trunk in (model.generic.trunk if model.generic else None,
                  model.style.trunk if model.style else None):
        if trunk is not None:
            load_resnet_trunk(trunk, state, str(source))
    load_vgg(model, cfg.weights_dir)
    return model
