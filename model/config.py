"""Every knob of a SAAN training run, in one config object (nanoGPT style).

A run config has three sections, ``[data]``, ``[model]`` and ``[trainer]``, each
a dataclass below. The same sections appear in study files (hpo/ adds its own
``[study]``, ``[grid]`` and ``[scheduler]`` around them) and in the file that
``saan-hpo export`` writes, so whatever a study found can be trained again with
``saan-hpo train``.

Validation is strict because a typo in a key silently falls back to a default
otherwise, and a researcher finds out days later: unknown keys, wrong types and
values outside their range raise :class:`ConfigError`, whose message is one line
naming the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from model.errors import SaanError


class ConfigError(SaanError, ValueError):
    """A config or study file is malformed. ``str()`` is one line: file, key, expectation."""

    def __init__(self, source: str, key: str, expected: str):
        self.source, self.key, self.expected = source, key, expected
        super().__init__(f"{source}: {key}: {expected}")


def _choice(*choices: str) -> dict:
    return {"choices": choices}


def _positive() -> dict:
    return {"positive": True}


def _non_negative() -> dict:
    return {"non_negative": True}


def _speed_only(**more) -> dict:
    # Settings that change how fast a run goes, not what it computes (results equal
    # within float tolerance). RunConfig.to_mapping() writes them only when they
    # differ from their default, so every study and checkpoint written before
    # they existed keeps its identity (hpo's spec hash) and still loads.
    return {"speed_only": True, **more}


@dataclass
class DataConfig:
    """Where BAID lives and how images reach the network."""

    # BAID folder: images/<name> and dataset/{train,val,test}_set.csv.
    root: str = ""
    # Generate a synthetic BAID-shaped folder at ``root`` when it is missing.
    synthetic: bool = False
    synthetic_n: int = field(default=400, metadata=_positive())
    synthetic_size: int = field(default=96, metadata=_positive())
    synthetic_seed: int = 0
    # Validation and test images each (the rest of synthetic_n trains); 0: 15 % each. A
    # validation split much larger than 15 % of a small training set keeps a study's SRCC
    # from moving by whole rank swaps (studies/demo.toml: 200 train, 400 val, 400 test).
    synthetic_val_n: int = field(default=0, metadata=_non_negative())
    # The paper resizes to 224x224 without keeping the aspect ratio or cropping.
    image_size: int = field(default=224, metadata=_positive())
    # Used only when dataset/val_set.csv is absent: carved from train with this seed.
    val_fraction: float = field(default=0.1, metadata=_positive())
    split_seed: int = 0
    # Decode-once cache of resized uint8 images; "" means <root>/.saan-cache.
    cache: bool = True
    cache_dir: str = ""
    # A missing or corrupt image: "skip" (counted, warned) or "fatal" (ImageError).
    on_bad_image: str = field(default="skip", metadata=_choice("skip", "fatal"))
    num_workers: int = field(default=0, metadata=_non_negative())
    # The frozen VGG's style statistics (AdaIN's per-channel mean and std) computed
    # once per image and flip and stored beside the pixel cache (model/style_cache.py)
    # instead of running the VGG every step. Needs cache = true; false: the VGG runs.
    style_cache: bool = field(default=True, metadata=_speed_only())
    # Hold a split's uint8 cache as one tensor on the training device and gather
    # batches there (model/device_data.py): "auto" on CUDA when it fits in
    # device_cache_fraction of the free device memory; "on" also on CPU (host
    # memory counts as the device's); "off" reads batches from the memory map.
    device_cache: str = field(default="auto", metadata=_speed_only(**_choice("auto", "on", "off")))
    device_cache_fraction: float = field(default=0.5, metadata=_speed_only(positive=True))


@dataclass
class ModelConfig:
    """Which SAAN variant to build; see model/saan.py and docs/saan.md."""

    backbone: str = field(default="resnet50", metadata=_choice("resnet50", "resnet18"))
    norm: str = field(default="bn", metadata=_choice("bn", "gn", "gn-all"))
    branches: str = field(default="both", metadata=_choice("both", "no_style", "no_generic"))
    # "none", "imagenet" (torchvision's files under weights_dir or TORCH_HOME), or a path.
    pretrained: str = "none"
    weights_dir: str = ""
    # The paper's generic branch is frozen but its BatchNorm keeps updating
    # running statistics; True freezes those statistics too.
    freeze_generic_bn: bool = False
    head_hidden: int = field(default=2048, metadata=_positive())
    dropout: float = field(default=0.5, metadata=_non_negative())


@dataclass
class TrainerConfig:
    """Optimisation, as the paper's code does it unless told otherwise."""

    lr: float = field(default=1e-5, metadata=_positive())
    batch_size: int = field(default=64, metadata=_positive())
    epochs: int = field(default=100, metadata=_positive())
    # "paper": base*0.1**(epoch//10) up to epoch 40 then base*1e-4, applied after
    # each epoch (so one epoch late); "step": the same decay applied on time;
    # "constant": no decay.
    schedule: str = field(default="paper", metadata=_choice("paper", "step", "constant"))
    step_size: int = field(default=10, metadata=_positive())
    gamma: float = field(default=0.1, metadata=_positive())
    loss: str = field(default="mse", metadata=_choice("mse", "huber"))
    huber_delta: float = field(default=1.0, metadata=_positive())
    beta1: float = field(default=0.5, metadata=_non_negative())
    beta2: float = field(default=0.999, metadata=_non_negative())
    weight_decay: float = field(default=5e-4, metadata=_non_negative())
    seed: int = 0
    # "auto" picks cuda when available; "cpu", "cuda", "cuda:1" are taken as given.
    device: str = "auto"
    # Deterministic algorithms on CUDA (slower). CPU training is always
    # deterministic, with a fixed thread count per trial (model/train.py).
    deterministic: bool = False
    # bf16 autocast applies on CUDA only (CPU trains in fp32); channels_last on both.
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    eval_batch_size: int = field(default=0, metadata=_non_negative())


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str = "<config>",
                     allow_extra_sections: tuple[str, ...] = ()) -> "RunConfig":
        """Build and validate from parsed TOML. Relative data paths stay as written."""
        for name in raw:
            if name not in SECTIONS and name not in allow_extra_sections:
                raise ConfigError(source, name, "unknown section (expected data, model, trainer)")
        parts = {}
        for name, klass in SECTIONS.items():
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                raise ConfigError(source, name, "expected a table")
            parts[name] = build_section(klass, section, source, name)
        data = parts["data"]
        if data.synthetic_val_n and not 2 * data.synthetic_val_n < data.synthetic_n:
            raise ConfigError(source, "data.synthetic_val_n",
                              f"expected fewer than half of data.synthetic_n ({data.synthetic_n}) "
                              f"so that some images train, got {data.synthetic_val_n}")
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_mapping(read_toml(path), source=str(path))

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """Every field, except speed-only ones left at their default (see _speed_only)."""
        mapping = {}
        for name in SECTIONS:
            section = getattr(self, name)
            mapping[name] = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
                             if not (f.metadata.get("speed_only") and getattr(section, f.name) == f.default)}
        return mapping

    def replace(self, **overrides: Any) -> "RunConfig":
        """A copy with fields changed by bare name (``lr=1e-3``) or dotted (``model.norm``)."""
        mapping = self.to_mapping()
        for key, value in overrides.items():
            section, name = resolve_field(key)
            mapping[section][name] = value
        return RunConfig.from_mapping(mapping, source="<overrides>")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or unreadable file (a folder, say) or a syntax error
    becomes one ConfigError line."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "-", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "-", "is a folder (expected a TOML file)") from None
    except OSError as err:
        raise ConfigError(str(path), "-", f"cannot read the file ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "-", "not valid TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), "-", f"not valid TOML ({err})") from None


