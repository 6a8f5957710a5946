"""Whether to draw progress bars: the one place that reads SAAN_HPO_NO_PROGRESS.

Bars are drawn only on a terminal, and never when ``SAAN_HPO_NO_PROGRESS=1``
(tests, CI, the child workers of ``launch``, whose output goes to log files).
"""

from __future__ import annotations

import os
import sys

ENV_NO_PROGRESS = "SAAN_HPO_NO_PROGRESS"


def progress_enabled() -> bool:
    return os.environ.get(ENV_NO_PROGRESS) != "1" and sys.stderr.isatty()
