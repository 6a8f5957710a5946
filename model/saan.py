"""SAAN: the Style-specific Art Assessment Network (Yi et al., CVPR 2023).

The network as small named modules, torchvision-resnet style: every variant the
paper publishes is a constructor argument (``norm``, ``branches``, ``backbone``),
never a flag inside ``forward()``. docs/saan.md is the specification; the
numbers quoted below are checked by tests/test_model_saan.py.

    image ─┬─ GenericAestheticBranch (ResNet trunk to layer3, frozen) ──────────────┐
           └─ StyleSpecificBranch: ResNet trunk to layer2 (trained)                 │
                                   AdaIN(content=trunk, style=frozen VGG-19) → ReLU │
                                   → MaxPool(3, 2, 1) ─────────────────────── concat
                                                                                    │
                 RegressionHead(pool 2x2 → norm #2 → MLP → sigmoid) ← NonLocalBlock ┘

With ``backbone="resnet50"`` (the paper) the default model has 30,809,537
parameters of which 18,760,513 are trainable. ``backbone="resnet18"`` is a cheap
variant for demos and tests (see StyleSpecificBranch for how its VGG is cut).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from model.resnet import resnet18, resnet50

from model.config import ModelConfig

# Channel counts of the two ResNet trunks, per backbone: (layer2, layer3).
TRUNK_CHANNELS = {"resnet50": (512, 1024), "resnet18": (128, 256)}
# VGG-19 "E" configuration (torchvision's layout, so state-dict keys match
# torchvision's vgg19 ``features.N.*``). "M" is a 2x2 max pool.
VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M"]
# How much of vgg19.features the style branch keeps, per backbone: the cut must
# give as many channels as the content trunk's layer2 (AdaIN pairs channels).
#   resnet50: features[:21] = conv1_1 … relu4_1, 512 channels (the paper).
#   resnet18: features[:7]  = conv1_1 … relu2_1, 128 channels.
VGG_CUT = {"resnet50": 21, "resnet18": 7}

NormFactory = Callable[[int], nn.Module]


def batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def group_norm(channels: int) -> nn.Module:
    # 16 groups as the paper's GN variants; every channel count used here divides by 16.
    return nn.GroupNorm(16, channels)


def norm_factories(norm: str) -> tuple[NormFactory, NormFactory]:
    """(norm layer #1 in the non-local block, norm layer #2 in the head) for a variant."""
    if norm == "bn":
        return batch_norm, batch_norm
    if norm == "gn":
        return group_norm, batch_norm
    if norm == "gn-all":
        return group_norm, group_norm
    raise ValueError(f"unknown norm {norm!r} (expected bn, gn or gn-all)")


class ResNetTrunk(nn.Module):
    """A ResNet (model/resnet.py, torchvision's layout) cut after ``layer{depth}``.

    Submodules keep torchvision's names (conv1, bn1, layer1, ...) so a torchvision
    or self-supervised ResNet state dict loads by key without renaming.
    """

    def __init__(self, backbone: str = "resnet50", depth: int = 3):
        super().__init__()
        full = {"resnet50": resnet50, "resnet18": resnet18}[backbone]()
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        self.layers = [f"layer{i}" for i in range(1, depth + 1)]
        for name in self.layers:
            self.add_module(name, getattr(full, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layers:
            x = getattr(self, name)(x)
        return x


class VGGEncoder(nn.Module):
    """VGG-19 (no BN) ``features[:cut]``: the frozen style encoder of AdaIN.

    Built directly rather than from torchvision.models.vgg19 so that its 100M-parameter
    classifier is never allocated; weights are initialised as torchvision does.
    """

    def __init__(self, cut: int = 21):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                conv = nn.Conv2d(in_channels, item, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers += [conv, nn.ReLU(inplace=True)]
                in_channels = item
        self.features = nn.Sequential(*layers[:cut])
        self.out_channels = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def channel_stats(x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and channel mean and unbiased std (+ ``eps``) over H·W, shaped (B, C, 1, 1)."""
    return (x.mean(dim=(2, 3), keepdim=True),
            x.flatten(2).std(dim=2, unbiased=True)[..., None, None] + eps)


def adain_with(content: torch.Tensor, s_mean: torch.Tensor, s_std: torch.Tensor,
               eps: float = 1e-6) -> torch.Tensor:
    """AdaIN given the style's statistics (channel_stats of the style map)."""
    c_mean, c_std = channel_stats(content, eps)
    return s_std * (content - c_mean) / c_std + s_mean


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Adaptive instance normalisation: give ``content`` the per-channel mean/std of ``style``.

    Statistics are global over H·W per sample and channel (unbiased std, ``eps``
    added to the std as the paper's code), so the two maps may differ in size.
    """
    return adain_with(content, *channel_stats(style, eps), eps)


class GenericAestheticBranch(nn.Module):
    """ResNet trunk to layer3 (stride 16), frozen: 1024 channels for ResNet-50.

    Frozen means no gradient; in the paper's training its BatchNorm layers still
    run in train mode and update running statistics (SAAN.train() decides that).
    """

    def __init__(self, backbone: str = "resnet50"):
        super().__init__()
        self.trunk = freeze(ResNetTrunk(backbone, depth=3))
        self.out_channels = TRUNK_CHANNELS[backbone][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Nothing upstream needs a gradient, so skip building the graph.
        with torch.no_grad():
            return self.trunk(x)


class StyleSpecificBranch(nn.Module):
    """Trained ResNet trunk to layer2, restyled by AdaIN with a frozen VGG-19's statistics.

    For ``backbone="resnet18"`` the trunk's layer2 has 128 channels, so the VGG is
    cut at relu2_1 (features[:7], 128 channels) instead of relu4_1: AdaIN pairs
    channels one to one and needs equal counts. The VGG map is then at stride 2,
    not 8, but AdaIN only uses its global per-channel mean and std, so the stride
    mismatch does not matter, and the shallow cut is also far cheaper to run.
    """

    def __init__(self, backbone: str = "resnet50"):
        super().__init__()
        self.trunk = ResNetTrunk(backbone, depth=2)
        self.vgg = freeze(VGGEncoder(VGG_CUT[backbone]))
        self.out_channels = TRUNK_CHANNELS[backbone][0]
        assert self.vgg.out_channels == self.out_channels
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # stride 8 -> 16

    def style_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """AdaIN's style statistics of ``x``: the frozen VGG map's channel_stats, (B, C, 1, 1) each.

        They depend only on the image (and its flip), so model/style_cache.py
        computes them once with this very method and forward() takes them back.
        """
        # Frozen encoder in inference mode: no graph, no version counters, and
        # its map is freed as soon as its statistics are taken. Only the (B, C)
        # statistics leave the block; cloning makes them ordinary tensors that
        # autograd may save for the backward pass of AdaIN.
        with torch.inference_mode():
            s_mean, s_std = channel_stats(self.vgg(x))
        return s_mean.clone(), s_std.clone()

    def forward(self, x: torch.Tensor,
                style: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``style``: precomputed (mean, std) of style_stats(x); None runs the VGG here."""
        s_mean, s_std = self.style_stats(x) if style is None else style
        return self.pool(self.relu(adain_with(self.trunk(x), s_mean, s_std)))


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) with a residual connection.

    θ, φ, g are 1x1 convs to ``channels // 2``; φ and g are max-pooled 2x2 (4x
    fewer keys); the affinity θᵀφ is not scaled. The output projection is followed
    by ``norm`` whose affine weights start at zero, so the block starts as identity.
    """

    def __init__(self, channels: int, norm: NormFactory = batch_norm):
        super().__init__()
        inner = channels // 2
        self.theta = nn.Conv2d(channels, inner, kernel_size=1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inner, kernel_size=1), nn.MaxPool2d(2))
        self.g = nn.Sequential(nn.Conv2d(channels, inner, kernel_size=1), nn.MaxPool2d(2))
        self.out = nn.Conv2d(inner, channels, kernel_size=1)
        self.norm = norm(channels)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)   # B, HW, C'
        key = self.phi(x).flatten(2)                       # B, C', HW/4
        value = self.g(x).flatten(2).transpose(1, 2)       # B, HW/4, C'
        attention = torch.softmax(query @ key, dim=-1)     # B, HW, HW/4
        y = (attention @ value).transpose(1, 2).reshape(b, -1, h, w)
        return self.norm(self.out(y)) + x


class RegressionHead(nn.Module):
    """Pool to 2x2 → norm #2 → Linear → ReLU → Dropout → Linear(1) → sigmoid (score / 10)."""

    def __init__(self, channels: int, hidden: int = 2048, dropout: float = 0.5,
                 norm: NormFactory = batch_norm):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.norm = norm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels * 4, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        nn.init.normal_(self.norm.weight, 1.0, 0.02)
        nn.init.zeros_(self.norm.bias)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.pool(x)).flatten(1)  # channel-major, C*4
        return torch.sigmoid(self.mlp(x)).squeeze(1)


class SAAN(nn.Module):
    """The full network; ``forward(images) -> (B,)`` predictions of score / 10.

    ``branches``: "both" (the paper), "no_style" or "no_generic" (the paper's
    ablations; the fusion and head take the remaining branch's channels).
    ``freeze_generic_bn``: keep the generic branch's BatchNorm in eval mode while
    training (the paper lets its running statistics drift; see train()).
    """

    def __init__(self, backbone: str = "resnet50", norm: str = "bn", branches: str = "both",
                 head_hidden: int = 2048, dropout: float = 0.5, freeze_generic_bn: bool = False):
        super().__init__()
        if branches not in ("both", "no_style", "no_generic"):
            raise ValueError(f"unknown branches {branches!r}")
        norm1, norm2 = norm_factories(norm)
        self.generic = GenericAestheticBranch(backbone) if branches != "no_generic" else None
        self.style = StyleSpecificBranch(backbone) if branches != "no_style" else None
        channels = sum(b.out_channels for b in (self.style, self.generic) if b is not None)
        self.fusion = NonLocalBlock(channels, norm1)
        self.head = RegressionHead(channels, head_hidden, dropout, norm2)
        self.freeze_generic_bn = freeze_generic_bn

    def forward(self, x: torch.Tensor,
                style: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``style``: the style branch's precomputed VGG statistics (model/style_cache.py), or None."""
        parts = []
        if self.style is not None:
            parts.append(self.style(x, style))
        if self.generic is not None:
            parts.append(self.generic(x))
        return self.head(self.fusion(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]))

    def train(self, mode: bool = True) -> "SAAN":
        super().train(mode)
        if self.freeze_generic_bn and self.generic is not None:
            self.generic.eval()  # running statistics stay as loaded
        return self

    # ---- what a checkpoint must hold ------------------------------------
    def frozen_state_keys(self) -> set[str]:
        """State-dict keys that training never changes (not saved in checkpoints).

        Frozen parameters (VGG, generic branch), plus the generic branch's BN
        buffers when they are frozen too. In the faithful mode those running
        statistics change every step, so they are saved.
        """
        keys = {name for name, p in self.named_parameters() if not p.requires_grad}
        if self.generic is not None and self.freeze_generic_bn:
            keys |= {f"generic.{name}" for name, _ in self.generic.named_buffers()}
        return keys

    def changing_state_dict(self) -> dict[str, torch.Tensor]:
        frozen = self.frozen_state_keys()
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def load_changing_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what changing_state_dict() saved; every changing tensor must be present."""
        result = self.load_state_dict(state, strict=False)
        missing = set(result.missing_keys) - self.frozen_state_keys()
        if missing or result.unexpected_keys:
            raise KeyError(f"model state mismatch: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]}")


def build_saan(cfg: ModelConfig) -> SAAN:
    """The SAAN variant ``cfg`` describes, randomly initialised (see model/weights.py to load)."""
    return SAAN(backbone=cfg.backbone, norm=cfg.norm, branches=cfg.branches,
                head_hidden=cfg.head_hidden, dropout=cfg.dropout,
                freeze_generic_bn=cfg.freeze_generic_bn)


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
