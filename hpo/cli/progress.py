"""The live progress line of ``launch`` and ``worker`` on a terminal (tqdm).

    demo: 37/80 epochs |██████▍      | 00:41<00:47, rung 3/5 · running 1 · paused 3 · pruned 8

(elapsed < ETA, from this run's rate).

It reads the study's tables once a second in a background thread, so it shows
the whole study (every worker's epochs, on any machine), not just this
process's. Drawn only where ``model.progress.progress_enabled()`` says so.
"""

from __future__ import annotations

import logging
import sys
import threading

from model.progress import progress_enabled
from hpo.readers.status import progress_fields, progress_snapshot
from hpo.scheduling.spec import StudySpec

log = logging.getLogger(__name__)
BAR_FORMAT = "{desc}: {n}/{total} epochs |{bar}| {elapsed}<{remaining}{postfix}"


class ProgressLine:
    def __init__(self, spec: StudySpec, interval: float = 1.0):
        self.spec, self.interval = spec, interval
        self.drawn = progress_enabled()
        self._bar = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ProgressLine":
        if not self.drawn:
            return self
        from tqdm import tqdm

        fields = self._fields()
        # initial = epochs already spent (a resumed study): the ETA is from this run's rate.
        self._bar = tqdm(total=fields["planned"], initial=fields["epochs_spent"] if fields else 0,
                         desc=self.spec.name, bar_format=BAR_FORMAT, dynamic_ncols=True)
        self._show(fields)
        self._thread = threading.Thread(target=self._loop, name="saan-hpo-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._show(self._fields())
        self._bar.close()

    def note(self, text: str) -> None:
        """A line above the progress line."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._show(self._fields())

    def _fields(self) -> dict | None:
        try:
            return progress_fields(self.spec, progress_snapshot(self.spec, self.spec.storage))
        except Exception as err:  # a progress line never stops a worker
            log.debug("progress line: %s", err)
            return None

    def _show(self, fields: dict | None) -> None:
        if fields is None or self._bar is None:
            return
        self._bar.n = fields["epochs_spent"]
        self._bar.set_postfix_str(fields["text"], refresh=False)
        self._bar.refresh()
