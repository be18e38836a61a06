"""A one-slot background worker: slow flow work runs off the kernel's main thread.

Each :meth:`Worker.submit` supersedes the previous job: the old one sees
``cancelled()`` turn true at its next check and its result is dropped, so a new
selection never waits behind a stale computation. Results are cached by key.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

__all__ = ["Worker", "Job"]

log = logging.getLogger("attn_widgets")


class Job:
    def __init__(self, key: Hashable, worker: "Worker") -> None:
        self.key = key
        self._worker = worker
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def cancelled(self) -> bool:
        return self._worker._current is not self

    def __repr__(self) -> str:
        state = "done" if self.done.is_set() else ("cancelled" if self.cancelled() else "running")
        return f"Job({self.key!r}, {state})"


class Worker:
    """Runs ``fn(job)`` in a daemon thread; callbacks fire only for the current job.

    Parameters
    ----------
    cache_size
        Number of results kept (least recently used are dropped).
    """

    def __init__(self, cache_size: int = 256) -> None:
        self._current: Job | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._cache_size = cache_size

    def cached(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        return None

    def cancel(self) -> None:
        with self._lock:
            self._current = None

    def submit(
        self,
        key: Hashable,
        fn: Callable[[Job], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> Job:
        """Start ``fn(job)`` for ``key``; ``on_done(result)`` / ``on_error(exc)`` run in the
        worker thread, and only if the job is still current when it finishes."""
        job = Job(key, self)
        with self._lock:
            self._current = job

        def run() -> None:
            try:
                result = fn(job)
            except BaseException as exc:  # reported, never raised into the thread machinery
                job.error = exc
                job.done.set()
                if not job.cancelled():
                    try:
                        on_error(exc)
                    except Exception:
                        log.exception("attn_widgets: error callback failed")
                return
            job.result = result
            with self._lock:
                self._cache[key] = result
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            job.done.set()
            if not job.cancelled():
                try:
                    on_done(result)
                except Exception:
                    log.exception("attn_widgets: result callback failed")

        threading.Thread(target=run, name=f"attn_widgets:{key}", daemon=True).start()
        return job
