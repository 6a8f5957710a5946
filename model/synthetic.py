"""A synthetic BAID-shaped folder whose scores follow a learnable rule.

Tests, benchmarks and the demo study need data that looks like BAID on disk
(images/<name>.jpg, dataset/{train,val,test}_set.csv with columns image, score)
and that a network can actually learn from in a few CPU epochs. BAID itself is
large and CC BY-NC-ND, so it never ships.

Each image is a background and a few rectangles and ellipses drawn from two
hidden factors: colourfulness ``c`` (palette saturation) and contrast ``k``
(spread of brightness around mid grey). Both survive downsampling to 32 px and
are exactly the kind of global statistic AdaIN's style path carries. The score is

    score = clip(4.57 + 1.65 * z + N(0, 0.35), 1, 10),  z = standardised(0.6 c + 0.4 k)

i.e. BAID's train mean and spread (4.57, 1.65), with a little label noise.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
# 0.6c + 0.4k with c, k ~ U(0, 1): mean 0.5, std sqrt(0.36 + 0.16) / sqrt(12)
_RULE_STD = float(np.sqrt(0.52 / 12))


def score_rule(colourfulness: float, contrast: float, noise: float) -> float:
    z = (0.6 * colourfulness + 0.4 * contrast - 0.5) / _RULE_STD
    return float(np.clip(4.57 + 1.65 * z + noise, 1.0, 10.0))


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB in [0, 1] (h in [0, 1))."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(table):
        mask = i == k
        out[mask] = np.stack([r[mask], g[mask], b[mask]], axis=-1)
    return out


def draw_image(rng: np.random.Generator, width: int, height: int,
               colourfulness: float, contrast: float) -> np.ndarray:
    """An RGB uint8 (height, width, 3) picture of the two factors."""
    n_shapes = int(rng.integers(3, 7))
    hues = rng.random(n_shapes + 1)
    sats = np.clip(colourfulness * rng.uniform(0.75, 1.0, n_shapes + 1), 0, 1)
    # brightness alternates sides of mid grey so contrast, not brightness, carries k
    signs = np.where(np.arange(n_shapes + 1) % 2 == 0, 1.0, -1.0) * rng.choice([-1, 1])
    vals = np.clip(0.5 + signs * contrast * rng.uniform(0.3, 0.48, n_shapes + 1), 0, 1)
    colours = _hsv_to_rgb(hues, sats, vals)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    img = np.empty((height, width, 3), np.float32)
    img[:] = colours[0]
    for colour in colours[1:]:
        cx, cy = rng.uniform(0.1, 0.9, 2)
        rx, ry = rng.uniform(0.12, 0.35, 2)
        if rng.random() < 0.5:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        else:
            mask = (np.abs(xx - cx) <= rx) & (np.abs(yy - cy) <= ry)
        img[mask] = colour
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)  # a little texture
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_synthetic_baid(root: str | Path, n: int = 400, size: int | tuple[int, int] = 96,
                        seed: int = 0, quality: int = 90, val_n: int = 0) -> Path:
    """Write ``n`` images (``size`` px square, or (width, height)) and the three CSVs at ``root``:
    the first images train, then ``val_n`` validate and ``val_n`` test (0: SPLITS' fractions).

    The folder is written under a temporary name next to ``root`` and renamed
    into place, so a reader never sees half a dataset, and when two processes
    race the first rename wins and the other's copy is discarded.
    """
    if val_n and not 2 * val_n < n:
        raise ValueError(f"val_n: expected fewer than half of n ({n}), got {val_n}")
    root = Path(root)
    if root.exists():
        return root
    width, height = (size, size) if isinstance(size, int) else size
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "dataset").mkdir()
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(n):
            c, k = rng.random(2)
            name = f"synth_{i:05d}.jpg"
            Image.fromarray(draw_image(rng, width, height, c, k)).save(
                tmp / "images" / name, quality=quality)
            rows.append((name, round(score_rule(c, k, rng.normal(0, 0.35)), 3)))
        if val_n:
            sizes = {"train": n - 2 * val_n, "val": val_n}
        else:
            sizes = {split: int(round(n * fraction)) for split, fraction in SPLITS[:-1]}
        start = 0
        for j, (split, _) in enumerate(SPLITS):
            stop = n if j == len(SPLITS) - 1 else start + sizes[split]
            with open(tmp / "dataset" / f"{split}_set.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["image", "score"])
                writer.writerows(rows[start:stop])
            start = stop
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.exists():
                raise  # a real failure, not a lost race
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
