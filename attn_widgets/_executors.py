"""The compute threads of :class:`~attn_widgets.LazyTrace`: one single-thread executor per
kind, with torch limited to one intra-op thread in each."""

from __future__ import annotations

import threading

_THREAD_PREFIX = "attn_widgets-lazy"
_EXECUTORS: dict = {}
_EXECUTORS_LOCK = threading.Lock()

#: torch intra-op threads of the compute threads. The kernels are memory-bound, and on a
#: small shared machine OpenMP threads that spin-wait for a descheduled sibling make a
#: 25 ms head take 400 ms; one thread per compute thread is fast and predictable.
COMPUTE_THREADS = 1


def _init_compute_thread() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - numpy backend
        return
    torch.set_num_threads(COMPUTE_THREADS)  # per-thread setting: the caller's threads keep theirs


def _executor(kind: str):
    """One single-thread executor per kind ("foreground": maps and tiles asked for by a
    panel; "background": progressive thumbnails). Dedicated threads keep torch's thread
    settings away from the caller's threads and let the two kinds run side by side."""
    from concurrent.futures import ThreadPoolExecutor

    with _EXECUTORS_LOCK:
        ex = _EXECUTORS.get(kind)
        if ex is None:
            ex = _EXECUTORS[kind] = ThreadPoolExecutor(
                1, thread_name_prefix=f"{_THREAD_PREFIX}-{kind}", initializer=_init_compute_thread
            )
        return ex
