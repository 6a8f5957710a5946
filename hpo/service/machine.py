"""Where things are on the machine a worker runs on, never taken from another machine.

A study stored by a launcher on one machine holds that machine's paths
(``data.root``, ``data.cache_dir``, ``model.weights_dir``, its artifact store,
``trainer.device``). A worker that serves a storage rather than a study file
takes them from its own options, then its environment:

==========================  =========================  ==========================================
option                      environment                default
==========================  =========================  ==========================================
``--data-root DIR``         ``SAAN_HPO_DATA_ROOT``     none: a study on real data is refused
``--cache-dir DIR``         ``SAAN_HPO_CACHE_DIR``     ``<data root>/.saan-cache``
``--weights-dir DIR``       ``SAAN_HPO_WEIGHTS_DIR``   ``$TORCH_HOME/hub/checkpoints``
``--artifacts DIR``         ``SAAN_HPO_ARTIFACTS``     the study's stored store (same layout)
``--device DEV``            ``SAAN_HPO_DEVICE``        ``auto``
==========================  =========================  ==========================================

``--artifacts DIR`` is the fleet's shared checkpoint store, one directory for
every study (checkpoint ids start with the study's name), as ``saan-hpo launch
... --artifacts DIR`` uses it. Without it a worker uses the study's stored
store path, which suits workers that share the launcher's filesystem layout
(one host, or the same mount and working directory everywhere). Synthetic
studies (``data.synthetic = true``) generate their data under
``runs/<study>/data`` in the worker's working directory and need no data root.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from model.errors import SaanError
from hpo.scheduling.spec import StudySpec

ENVIRONMENT = {"data_root": "SAAN_HPO_DATA_ROOT", "cache_dir": "SAAN_HPO_CACHE_DIR",
               "weights_dir": "SAAN_HPO_WEIGHTS_DIR", "artifacts": "SAAN_HPO_ARTIFACTS",
               "device": "SAAN_HPO_DEVICE"}


class MissingDataRoot(SaanError):
    """A study trains on a dataset this worker was not told the place of."""


@dataclass(frozen=True)
class MachinePaths:
    data_root: str = ""
    cache_dir: str = ""
    weights_dir: str = ""
    artifacts: str = ""
    device: str = ""
    trains: bool = True  # False for a worker replaying recorded curves: it reads no data

    @classmethod
    def from_options(cls, options: Mapping[str, str | None],
                     environ: Mapping[str, str] = os.environ) -> "MachinePaths":
        """Each field from its option when given, else its environment variable, else empty."""
        return cls(**{name: options.get(name) or environ.get(env, "")
                      for name, env in ENVIRONMENT.items()})

    def needs_data_root(self, spec: StudySpec) -> bool:
        return self.trains and not spec.run.data.synthetic and not self.data_root

    def check(self, spec: StudySpec, storage_shown: str) -> None:
        """One clear error when this machine lacks what ``spec`` needs to train here."""
        if self.needs_data_root(spec):
            raise MissingDataRoot(
                f"storage {storage_shown}: study {spec.name!r} trains on data "
                f"(stored data.root {spec.run.data.root!r} is another machine's path): give "
                f"--data-root DIR or set {ENVIRONMENT['data_root']} on this worker")
        if (self.trains and self.data_root and not spec.run.data.synthetic
                and not Path(self.data_root).is_dir()):
            raise MissingDataRoot(f"--data-root / {ENVIRONMENT['data_root']}: {self.data_root}: "
                                  "no such folder on this machine")

    def apply(self, spec: StudySpec) -> StudySpec:
        """``spec`` with this machine's paths in place of the stored ones."""
        data = {"root": (str(Path("runs") / spec.name / "data") if spec.run.data.synthetic
                         else self.data_root), "cache_dir": self.cache_dir}
        run = spec.run.replace(**{f"data.{k}": v for k, v in data.items()},
                               **{"model.weights_dir": self.weights_dir,
                                  "trainer.device": self.device or "auto"})
        artifacts = self.artifacts or spec.artifacts
        return dataclasses.replace(spec, run=run, artifacts=artifacts)
