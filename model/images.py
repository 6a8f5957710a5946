"""Decoding one BAID image to the pixels the network sees, and naming a bad one.

Its own module so that the split index (model/data.py) and the decode-once
cache (model/cache.py) both use it without importing each other.

The transform is the paper's ``Resize((size, size))`` (bilinear, aspect not
kept, no crop; docs/saan.md "Training as published"); the random horizontal
flip and the ImageNet normalisation are done later on whole tensor batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def decode_resized(path: Path, size: int) -> np.ndarray:
    """The paper's Resize((size, size)) on a PIL image: bilinear, aspect not kept. (H, W, 3) uint8."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def bad_image(path: Path, err: Exception | None) -> str:
    """The one-line message for a missing (``err`` None) or undecodable image."""
    return f"{path}: image missing" if err is None else f"{path}: cannot decode image ({err})"


def decode_or_error(args: tuple[Path, int]) -> np.ndarray | Exception:
    """decode_resized, with failures returned as values (for a thread pool's map)."""
    path, size = args
    if not path.is_file():
        return FileNotFoundError(str(path))
    try:
        return decode_resized(path, size)
    except Exception as err:  # PIL raises many types for a bad file
        return err


def check_image(path: Path) -> str | None:
    """Check without decoding: the file exists and PIL's verify() accepts it; else the message.

    verify() catches missing files and truncated JPEGs; a file damaged in a way
    only a full decode reveals still fails later, as an ImageError naming it.
    """
    if not path.is_file():
        return bad_image(path, None)
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types for a bad file
        return bad_image(path, err)
    return None
