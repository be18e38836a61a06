"""Attention flow (Abnar & Zuidema 2020): the exact max-flow, computed per requested row.

Engines
-------
``"numba"`` (default when numba is importable)
    Warm-started push-relabel on integer capacities (see :mod:`._pushrelabel`): for one
    source row the graph differs between sinks only in the edges into the sink, so each
    sink re-balances the previous sink's preflow instead of starting over. Several threads
    (each with its own solver state; the kernels release the GIL) share the pairs.
``"scipy"``
    One ``scipy.sparse.csgraph.maximum_flow(method="dinic")`` per pair on the full
    ``(L + 1) * T``-node graph with int32 capacities ``rint(2**30 * cap)``: the plain,
    slow baseline (also the fallback without numba).

Both are exact max-flows of the rounded capacities; they agree with a float max-flow
(networkx) to ~1e-8 (scipy, 2**-31 per cut edge) and ~1e-12 (numba, 2**-49 per cut edge).
Nothing is pruned.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from ._inputs import check_attentions, check_residual, mixed_maps

__all__ = ["attention_flow", "FlowCancelled", "ENGINES"]

ENGINES = ("auto", "numba", "scipy")

#: Below this much work (pairs x internal edges) threads cost more than they save.
_THREAD_MIN_WORK = 2e7


class FlowCancelled(Exception):
    """Raised by :func:`attention_flow` when its ``cancel()`` callback returned True.

    ``done`` and ``total`` count (row, column) pairs.
    """

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"attention flow cancelled after {done} of {total} pairs")
        self.done = done
        self.total = total


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


_COMPILED = False
_COMPILE_LOCK = threading.Lock()


def _ensure_compiled() -> None:
    """Compile (or load from numba's cache) the kernels once, in the calling thread."""
    global _COMPILED
    if _COMPILED:
        return
    with _COMPILE_LOCK:
        if _COMPILED:
            return
        from ._pushrelabel import RowSolver

        ah = np.full((3, 2, 2), 0.5)
        solver = RowSolver(ah)
        solver.start_row(0)
        solver.solve(0)
        _COMPILED = True


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _check_rows(rows: Any, t: int) -> list[int]:
    if rows is None:
        return list(range(t))
    if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool):
        rows = [rows]
    elif hasattr(rows, "tolist") and not isinstance(rows, (str, bytes)):
        rows = rows.tolist()
        rows = [rows] if isinstance(rows, int) else rows
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError(f"rows: expected None, an int or a sequence of ints, received {rows!r}")
    out = []
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise ValueError(f"rows: expected ints, received {r!r}")
        if not 0 <= r < t:
            raise ValueError(f"rows: expected 0 <= row < {t} (T), received {r}")
        out.append(int(r))
    return out


def _reachable(ah: np.ndarray, rows: list[int]) -> np.ndarray:
    """bool ``[len(rows), T]``: is there any positive-capacity path from (L, i) to (0, j)?"""
    n_layers = ah.shape[0]
    v = (ah[n_layers - 1][rows] > 0).astype(np.float32)
    for layer in range(n_layers - 2, -1, -1):
        v = ((v @ (ah[layer] > 0).astype(np.float32)) > 0).astype(np.float32)
    return v > 0


class _Progress:
    """Calls ``progress(done, total)`` at the start, at most every ``every`` s, and at the end."""

    def __init__(self, fn: Callable[[int, int], Any] | None, total: int, every: float) -> None:
        self.fn = fn
        self.total = total
        self.every = every
        self.last = -1.0
        self.last_done = -1

    def __call__(self, done: int, force: bool = False) -> None:
        if self.fn is None or done == self.last_done:
            return
        now = time.perf_counter()
        if force or done >= self.total or now - self.last >= self.every:
            self.last = now
            self.last_done = done
            self.fn(done, self.total)


