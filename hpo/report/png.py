"""The report's figures as PNGs, through kaleido 1.x (pure Python; it drives a local Chrome/Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import plotly.io as pio

from model.errors import SaanError

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class NoBrowser(SaanError):
    """PNG export needs a Chrome/Chromium that kaleido can drive."""


def find_browser() -> str | None:
    """A Chrome/Chromium for kaleido: $BROWSER_PATH, then the usual names on PATH."""
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in BROWSER_NAMES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def check_png_export() -> str:
    """The browser kaleido will use; a clear error when PNG export cannot work here."""
    try:
        import kaleido  # noqa: F401 -- only whether it is installed
    except ImportError:
        raise NoBrowser("--png: kaleido is not installed (pip install 'kaleido>=1')") from None
    browser = find_browser()
    if browser is None:
        raise NoBrowser("--png: no Chrome/Chromium found (looked at $BROWSER_PATH and "
                        f"{', '.join(BROWSER_NAMES)} on PATH); install one, e.g. "
                        "apt-get install chromium, or set BROWSER_PATH")
    return browser


def write_pngs(figures: dict[str, Any], directory: Path, browser: str) -> list[Path]:
    """Each figure as DIR/<figure id>.png, through one kaleido browser session."""
    os.environ["BROWSER_PATH"] = browser  # kaleido (choreographer) reads it
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{figure_id}.png" for figure_id in figures]
    pio.write_images(list(figures.values()), paths, format="png")
    return paths
