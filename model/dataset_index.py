"""The BAID folder's index, without torch: its CSVs, the splits, and the check made up front.

Layout: ``<root>/images/<name>`` and ``<root>/dataset/{train,val,test}_set.csv``
with columns ``image`` and ``score`` (0-10). Validation is ``val_set.csv`` when
present, else a split carved from train with ``split_seed`` / ``val_fraction``.

Kept apart from model/data.py (the pixels and batches) because every ``launch``
and every worker checks the data before anything is created: importing torch
for that would cost each of those processes about two CPU-seconds, most of a
finished study's ``launch``, and a worker that finds nothing to claim.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from model.config import DataConfig
from model.errors import DataError, ImageError
from model.images import bad_image
from model.synthetic import make_synthetic_baid

SPLITS = ("train", "val", "test")


# ---- the index: CSV rows --------------------------------------------------
def csv_path(root: Path, split: str) -> Path:
    return root / "dataset" / f"{split}_set.csv"


def read_split_csv(path: Path) -> list[tuple[str, float]]:
    """(image name, score) rows of one BAID CSV; DataError names the file and column."""
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found (expected columns image, score)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for column in ("image", "score"):
            if column not in columns:
                raise DataError(f"{path}: column {column!r} missing (found {', '.join(columns) or 'none'})")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: column 'score': expected a number, "
                                f"got {row['score']!r}") from None
            if not 0.0 <= score <= 10.0:
                raise DataError(f"{path}:{line}: column 'score': expected 0-10, got {score}")
            rows.append((row["image"], score))
    return rows


def split_rows(cfg: DataConfig, split: str) -> list[tuple[str, float]]:
    """The rows of ``split``; val is carved from train when val_set.csv is absent."""
    if split not in SPLITS:
        raise DataError(f"{cfg.root}: unknown split {split!r} (expected {', '.join(SPLITS)})")
    root = Path(cfg.root)
    if split == "test" or csv_path(root, "val").is_file():
        return read_split_csv(csv_path(root, split))
    train = read_split_csv(csv_path(root, "train"))
    order = np.random.default_rng(cfg.split_seed).permutation(len(train))
    n_val = min(len(train) - 1, max(1, int(round(len(train) * cfg.val_fraction))))
    val = set(order[:n_val].tolist())
    # keep the CSV order inside each part, so the carve depends only on the seed
    return [row for i, row in enumerate(train) if (i in val) == (split == "val")]


def ensure_dataset(cfg: DataConfig) -> Path:
    """The BAID root, generated first when ``cfg.synthetic`` and it is missing."""
    if not cfg.root:
        raise DataError("data.root: no BAID folder given")
    root = Path(cfg.root).expanduser()
    if not root.exists() and cfg.synthetic:
        make_synthetic_baid(root, cfg.synthetic_n, cfg.synthetic_size, cfg.synthetic_seed,
                            val_n=cfg.synthetic_val_n)
    if not root.is_dir():
        raise DataError(f"{root}: BAID folder not found (expected images/ and dataset/)")
    if not (root / "images").is_dir():
        raise DataError(f"{root / 'images'}: images folder not found")
    return root


# ---- checked up front ---------------------------------------------------------
def check_dataset(cfg: DataConfig) -> None:
    """What a run needs from the data, checked before anything is created.

    The train and val CSVs (columns, numeric 0-10 scores), and with
    ``on_bad_image = "fatal"`` every listed image present (a stat per image;
    decoding waits for the cache). A synthetic folder is generated here when
    missing, as training would. Raises DataError / ImageError naming the file.
    """
    root = ensure_dataset(cfg)
    for split in ("train", "val"):
        rows = split_rows(cfg, split)
        if not rows:
            raise DataError(f"{csv_path(root, split)}: no images in split {split!r}")
        if cfg.on_bad_image == "fatal":
            for name, _ in rows:
                path = root / "images" / name
                if not path.is_file():
                    raise ImageError(bad_image(path, None))
