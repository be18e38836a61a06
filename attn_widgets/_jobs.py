"""Background work off the kernel's main thread, bounded: one small thread pool per process.

Each panel has a :class:`Worker` with one *pending slot*: :meth:`Worker.submit` replaces
whatever job of that panel has not started yet (a superseded job never runs) and marks the
running one cancelled (it sees ``cancelled()`` turn true at its next check and its result is
dropped). The jobs of every panel run on one process-wide pool of :data:`POOL_SIZE` threads,
so however many selections a burst makes (1000 token changes in a loop), at most
``POOL_SIZE`` jobs run at once and at most one waits per panel: threads and memory stay
flat. Results are cached by key per panel.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["POOL_SIZE", "Job", "Worker", "pool_threads"]

log = logging.getLogger("attn_widgets")

#: Threads of the process-wide pool (``ATTN_WIDGETS_WORKERS`` overrides; at least 1). The
#: flow computations are CPU-bound numpy / scipy: more threads than cores only add memory.
POOL_SIZE = max(1, int(os.environ.get("ATTN_WIDGETS_WORKERS", "0")) or min(4, os.cpu_count() or 1))


class Job:
    def __init__(self, key: Hashable, worker: Worker, fn: Callable[[Job], Any],
                 on_done: Callable[[Any], None], on_error: Callable[[BaseException], None]) -> None:
        self.key = key
        self._worker = worker
        self._fn, self._on_done, self._on_error = fn, on_done, on_error
        self.done = threading.Event()
        self.started = False
        self.result: Any = None
        self.error: BaseException | None = None

    def cancelled(self) -> bool:
        return self._worker._current is not self

    def __repr__(self) -> str:
        if self.done.is_set():
            state = "done"
        elif self.cancelled():
            state = "cancelled"
        else:
            state = "running" if self.started else "queued"
        return f"Job({self.key!r}, {state})"

    def _run(self) -> None:
        self.started = True
        try:
            result = self._fn(self)
        except BaseException as exc:  # reported, never raised into the pool
            self.error = exc
            self.done.set()
            if not self.cancelled():
                try:
                    self._on_error(exc)
                except Exception:
                    log.exception("attn_widgets: error callback failed")
            return
        self.result = result
        self._worker._store(self.key, result)
        self.done.set()
        if not self.cancelled():
            try:
                self._on_done(result)
            except Exception:
                log.exception("attn_widgets: result callback failed")


class _Pool:
    """``size`` daemon threads (started on first use) taking panels' pending jobs in turn."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cv = threading.Condition()
        self._ready: deque[Worker] = deque()
        self._threads: list[threading.Thread] = []

    def schedule(self, worker: Worker) -> None:
        with self._cv:
            if worker not in self._ready:
                self._ready.append(worker)
            if len(self._threads) < self.size:
                th = threading.Thread(target=self._loop, name=f"attn_widgets-pool-{len(self._threads)}", daemon=True)
                self._threads.append(th)
                th.start()
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._ready:
                    self._cv.wait()
                worker = self._ready.popleft()
            job = worker._take()
            if job is not None:
                job._run()

    @property
    def threads(self) -> int:
        return len(self._threads)


_POOL = _Pool(POOL_SIZE)


def pool_threads() -> int:
    """Threads the process-wide pool has started (never more than :data:`POOL_SIZE`)."""
    return _POOL.threads


class Worker:
    """One panel's background jobs on the shared pool; callbacks fire only for the current job.

    Parameters
    ----------
    cache_size
        Number of results kept (least recently used are dropped).
    """

    def __init__(self, cache_size: int = 256) -> None:
        self._current: Job | None = None
        self._pending: Job | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._cache_size = cache_size

    def cached(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        return None

    def _store(self, key: Hashable, result: Any) -> None:
        with self._lock:
            self._cache[key] = result
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _take(self) -> Job | None:
        with self._lock:
            job, self._pending = self._pending, None
        return job if job is not None and job is self._current else None

    def cancel(self) -> None:
        with self._lock:
            self._current = None
            self._pending = None

    def submit(
        self,
        key: Hashable,
        fn: Callable[[Job], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> Job:
        """Queue ``fn(job)`` for ``key`` on the pool, replacing this panel's job that has not
        started; ``on_done(result)`` / ``on_error(exc)`` run in a pool thread, and only if
        the job is still current when it finishes."""
        job = Job(key, self, fn, on_done, on_error)
        with self._lock:
            self._current = job
            self._pending = job  # a superseded pending job is dropped here, never run
        _POOL.schedule(self)
        return job
