"""Images/s of model.train.Trainer against a loop written the way the paper's code trains.

    python bench/trainer.py [--n 48] [--width 1600] [--height 1200] [--image-size 64]
                            [--backbone resnet18] [--batch 16] [--epochs 2] [--workers 0]

a) reference: a torch Dataset that opens and decodes each full-size JPEG with
   PIL, Resize((s, s)) + RandomHorizontalFlip + ToTensor + Normalize, every
   epoch, fp32, DataLoader(shuffle=True), the same SAAN, Adam and MSE;
b) Trainer, cold cache: its first epoch, building the decode-once cache;
c) Trainer, warm cache: later epochs (read uint8 from the memmap, flip, normalise).

Prints b/a and c/a; the last line is the warm/reference ratio. Synthetic
BAID-like JPEGs of 1600x1200 (BAID's are mostly that large) are generated in a
temporary folder. A ratio, never an assertion: timings vary by machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SAAN_HPO_NO_PROGRESS", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

from model.config import DataConfig, ModelConfig, RunConfig, TrainerConfig  # noqa: E402
from model.data import IMAGENET_MEAN, IMAGENET_STD, split_rows  # noqa: E402
from model.saan import build_saan  # noqa: E402
from model.synthetic import make_synthetic_baid  # noqa: E402
from model.train import Trainer  # noqa: E402


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


def reference_images_per_s(cfg: RunConfig, root: Path, epochs: int) -> float:
    torch.manual_seed(0)
    model = build_saan(cfg.model).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.trainer.lr,
                           betas=(cfg.trainer.beta1, cfg.trainer.beta2),
                           weight_decay=cfg.trainer.weight_decay)
    loader = torch.utils.data.DataLoader(PaperDataset(root, split_rows(cfg.data, "train"),
                                                      cfg.data.image_size),
                                         batch_size=cfg.trainer.batch_size, shuffle=True,
                                         num_workers=cfg.data.num_workers)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2, help="epochs timed for a) and c)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, both loops")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="saan-bench-") as tmp:
        root = Path(tmp) / "baid"
        start = time.perf_counter()
        make_synthetic_baid(root, args.n, (args.width, args.height), seed=0)
        print(f"data: {args.n} JPEGs of {args.width}x{args.height} in {time.perf_counter() - start:.1f} s; "
              f"{args.backbone} at {args.image_size}px, batch {args.batch}, device {args.device}, "
              f"{torch.get_num_threads()} threads, {args.workers} loader workers")
        cfg = RunConfig(
            data=DataConfig(root=str(root), image_size=args.image_size, num_workers=args.workers),
            model=ModelConfig(backbone=args.backbone),
            trainer=TrainerConfig(lr=1e-4, batch_size=args.batch, schedule="constant"))

        a = reference_images_per_s(cfg, root, args.epochs)
        print(f"a) reference (PIL decode + resize every epoch, fp32): {a:8.1f} img/s")

        trainer = Trainer(cfg, device=args.device)
        n_train = len(split_rows(cfg.data, "train"))
        start = time.perf_counter()
        trainer.split("train")  # cold: decodes every image once into the cache
        trainer._train_epoch(1)
        b = n_train / (time.perf_counter() - start)
        print(f"b) Trainer, cold cache (first epoch, builds it):   {b:8.1f} img/s")
        start = time.perf_counter()
        for epoch in range(2, 2 + args.epochs):
            trainer._train_epoch(epoch)
        c = n_train * args.epochs / (time.perf_counter() - start)
        print(f"c) Trainer, warm cache:                            {c:8.1f} img/s")
        print(f"b/a (cold/reference) = {b / a:.2f}")
        print(f"c/a (warm/reference) = {c / a:.2f}")


if __name__ == "__main__":
    main()