def resolve_field(key: str) -> tuple[str, str]:
    """Map ``lr`` or ``trainer.lr`` to ("trainer", "lr"). Bare names are unique across sections."""
    if "." in key:
        section, name = key.split(".", 1)
        if section in SECTIONS and name in _field_names(SECTIONS[section]):
            return section, name
        raise KeyError(key)
    owners = [s for s, k in SECTIONS.items() if key in _field_names(k)]
    if len(owners) != 1:
        raise KeyError(key)
    return owners[0], key


def _field_names(klass: type) -> set[str]:
    return {f.name for f in dataclasses.fields(klass)}


def check_value(f: dataclasses.Field, value: Any, source: str, key: str) -> Any:
    """Type- and range-check one value against its dataclass field; return it coerced."""
    kind = type(f.default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(source, key, f"expected a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(source, key, f"expected one of {', '.join(meta['choices'])}, got {value!r}")
    if meta.get("positive") and not value > 0:
        raise ConfigError(source, key, f"expected a value > 0, got {value!r}")
    if meta.get("non_negative") and not value >= 0:
        raise ConfigError(source, key, f"expected a value >= 0, got {value!r}")
    return value


def build_section(klass: type, section: Mapping[str, Any], source: str, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(klass)}
    values = {}
    for key, value in section.items():
        if key not in fields:
            raise ConfigError(source, f"{prefix}.{key}",
                              f"unknown key (known: {', '.join(sorted(fields))})")
        values[key] = check_value(fields[key], value, source, f"{prefix}.{key}")
    return klass(**values)


def field_of(key: str) -> dataclasses.Field:
    section, name = resolve_field(key)
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}[name]


def dump_toml(mapping: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Write sections of scalars (and flat lists) as TOML; enough for configs and exports."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section, values in mapping.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