def attention_flow(
    attentions: Any,
    rows: Any = None,
    residual: float = 0.5,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    normalize: bool = True,
    engine: str = "auto",
    workers: int | None = None,
    progress_every: float = 0.1,
) -> np.ndarray:
    """Exact attention flow (Abnar & Zuidema 2020) for the requested output rows.

    The graph has ``(L + 1) * T`` nodes ``(l, i)`` and an edge ``(l, i) -> (l - 1, j)`` of
    capacity ``Ah_l[i, j]``, where ``Ah_l = (1 - residual) * mean_h A[l, h] + residual * I``
    with rows renormalised (the maps :func:`rollout` multiplies). ``flow[i, j]`` is the
    max-flow value from ``(L, i)`` to ``(0, j)``; each row is then divided by its sum.

    Parameters
    ----------
    attentions
        ``[L, H, T, T]`` post-softmax weights (numpy, torch, or an :class:`AttentionTrace`).
    rows
        Output tokens to compute: ``None`` (all ``T``; costly for long inputs), an int, or
        a sequence of ints. Only these rows are computed.
    residual
        Residual weight in ``[0, 1]``, 0.5 as in the paper.
    progress
        ``progress(done, total)`` in (row, column) pairs; called in the calling thread at
        the start, then at most every ``progress_every`` seconds, and at the end.
    cancel
        ``cancel() -> bool``, checked between pair computations (with ``workers > 1``,
        polled by the calling thread every few milliseconds while the workers run);
        returning True stops the work and raises :class:`FlowCancelled`.
    normalize
        False returns the raw max-flow values (each in ``[0, 1]``), without the per-row
        normalisation.
    engine
        ``"auto"`` (numba if installed, else scipy), ``"numba"`` or ``"scipy"`` (per-pair
        Dinic, slow; see the module docs).
    workers
        Threads for the numba engine; ``None`` picks up to 4 (the machine's cores) when the
        job is big enough to gain from them.

    Returns
    -------
    float64 ``[len(rows), T]`` (``[T, T]`` for ``rows=None``), rows in the order given.
    Unreachable pairs (e.g. later tokens of a causal model) are exactly 0.
    """
    a = check_attentions(attentions)
    r = check_residual(residual)
    n_layers, t = a.shape[0], a.shape[-1]
    row_list = _check_rows(rows, t)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress: expected a callable progress(done, total) or None, received {progress!r}")
    if cancel is not None and not callable(cancel):
        raise ValueError(f"cancel: expected a callable cancel() -> bool or None, received {cancel!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, received {engine!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers: expected None or an int >= 1, received {workers!r}")
    if not np.isfinite(progress_every) or progress_every < 0:
        raise ValueError(f"progress_every: expected seconds >= 0, received {progress_every!r}")

    ah = mixed_maps(a, r)
    n_rows = len(row_list)
    total = n_rows * t
    report = _Progress(progress, total, float(progress_every))
    raw = np.zeros((n_rows, t), dtype=np.float64)
    if n_rows == 0:
        return raw

    if engine == "auto":
        engine = "numba" if _numba_available() else "scipy"
        if engine == "scipy" and n_layers > 2 and total * t * t * n_layers > 1e8:
            warnings.warn(
                "attention_flow: numba is not installed; falling back to per-pair scipy Dinic, "
                "much slower (16x at T=512). pip install numba for the fast engine.",
                RuntimeWarning,
                stacklevel=2,
            )
    elif engine == "numba" and not _numba_available():
        raise ImportError("attention_flow(engine='numba') needs numba: pip install numba")

    report(0, force=True)
    if n_layers == 1:
        # One layer: the only path from (1, i) to (0, j) is the edge itself.
        if cancel is not None and cancel():
            raise FlowCancelled(0, total)
        raw[:] = ah[0][row_list]
        report(total)
    elif engine == "scipy":
        _run_scipy(ah, row_list, raw, report, cancel)
    else:
        reach = _reachable(ah, row_list)
        n_work = int(reach.sum()) * (n_layers - 1) * t * t
        if workers is None:
            workers = min(4, _cpu_count()) if n_work >= _THREAD_MIN_WORK else 1
        _ensure_compiled()
        from ._pushrelabel import SCALE

        if workers == 1:
            _run_serial(ah, row_list, reach, raw, report, cancel)
        else:
            _run_threads(ah, row_list, reach, raw, report, cancel, int(workers))
        raw /= SCALE

    if not normalize:
        return raw
    s = raw.sum(axis=1, keepdims=True)
    return np.divide(raw, s, out=np.zeros_like(raw), where=s > 0)


