"""Epochs per second of one trial trained alone and data-parallel on 2 gloo ranks (issue 20).

    python bench/data_parallel.py [--epochs 3] [--images 480]

The trial is studies/reproduce.toml's (lr 1e-5, batch 64, the paper's schedule) on its
synthetic twin (hpo/scheduling/synthetic_twin.py: resnet18 SAAN, 32 px), with ``--images``
synthetic images so that an epoch is a few global batches. Each run starts fresh
processes (bench/gang_rank.py); the first epoch, which builds caches, is left out of the
rate. On a 2-core machine the two ranks share the two cores that one process's data
loading and validation also use, so the ratio says little about a GPU fleet: it shows
the path runs and what it costs here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gang_rank import train  # noqa: E402
from hpo.scheduling.spec import load_spec  # noqa: E402
from hpo.scheduling.synthetic_twin import synthetic_override  # noqa: E402
from model.config import dump_toml  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=480)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        twin = synthetic_override(load_spec(ROOT / "studies" / "reproduce.toml"))
        mapping = twin.run_config(twin.grid_points()[0]).to_mapping()
        mapping["data"].update(root=str(folder / "data"), synthetic_n=args.images)
        config = folder / "reproduce-synthetic.toml"
        config.write_text(dump_toml(mapping))
        rates = {}
        for ranks in (1, 2):
            result = train(config, args.epochs, folder / f"ranks{ranks}", ranks=ranks, timeout=1800)
            seconds = [m["epoch_seconds"] for m in result["metrics"][1:]]
            rates[ranks] = len(seconds) / sum(seconds)
            print(f"{ranks} rank(s): {rates[ranks]:.3f} epochs/s over epochs 2-{args.epochs} "
                  f"(batch {mapping['trainer']['batch_size']}, {args.images} images, val srcc "
                  f"{result['metrics'][-1]['srcc']:.4f})", flush=True)
        print(f"2 ranks / 1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
