"""One background thread that runs writes in the order they were submitted.

Torch-free, so that callers which never train (replayed curves, ``simulate``)
can use it without importing torch: hpo's worker writes and records each
epoch's checkpoint on one (hpo/service/worker.py), and model/checkpoint.py's
CheckpointWriter adds durable checkpoint saves to it.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class OrderedWriter:
    """``submit(fn, *args)`` returns a Future at once; ``fn(*args)`` runs on the one thread,
    after everything submitted before it, and the Future resolves to its result (or raises
    its error). A slow disk delays only the writes, never the caller, until it waits."""

    def __init__(self, name: str = "saan-writer"):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        return self._pool.submit(fn, *args)

    def close(self, wait: bool = True) -> None:
        """Finish (``wait``) or abandon the queued writes and stop the thread."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close(wait=True)