def _run_serial(ah, rows, reach, raw, report, cancel) -> None:
    from ._pushrelabel import RowSolver

    solver = RowSolver(ah)
    t = ah.shape[-1]
    done = 0
    total = len(rows) * t
    for ri, i in enumerate(rows):
        started = False
        for j in range(t):
            if cancel is not None and cancel():
                raise FlowCancelled(done, total)
            if reach[ri, j]:
                if not started:
                    solver.start_row(i)
                    started = True
                raw[ri, j] = solver.solve(j)
            done += 1
            report(done)


def _run_threads(ah, rows, reach, raw, report, cancel, n_workers: int) -> None:
    from ._pushrelabel import RowSolver

    t = ah.shape[-1]
    total = len(rows) * t
    tasks: queue.SimpleQueue = queue.SimpleQueue()
    if len(rows) >= n_workers:
        for ri in range(len(rows)):
            tasks.put((ri, 0, t))
    else:
        # Few rows: split each row's sinks into contiguous chunks (warm starts within a chunk).
        bounds = np.linspace(0, t, n_workers + 1).round().astype(int)
        for ri in range(len(rows)):
            for c in range(n_workers):
                if bounds[c] < bounds[c + 1]:
                    tasks.put((ri, int(bounds[c]), int(bounds[c + 1])))
    n_workers = min(n_workers, tasks.qsize())
    stop = threading.Event()
    counts = [0] * n_workers
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            solver = RowSolver(ah)
            while not stop.is_set():
                try:
                    ri, j0, j1 = tasks.get_nowait()
                except queue.Empty:
                    return
                solver.start_row(rows[ri])
                for j in range(j0, j1):
                    if stop.is_set():
                        return
                    if reach[ri, j]:
                        raw[ri, j] = solver.solve(j)
                    counts[w] += 1
        except BaseException as exc:  # pragma: no cover - re-raised in the caller
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=work, args=(w,), name=f"attn-flow-{w}", daemon=True) for w in range(n_workers)]
    for th in threads:
        th.start()
    try:
        while True:
            alive = [th for th in threads if th.is_alive()]
            if not alive:
                break
            alive[0].join(0.005)
            if errors:
                break
            if cancel is not None and cancel():
                stop.set()
                for th in threads:
                    th.join()
                raise FlowCancelled(sum(counts), total)
            report(sum(counts))
    finally:
        stop.set()
        for th in threads:
            th.join()
    if errors:
        raise errors[0]
    report(sum(counts))


def _scipy_graph(ah: np.ndarray):
    """The full (L + 1) * T-node graph as a CSR matrix with int32 capacities rint(2**30 cap)."""
    import scipy.sparse as sp

    n_layers, t, _ = ah.shape
    n = (n_layers + 1) * t
    ii, jj = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    src, dst, cap = [], [], []
    for layer in range(1, n_layers + 1):
        c = np.rint(ah[layer - 1] * 2.0**30).astype(np.int32)
        keep = c > 0
        src.append((layer * t + ii)[keep])
        dst.append(((layer - 1) * t + jj)[keep])
        cap.append(c[keep])
    return sp.csr_array(
        (np.concatenate(cap), (np.concatenate(src), np.concatenate(dst))), shape=(n, n)
    )


def _run_scipy(ah, rows, raw, report, cancel) -> None:
    from scipy.sparse.csgraph import maximum_flow

    graph = _scipy_graph(ah)
    n_layers, t, _ = ah.shape
    done = 0
    total = len(rows) * t
    for ri, i in enumerate(rows):
        for j in range(t):
            if cancel is not None and cancel():
                raise FlowCancelled(done, total)
            raw[ri, j] = maximum_flow(graph, n_layers * t + i, j, method="dinic").flow_value / 2.0**30
            done += 1
            report(done)
