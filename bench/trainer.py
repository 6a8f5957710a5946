"""Images/s of model.train.Trainer against a loop written the way the paper's code trains.

    python bench/trainer.py [--n 64] [--image-size 32] [--backbone resnet18] [--head-hidden 256]
                            [--batch 16] [--epochs 5] [--workers 0] [--device cpu]

Defaults are the README demo's model and input (resnet18 SAAN, head_hidden 256,
32 px) on BAID-sized JPEGs (1600x1200, as most of BAID's are); batch 16 is the
middle of the demo grid.

a) reference: a torch Dataset that opens and decodes each full-size JPEG with
   PIL, Resize((s, s)) + RandomHorizontalFlip + ToTensor + Normalize, every
   epoch, fp32, DataLoader(shuffle=True), the same SAAN, Adam and MSE;
b) Trainer, cold cache: building the decode-once cache plus its first epoch;
c) Trainer, warm cache: later epochs (read uint8 from the memmap, flip,
   normalise), the VGG run every step, split in host memory, no compile;
then the issue-10 speed-ups switched on in turn, each on top of the last:
d) + style statistics computed once (data.style_cache: no VGG in the step);
e) + data on the device (data.device_cache = "on": the split is one tensor on
   the training device, batches gathered there);
f) + torch.compile of the model call (trainer.compile; only with --compile:
   the compile itself is paid in an untimed warm-up epoch and printed).

Every loop is warmed up by one untimed epoch (kernel set-up, the style
statistics and device copies built, compiling), so none pays one-time costs
inside a timed epoch. Epochs of a), c), d), ... then alternate, so both see the same load from other processes,
and each rate uses the fastest of its epochs (as timeit advises: the minimum is
the run least disturbed; medians are printed beside). The first line is the
settings, the last the warm/reference ratio c/a. A ratio, never an assertion.

``--flops`` adds the model's training FLOPs per image (counted with
torch.utils.flop_counter on one forward + backward step) and, on a GPU, the
fraction of its bf16 dense peak that c) reaches; ``--epoch-images N`` projects
seconds per epoch of N images (BAID's train split: about 48,000). bench/gpu.sh
runs it that way on one GPU at the paper's settings.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("SAAN_HPO_NO_PROGRESS", "1")
# The paper-style loop uses torch's default (every core); give the trainer the
# same, not its reproducible one-thread-per-trial default, to compare loops.
os.environ.setdefault("SAAN_HPO_THREADS", str(os.cpu_count() or 1))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig  # noqa: E402
from model.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from model.dataset_index import split_rows  # noqa: E402
from model.saan import build_saan  # noqa: E402
from model.synthetic import draw_image, score_rule  # noqa: E402
from model.train import Trainer  # noqa: E402

# bf16 dense tensor-core peaks (TFLOP/s), by a substring of torch.cuda.get_device_name().
# First match wins, so the more specific names come first.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("GH200", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0),
                    ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0))


# ---- data -----------------------------------------------------------------
def _draw(args: tuple[int, int, int, Path]) -> tuple[str, float]:
    i, width, height, folder = args
    rng = np.random.default_rng(1000 + i)
    c, k = rng.random(2)
    name = f"bench_{i:05d}.jpg"
    Image.fromarray(draw_image(rng, width, height, c, k)).save(folder / name, quality=90)
    return name, round(score_rule(c, k, rng.normal(0, 0.35)), 3)


def make_dataset(root: Path, n_train: int, width: int, height: int, unique: int,
                 n_eval: int = 4) -> None:
    """BAID layout with ``n_train`` train JPEGs: ``unique`` drawn in parallel, the rest hard links.

    val and test list ``n_eval`` images each (the drawn pictures, cycled).

    A hard-linked copy decodes exactly like its original, so the loops pay the
    full per-image decode; only generating the pictures is saved.
    """
    images = root / "images"
    images.mkdir(parents=True)
    unique = max(1, min(unique, n_train))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        drawn = list(pool.map(_draw, [(i, width, height, images) for i in range(unique)]))
    rows = list(drawn)
    for i in range(unique, n_train):
        name, score = drawn[i % unique]
        copy = f"bench_{i:05d}.jpg"
        os.link(images / name, images / copy)
        rows.append((copy, score))
    (root / "dataset").mkdir()
    evaluated = [drawn[i % len(drawn)] for i in range(n_eval)]
    for split, part in (("train", rows), ("val", evaluated), ("test", evaluated)):
        with open(root / "dataset" / f"{split}_set.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "score"])
            writer.writerows(part)


# ---- a) the paper's way --------------------------------------------------------
class PaperDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, rows, size: int):
        self.root, self.rows = root, rows
        self.transform = transforms.Compose([
            transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        name, score = self.rows[i]
        image = Image.open(self.root / "images" / name).convert("RGB")
        return self.transform(image), torch.tensor(score / 10, dtype=torch.float32)


class ReferenceLoop:
    """The paper's training loop: fp32, decode + resize every epoch in the DataLoader."""

    def __init__(self, cfg: RunConfig, root: Path, device: torch.device, workers: int):
        torch.manual_seed(0)
        self.device = device
        self.model = build_saan(cfg.model).to(device).train()
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                    lr=cfg.trainer.lr, betas=(cfg.trainer.beta1, cfg.trainer.beta2),
                                    weight_decay=cfg.trainer.weight_decay)
        self.loader = torch.utils.data.DataLoader(
            PaperDataset(root, split_rows(cfg.data, "train"), cfg.data.image_size),
            batch_size=cfg.trainer.batch_size, shuffle=True, num_workers=workers)

    def epoch(self) -> int:
        seen = 0
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            loss = torch.nn.functional.mse_loss(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            seen += len(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return seen


# ---- helpers --------------------------------------------------------------
def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def variants(base: RunConfig, compile_too: bool) -> list[tuple[str, RunConfig]]:
    """c) and the speed-ups switched on in turn (each on top of the previous ones)."""
    off = base.replace(style_cache=False, device_cache="off", compile=False)
    rows = [("c) Trainer, warm cache", off),
            ("d)  + style statistics cached", off.replace(style_cache=True)),
            ("e)  + data on the device", off.replace(style_cache=True, device_cache="on"))]
    if compile_too:
        rows.append(("f)  + torch.compile", off.replace(style_cache=True, device_cache="on", compile=True)))
    return rows


def training_flops_per_image(trainer: Trainer, size: int, batch: int = 2) -> float:
    """FLOPs of one training step per image, counted by torch (convolutions and matmuls).

    Counted on a real forward + backward of the trainer's model: the frozen
    generic branch and VGG run forward only (no graph), the trained parts
    forward and backward (about 2x their forward: gradients of inputs and of
    weights). The optimizer step and elementwise ops are not counted, as in
    the usual MFU convention.
    """
    from torch.utils.flop_counter import FlopCounterMode
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    x = trainer._to_input(images, torch.zeros(batch, dtype=torch.bool))
    trainer.model.train()
    with FlopCounterMode(display=False) as counter:
        with trainer._autocast():
            pred = trainer.model(x)
        pred.float().mean().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in name:
            return name, tflops * 1e12
    return name, None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="training images")
    p.add_argument("--unique", type=int, default=32, help="distinct pictures (the rest hard links)")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--head-hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=5, help="timed epochs of a) and of c)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of a)")
    p.add_argument("--trainer-workers", type=int, default=None,
                   help="DataLoader workers of the Trainer (default: --workers)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cold-repeats", type=int, default=3, help="times b) is measured (cache deleted)")
    p.add_argument("--no-cold", action="store_true", help="skip b) (the cache is built untimed)")
    p.add_argument("--flops", action="store_true", help="count training FLOPs; GPU: fraction of peak")
    p.add_argument("--epoch-images", type=int, default=0,
                   help="also print projected seconds per epoch of this many images")
    p.add_argument("--compile", action="store_true", help="add row f) + torch.compile")
    args = p.parse_args()
    device = torch.device(args.device)
    trainer_workers = args.workers if args.trainer_workers is None else args.trainer_workers
    amp = device.type == "cuda"
    print(f"settings: {args.backbone} SAAN (head_hidden {args.head_hidden}) at {args.image_size}px, "
          f"batch {args.batch}, {args.n} train JPEGs of {args.width}x{args.height}, {args.epochs} "
          f"timed epochs, device {device}, {torch.get_num_threads()} threads, loader workers "
          f"a) {args.workers} / trainer {trainer_workers}, trainer "
          f"{'bf16 autocast' if amp else 'fp32'}, torch {torch.__version__}", flush=True)

    with tempfile.TemporaryDirectory(prefix="saan-bench-") as tmp:
        root = Path(tmp) / "baid"
        seconds = timed(lambda: make_dataset(root, args.n, args.width, args.height, args.unique))
        print(f"data: {args.n} JPEGs ({min(args.unique, args.n)} distinct) in {seconds:.1f} s", flush=True)
        cfg = RunConfig(
            data=DataConfig(root=str(root), image_size=args.image_size, num_workers=trainer_workers,
                            cache_dir=str(Path(tmp) / "cache")),
            model=ModelConfig(backbone=args.backbone, head_hidden=args.head_hidden),
            trainer=TrainerConfig(lr=1e-4, batch_size=args.batch, schedule="constant",
                                  device=str(device), amp=amp))

        reference = ReferenceLoop(cfg, root, device, args.workers)
        reference.epoch()  # untimed: kernel set-up, file system cache
        n = len(split_rows(cfg.data, "train"))
        loops = variants(cfg, args.compile)
        trainer = Trainer(loops[0][1], device=str(device))

        rows = []  # (label, images/s, s/epoch, median s/epoch)
        cold_times = []
        for _ in range(0 if args.no_cold else args.cold_repeats):
            shutil.rmtree(cfg.data.cache_dir, ignore_errors=True)  # cold: no cache file
            trainer.feed.clear()
            cold_times.append(timed(lambda: (trainer.split("train"), trainer._train_epoch(1))))
        if cold_times:
            cold = min(cold_times)
            rows.append(("b) Trainer, cold cache (build + 1st epoch)", n / cold, cold,
                         statistics.median(cold_times)))
        trainers = [trainer] + [Trainer(c, device=str(device)) for _, c in loops[1:]]
        for (label, _), t in zip(loops, trainers):
            seconds = timed(lambda: t._train_epoch(1))  # untimed for the table: one-time set-up
            print(f"warm-up epoch of {label.split(')')[0]}): {seconds:.1f} s "
                  "(style statistics, device copy, compile where on)", flush=True)
        a_times, times = [], [[] for _ in loops]
        for epoch in range(2, 2 + args.epochs):
            a_times.append(timed(reference.epoch))
            for t, spent in zip(trainers, times):
                spent.append(timed(lambda: t._train_epoch(epoch)))
        a = min(a_times)
        rows.insert(0, ("a) reference (PIL every epoch, fp32)", n / a, a, statistics.median(a_times)))
        for (label, _), spent in zip(loops, times):
            rows.append((label, n / min(spent), min(spent), statistics.median(spent)))

        print(f"{'':44s} {'img/s':>9s} {'s/epoch':>9s} {'median':>9s}"
              + (f" {'s/epoch of ' + str(args.epoch_images):>16s}" if args.epoch_images else ""))
        for label, rate, best, median in rows:
            line = f"{label:44s} {rate:9.1f} {best:9.3f} {median:9.3f}"
            if args.epoch_images:
                line += f" {args.epoch_images / rate:16.1f}"
            print(line)

        if args.flops:
            per_image = training_flops_per_image(trainer, args.image_size)
            name, peak = bf16_peak(device)
            print(f"training FLOPs per image: {per_image / 1e9:.2f} GFLOP (forward + backward, "
                  f"torch.utils.flop_counter)")
            for label, rate, _, _ in [r for r in rows if not r[0].startswith("b")]:
                achieved = per_image * rate
                share = f"{achieved / peak:.1%} of {name}'s {peak / 1e12:.0f} TFLOP/s bf16 dense peak" \
                    if peak else f"(no bf16 peak known for {name})"
                print(f"{label[:2]} {achieved / 1e12:8.2f} TFLOP/s = {share}")
            print("(shares count the full model's FLOPs per image; with the style statistics cached "
                  "the VGG forward is not executed, so d)-f) are effective shares)")

        rates = {label[0]: rate for label, rate, _, _ in rows}
        if "b" in rates:
            print(f"b/a (cold/reference) = {rates['b'] / rates['a']:.2f}")
        best = max((k for k in rates if k >= "c"), key=lambda k: rates[k])
        for k in sorted(k for k in rates if k > "c"):
            print(f"{k}/c = {rates[k] / rates['c']:.2f}")
        print(f"c/a (warm/reference) = {rates['c'] / rates['a']:.2f}; "
              f"{best}/a (fastest/reference) = {rates[best] / rates['a']:.2f}", end="")
        if args.flops:  # one summary line, still ending with the ratio's figure
            share = f", {per_image * rates[best] / peak:.1%} of bf16 peak" if peak else ""
            epoch = f", {args.epoch_images / rates[best]:.1f} s per {args.epoch_images}-image epoch" \
                if args.epoch_images else ""
            print(f"; fastest {best}) {rates[best]:.0f} img/s{epoch}{share}", end="")
        print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
