"""What a study worker's epoch boundary blocks: checkpoint and record in the background vs waited for.

    python bench/epoch_boundary.py [--backbone resnet50] [--head-hidden 2048] [--device cpu]
                                   [--epochs 5] [--epoch-seconds 2]

A real worker (hpo/service/worker.py) on a throwaway SQLite study of one
configuration, whose run is full SAAN's trainer (random init, one optimizer
step so Adam's moments exist) with its training replaced by a sleep of
--epoch-seconds (what a GPU epoch gives the writer thread). Per epoch it times
the worker's on_epoch_end, which is all of the boundary's cost outside
validation: Optuna report, host snapshot, checkpoint write and record.

- background: what the worker does (write + record on its writer thread while
  the next epoch "trains");
- waited for: the same, then waiting for the write and record before the next
  epoch, as the worker did before (the old, synchronous order).

Prints the median blocking seconds of each and their ratio. A figure, never an
assertion; validation is not included (see bench/trainer.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SAAN_HPO_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
import torch  # noqa: E402

from hpo.scheduling.spec import load_spec  # noqa: E402
from hpo.service.study import open_or_create  # noqa: E402
from hpo.service.trial_runs import SaanRun  # noqa: E402
from hpo.service.worker import Worker  # noqa: E402

STUDY = """
[study]
name = "boundary"
metric = "srcc"
storage = "sqlite:///{tmp}/study.db"
artifacts = "{tmp}/artifacts"

[grid]
lr = [1e-4]

[scheduler]
kind = "none"
epochs = {epochs}

[data]
root = "{tmp}/baid"
synthetic = true
synthetic_n = 20
synthetic_size = 24
image_size = 32

[model]
backbone = "{backbone}"
head_hidden = {head_hidden}
pretrained = "none"

[trainer]
device = "{device}"
batch_size = 4
"""


def boundary_run(epoch_seconds: float, blocked: list[float], wait_for_write: bool):
    """A SaanRun that sleeps instead of training and times each epoch boundary."""

    class BoundaryRun(SaanRun):
        worker = None  # set below; its writer thread is what the waited-for mode waits on

        def fit(self, until_epoch, on_epoch_end=None, should_abort=None):
            trainer = self.trainer
            x = torch.randn(2, 3, 32, 32, device=trainer.device).contiguous(memory_format=trainer.memory_format)
            trainer.model(x).float().mean().backward()
            trainer.optimizer.step()  # Adam's moments exist: a full-size checkpoint
            while trainer.epoch < until_epoch:
                time.sleep(epoch_seconds)  # the epoch's compute; the writer thread runs meanwhile
                trainer.epoch += 1
                metrics = {"srcc": 0.5, "plcc": 0.5, "accuracy": 0.5, "mse": 0.1}
                start = time.perf_counter()
                going = on_epoch_end(trainer.epoch, metrics)
                if wait_for_write:  # one writer thread, in order: this returns once it is idle
                    BoundaryRun.worker.writer.submit(lambda: None).result()
                blocked.append(time.perf_counter() - start)
                if going is False:
                    break

    return BoundaryRun


def measure(args, tmp: Path, wait_for_write: bool) -> list[float]:
    study = tmp / "boundary.toml"
    study.write_text(STUDY.format(tmp=tmp, epochs=args.epochs, backbone=args.backbone,
                                  head_hidden=args.head_hidden, device=args.device))
    spec = load_spec(study)
    open_or_create(spec, spec.storage)
    blocked: list[float] = []
    run_class = boundary_run(args.epoch_seconds, blocked, wait_for_write)

    worker = Worker.attach(spec, spec.storage, lambda params: run_class(spec, params, args.device),
                           poll_seconds=0.0)
    run_class.worker = worker
    try:
        assert worker.run() == 0
    finally:
        worker.close()
    return blocked[1:]  # the first boundary also pays one-time set-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet50", choices=("resnet50", "resnet18"))
    p.add_argument("--head-hidden", type=int, default=2048)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--epoch-seconds", type=float, default=2.0)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {}
    for label, wait in (("waited for (old order)", True), ("background", False)):
        with tempfile.TemporaryDirectory(prefix="saan-boundary-") as tmp:
            results[label] = statistics.median(measure(args, Path(tmp), wait))
    print(f"full SAAN ({args.backbone}, head {args.head_hidden}) on {args.device}, "
          f"{args.epochs} epochs of {args.epoch_seconds:g} s; median seconds the boundary blocks:")
    for label, seconds in results.items():
        print(f"  {label:24s} {seconds:7.3f}")
    old, new = results["waited for (old order)"], results["background"]
    print(f"boundary: waited {old:.3f} s -> background {new:.3f} s ({old / new:.1f}x less)")


if __name__ == "__main__":
    main()
