"""``--data synthetic``: any study, shrunk to a run small enough for CI or a laptop.

The published studies (studies/variants.toml, ablation.toml, reproduce.toml,
blog-grid.toml) train a ResNet-50 SAAN on BAID for days. ``synthetic_override``
keeps what the study *asks* -- its grid, objective, scheduler kind and every
trainer setting (lr, schedule, loss, betas, weight decay) -- and swaps what
makes it expensive:

- ``[data]``: a tiny synthetic BAID-shaped folder (``SYNTHETIC_N`` images of
  ``SYNTHETIC_SIZE`` px, resized to ``IMAGE_SIZE``), generated on first use
  under ``runs/<name>-synthetic/data`` (relative to where the command runs);
- ``[model]``: the resnet18 SAAN with a ``HEAD_HIDDEN``-wide head and random
  init (no pretrained files are needed); the grid's model axes (norm,
  branches) still vary as in the study;
- epochs: by default the study's own ladder (every rung, the same final
  epoch), so the twin makes the same kind of decisions; ``epochs`` caps it:
  ``kind = "none"`` then trains every configuration for ``epochs``, the
  halving kinds keep eta, schedule and min_epochs but only as many rungs as
  fit in ``epochs`` (at least one).

The result is another study: its name gets the ``-synthetic`` suffix (or the
one given, to keep twins with different caps apart) and its
spec hash differs from the BAID study's, so the two never share a storage row
even in the same database. Default storage and artifact paths follow the new
name; paths the study file set explicitly are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import ConfigError, dump_toml
from hpo.scheduling.space import space_identity
from hpo.scheduling.spec import StudySpec, default_artifacts, default_storage, spec_from_mapping

SUFFIX = "-synthetic"
SYNTHETIC_N = 80
SYNTHETIC_SIZE = 32
IMAGE_SIZE = 32
HEAD_HIDDEN = 64


def synthetic_name(name: str) -> str:
    return name if name.endswith(SUFFIX) else name + SUFFIX


def twin_epochs(spec: StudySpec, cap: int | None = None) -> int:
    """Epochs per configuration of the twin: the study's final boundary, at most ``cap``."""
    if cap is None:
        return spec.final_epoch
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ConfigError(spec.source, "--epochs", f"expected an integer >= 1, got {cap!r}")
    return min(cap, spec.final_epoch)


def synthetic_mapping(spec: StudySpec, epochs: int | None = None,
                      name: str | None = None) -> dict[str, dict[str, Any]]:
    """The study file of the small synthetic twin of ``spec``, as parsed TOML.

    ``epochs`` caps the epochs per configuration (default: the study's ladder
    in full); ``name`` replaces ``<name>-synthetic``.
    """
    epochs = twin_epochs(spec, epochs)
    name = name or synthetic_name(spec.name)
    study: dict[str, Any] = {"name": name, "metric": spec.metric, "direction": spec.direction,
                             "lease_seconds": spec.lease_seconds}
    if spec.description:
        study["description"] = f"{spec.description} (synthetic data, {epochs} epochs)"
    # An explicitly configured storage (a shared PostgreSQL) is kept: the new
    # name keeps the twin apart. Defaults follow the new name.
    study["storage"] = (default_storage(name) if spec.storage == default_storage(spec.name)
                        else spec.storage)
    study["artifacts"] = (default_artifacts(name) if spec.artifacts == default_artifacts(spec.name)
                          else spec.artifacts)

    run = spec.run.to_mapping()
    run["data"] = {"root": str(Path("runs") / name / "data"), "synthetic": True,
                   "synthetic_n": SYNTHETIC_N, "synthetic_size": SYNTHETIC_SIZE,
                   "synthetic_seed": run["data"]["synthetic_seed"], "image_size": IMAGE_SIZE,
                   "split_seed": run["data"]["split_seed"], "on_bad_image": "fatal"}
    run["model"].update(backbone="resnet18", pretrained="none", weights_dir="",
                        head_hidden=HEAD_HIDDEN)
    run["trainer"]["epochs"] = epochs

    # the identity's scheduler table: settings a kind does not take are left out
    scheduler = spec.policy.within(spec.identity()["scheduler"], epochs)
    points = ({"space": space_identity(spec.space)} if spec.sampled
              else {"grid": {k: list(v) for k, v in spec.grid.items()}})
    return {"study": study, **points, "scheduler": scheduler, **run}


def synthetic_override(spec: StudySpec, epochs: int | None = None,
                       name: str | None = None) -> StudySpec:
    """``spec`` on tiny synthetic data with a small SAAN, named ``<name>-synthetic``."""
    return spec_from_mapping(synthetic_mapping(spec, epochs, name),
                             source=f"{spec.source} (--data synthetic)")


def synthetic_study_text(spec: StudySpec, epochs: int | None = None, name: str | None = None) -> str:
    """The synthetic twin as a study file: launching it equals ``launch --data synthetic``."""
    header = (f"{spec.name} ({spec.source}) on synthetic data, {twin_epochs(spec, epochs)} epochs: "
              "written by hpo.scheduling.synthetic_twin.synthetic_study_text")
    mapping = synthetic_mapping(spec, epochs, name)
    points = "space" if "space" in mapping else "grid"
    mapping[points] = {_toml_key(k): v for k, v in mapping[points].items()}
    return dump_toml(mapping, header=header)


def _toml_key(key: str) -> str:
    return f'"{key}"' if "." in key else key
