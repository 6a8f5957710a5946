"""Where one training step's time goes: torch.profiler's top kernels for row f) of bench/gpu.sh.

    python bench/kernels.py --device cuda [--out FILE]     # the paper's settings, as gpu.sh's f)
    python bench/kernels.py --smoke [--out FILE]           # CPU, tiny (checks the script runs)

Builds the trainer of gpu.sh's fastest row (style statistics cached, data on
the device, torch.compile), times its first epoch (the compile: cold, or warm
when TORCHINDUCTOR_CACHE_DIR still holds gpu.sh's cache -- bench/device-run.sh
keeps it between the two), then profiles one training step and prints the
top 15 kernels by device time (CPU: by self CPU time). Prints lines starting
``compile (first epoch):`` and ``top 15 kernels``; the table is also written
to --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig  # noqa: E402
from model.train import Trainer  # noqa: E402
from trainer import make_dataset  # noqa: E402  (bench/trainer.py: the same synthetic JPEGs)

TOP = 15


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="CPU, resnet18 at 32 px, eager compile backend")
    p.add_argument("--out", help="also write the kernel table here")
    args = p.parse_args(argv)
    if args.smoke:
        import os

        os.environ.setdefault("SAAN_HPO_COMPILE_BACKEND", "eager")  # no C++ build on CPU
        device, backbone, head, size, batch, width, height = "cpu", "resnet18", 64, 32, 8, 320, 240
    else:
        device, backbone, head, size, batch, width, height = args.device, "resnet50", 2048, 224, 64, 1600, 1200
    cuda = device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="saan-kernels-") as tmp:
        root = Path(tmp) / "baid"
        make_dataset(root, batch, width, height, min(batch, 16))  # one step per epoch
        cfg = RunConfig(
            data=DataConfig(root=str(root), image_size=size, num_workers=0, cache_dir=str(Path(tmp) / "cache")),
            model=ModelConfig(backbone=backbone, head_hidden=head),
            trainer=TrainerConfig(lr=1e-4, batch_size=batch, schedule="constant", device=device,
                                  amp=cuda)).replace(style_cache=True, device_cache="on", compile=True)
        trainer = Trainer(cfg, device=device)
        trainer.split("train")  # decode and cache outside the timing
        start = time.perf_counter()
        trainer._train_epoch(1)
        if cuda:
            torch.cuda.synchronize()
        print(f"compile (first epoch): {time.perf_counter() - start:.1f} s "
              f"(TORCHINDUCTOR_CACHE_DIR warm if it held an earlier run's cache)", flush=True)
        trainer._train_epoch(2)  # steady state before the profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            trainer._train_epoch(3)
            if cuda:
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=TOP)
    header = (f"top {TOP} kernels of one training step ({backbone} SAAN, {size} px, batch {batch}, "
              f"{device}, torch {torch.__version__}, CUDA {torch.version.cuda}), by {key}:")
    print(header)
    print(table)
    if args.out:
        Path(args.out).write_text(header + "\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
