"""LazyTrace: attention of long contexts, recomputed on demand from queries and keys.

An :class:`~attn_widgets.AttentionTrace` holds every map, ``[L, H, T, T]`` float32: at
T = 4096 with 32 layers x 32 heads that is 64 GiB. A :class:`LazyTrace` holds what the
maps are made of instead, per layer the (post-rotary) queries ``[H, T, d]`` and keys
``[Hkv, T, d]`` plus the masks (causal, padding, sliding window), and recomputes

* one head's (or the mean / max of a layer's heads) ``[T, T]`` map: :meth:`head_map`;
* a tile, rows ``r0:r1`` x keys ``c0:c1``, optionally max-pooled: :meth:`tile`;
* max-pooled maps and thumbnails: :meth:`pooled`, :meth:`thumbnails`, and a cheap
  sampled-row :meth:`preview_thumbnails`,

in row blocks of about 1 M values, so nothing larger than the requested output (plus a
few MiB of scratch) is ever allocated and ``[L, H, T, T]`` never exists. At T = 4096 the
queries and keys of the 32 x 32 model above take 256 MiB (float32) or 128 MiB (float16).

A ``LazyTrace`` quacks like an ``AttentionTrace`` where the widgets need it (``tokens``,
``n_layers``, ``n_heads``, ``n_tokens``, ``shape``, ``causal``, ``special_mask``,
``model_name``, ``head_map``, ``check_layer`` ...): both satisfy :class:`TraceLike`, and
:class:`~attn_widgets.AttentionMatrix` / :class:`~attn_widgets.AttentionHeatmap` accept
either. Validation follows the same contract: bad input raises a ``ValueError`` (or
``TypeError``) naming the field and its shape, and nothing half-built escapes.

Gradients are out of scope: a lazy trace has ``gradients = None`` and
``has_gradients = False``; there is no ``attentions`` array, and reading it raises an
``AttributeError`` that says so (flows that need all maps or their gradients need an
``AttentionTrace``; :meth:`LazyTrace.materialize` builds one when it fits in memory).

Computation uses PyTorch when it is installed (about 25-35 ms per head at T = 4096 on
two CPU cores) and NumPy otherwise (several times slower). The head mean / max of a layer
and :meth:`LazyTrace.layer_stats` run a batched kernel over all heads at once (one matmul
per key group and row block of ``[H, n, T]`` scores, the causal triangle as an additive
0 / -inf bias; about 0.25 s per layer of 32 heads at T = 4096 on one thread, half the
per-head loop). Nothing here imports ipywidgets.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ._checks import (
    MEAN,
    _as_numpy,
    _check_special_mask,
    _check_strings,
    _check_token_ids,
    TraceChecks,
)
from ._compute import _NumpyOps, _ops, _TorchOps  # noqa: F401  (tests patch lazy._ops)
from ._executors import _THREAD_PREFIX, COMPUTE_THREADS, _executor  # noqa: F401
from ._wire import check_step as _check_step
from ._wire import pool_blocks, pool_step
from .interface import Trace
from .trace import AttentionTrace

__all__ = ["LazyTrace", "TraceLike", "pool_step", "pool_blocks"]

#: Threads of the panels' background jobs (attn_widgets._jobs pool, a route's look-ahead):
#: their calls run on the "jobs" compute thread, after any foreground call.
_JOB_THREADS = ("attn_widgets-pool", "attn_widgets-route")

#: About this many float32 scores are computed per row block (4 MiB of scratch).
BLOCK_VALUES = 1 << 20
#: Scores of all heads per row block in the batched kernel (head mean / max, statistics):
#: [H, n, T] of 8 MiB, measured fastest at T = 4096 with 32 heads (2 MiB and 1 MiB are
#: 10-35% slower: per-call overheads; 16 MiB falls out of the cache).
HEADS_BLOCK_VALUES = 1 << 21
#: Scores bounded by this need no max subtraction before the exponential.
_NO_SHIFT_BOUND = 60.0


#: Kept for older imports: the trace interface is :class:`attn_widgets.interface.Trace`.
TraceLike = Trace


# -- input conversion ---------------------------------------------------------------------
def _np(x: Any, name: str) -> np.ndarray:
    arr = _as_numpy(x, name)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a floating point array, received dtype {arr.dtype}")
    return arr


def _layers(x: Any, name: str, dtype: np.dtype, copy: bool = True) -> list[np.ndarray]:
    """Per-layer C-contiguous [H, T, d] arrays from one [L, H, T, d] array or a per-layer
    sequence of [H, T, d] (or [1, H, T, d]). ``copy=False`` keeps arrays that already have
    the right dtype and layout (the capture hands over arrays nobody else holds)."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{name}: expected one array per layer, received an empty sequence")
        layers = []
        for i, a in enumerate(x):
            a = _np(a, f"{name}[{i}]")
            if a.ndim == 4 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 3:
                raise ValueError(f"{name}[{i}]: expected [H, T, d], received shape {a.shape}")
            layers.append(a)
        shapes = {a.shape for a in layers}
        if len(shapes) != 1:
            raise ValueError(f"{name}: layers have different shapes {sorted(shapes)}")
    else:
        arr = _np(x, name)
        if arr.ndim != 4:
            raise ValueError(f"{name}: expected rank 4 [L, H, T, d] (or a list of [H, T, d]), received shape {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"{name}: empty array, received shape {arr.shape}")
        layers = list(arr)
    out = []
    for a in layers:
        if copy or a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
            a = np.array(a, dtype=dtype, order="C", copy=True)
        out.append(a)
    return out


def _per_layer(value: Any, n_layers: int, name: str, default: Callable[[], Any]) -> list:
    if value is None:
        return [default() for _ in range(n_layers)]
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        vals = list(value)
        if len(vals) != n_layers:
            raise ValueError(f"{name}: expected one value per layer ({n_layers}), received {len(vals)}")
        return vals
    return [value] * n_layers


class LazyTrace(TraceChecks):
    """Queries and keys of one input through one model; attention maps on demand.

    Parameters
    ----------
    tokens
        The T token strings (untrusted text: views render them as text only).
    queries
        ``[L, H, T, d]`` (or a list of L ``[H, T, d]`` arrays / tensors): each layer's
        queries as the attention sees them (after rotary embeddings, before scaling).
    keys
        ``[L, Hkv, T, d]``; ``Hkv`` divides ``H`` (grouped-query attention: query head
        ``h`` uses key head ``h // (H // Hkv)``).
    scaling
        Multiplier of ``q . k`` (one value, or one per layer); default ``d ** -0.5``.
    causal
        Query ``i`` sees keys ``j <= i`` only (decoder models).
    mask
        Optional extra bool ``[T, T]`` (True = query row may see key column), e.g. a
        sliding window; or one such mask (or None) per layer. Combined with ``causal``.
        Every query must see at least one key.
    softcap
        Optional attention logit soft-capping (Gemma 2): ``cap * tanh(s / cap)``.
    special_mask, model_name, token_ids, meta
        As in :class:`~attn_widgets.AttentionTrace`.
    dtype
        Storage of queries and keys: ``"float32"`` (default) or ``"float16"`` (half the
        memory; maps are still computed in float32).
    copy
        Copy the inputs (default). ``False`` keeps per-layer arrays that already are
        C-contiguous, writable and of ``dtype`` (the caller must not change them later).
    grad_route
        Optional streamed gradient-rollout route of one target position (a
        ``flows.streamed.StreamedRoute``, from ``trace_lazy(..., grad_rollout=True)``), kept
        as ``trace.grad_route``; None otherwise.

    Gradients are not captured for lazy traces (``gradients`` is always None).
    """

    target = None
    gradients = None
    key_tokens = None
    is_cross = False
    #: The gradient-rollout route streamed during capture (``trace_lazy(...,
    #: grad_rollout=True)``): an object with ``position``, ``target`` and
    #: ``route(keep=..., max_edges_per_layer=...) -> RouteGraph``; None when not captured.
    grad_route = None

    def __init__(
        self,
        tokens: Sequence[str],
        queries: Any,
        keys: Any,
        *,
        scaling: float | Sequence[float] | None = None,
        causal: bool = False,
        mask: Any = None,
        softcap: float | Sequence[float | None] | None = None,
        special_mask: Any = None,
        model_name: str = "",
        token_ids: Sequence[int] | None = None,
        meta: dict | None = None,
        dtype: str = "float32",
        copy: bool = True,
        grad_route: Any = None,
    ) -> None:
        tokens = _check_strings(tokens, "tokens")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype: expected 'float32' or 'float16', received {dtype!r}")
        np_dtype = np.dtype(dtype)

        q = _layers(queries, "queries", np_dtype, copy)
        k = _layers(keys, "keys", np_dtype, copy)
        q_shape = (len(q), *q[0].shape)
        k_shape = (len(k), *k[0].shape)
        if min(q_shape) == 0:
            raise ValueError(f"queries: empty array, received shape {q_shape}")
        if min(k_shape) == 0:
            raise ValueError(f"keys: empty array, received shape {k_shape}")
        n_layers, n_heads, t, d = q_shape
        if k_shape[0] != n_layers or k_shape[2] != t or k_shape[3] != d:
            raise ValueError(
                f"keys: expected shape [{n_layers}, Hkv, {t}, {d}] to match queries {q_shape}, received {k_shape}"
            )
        if n_heads % k_shape[1]:
            raise ValueError(
                f"keys: {k_shape[1]} key heads do not divide the {n_heads} query heads (queries {q_shape}, keys {k_shape})"
            )
        if len(tokens) != t:
            raise ValueError(f"tokens: expected {t} tokens to match queries {q_shape}, received {len(tokens)}")
        for name, arrs, shape in (("queries", q, q_shape), ("keys", k, k_shape)):
            for layer, arr in enumerate(arrs):
                if not np.isfinite(arr).all():
                    where = np.argwhere(~np.isfinite(arr))[0].tolist()
                    raise ValueError(f"{name}: contains NaN or inf (first at index {[layer, *where]}, shape {list(shape)})")

        scales = []
        for i, s in enumerate(_per_layer(scaling, n_layers, "scaling", lambda: d ** -0.5)):
            try:
                s = float(s)
            except (TypeError, ValueError):
                raise TypeError(f"scaling: expected a number per layer, layer {i} is {type(s).__name__}") from None
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"scaling: expected a finite number > 0, layer {i} has {s}")
            scales.append(s)
        caps = []
        for i, c in enumerate(_per_layer(softcap, n_layers, "softcap", lambda: None)):
            if c is not None:
                c = float(c)
                if not (math.isfinite(c) and c > 0):
                    raise ValueError(f"softcap: expected None or a finite number > 0, layer {i} has {c}")
            caps.append(c)

        causal = bool(causal)
        masks = self._check_masks(mask, n_layers, t, causal)

        smask = _check_special_mask(special_mask, t)
        ids = _check_token_ids(token_ids, t)

        smask.setflags(write=False)
        self.tokens = tokens
        self.causal = causal
        self.special_mask = smask
        self.model_name = str(model_name or "")
        self.token_ids = ids
        self.meta = dict(meta or {})
        self.dtype = dtype
        # Per layer [H, T, d] / [Hkv, T, d], writable internally (torch.from_numpy needs
        # it) and exposed read-only; a list, so the capture hands its arrays over uncopied.
        self._q = q
        self._k = k
        self._qk_shape = (q_shape, k_shape)
        self._scaling = tuple(scales)
        self._softcap = tuple(caps)
        self._masks = masks
        self.grad_route = grad_route
        self._tls = threading.local()
        self._fg = [0]  # foreground calls in flight (a list: the trace itself is frozen)
        self._fg_cv = threading.Condition()
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"LazyTrace is read-only: cannot set {name!r}")
        object.__setattr__(self, name, value)

    @staticmethod
    def _check_masks(mask: Any, n_layers: int, t: int, causal: bool) -> tuple:
        if mask is None:
            return (None,) * n_layers
        is_seq = isinstance(mask, (list, tuple))
        items = list(mask) if is_seq else [mask]
        if is_seq and len(items) != n_layers:
            raise ValueError(f"mask: expected one [T, T] mask (or None) per layer ({n_layers}), received {len(items)}")
        seen: dict[int, np.ndarray] = {}
        out = []
        tril = None
        for i, m in enumerate(items):
            if m is None:
                out.append(None)
                continue
            if id(m) in seen:  # the same mask object for many layers is stored once
                out.append(seen[id(m)])
                continue
            name = f"mask[{i}]" if is_seq else "mask"
            arr = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m)
            if arr.shape != (t, t):
                raise ValueError(f"{name}: expected a bool [T, T] = [{t}, {t}] mask, received shape {arr.shape}")
            if arr.dtype != bool:
                raise TypeError(f"{name}: expected a bool mask (True = may attend), received dtype {arr.dtype}")
            arr = np.ascontiguousarray(arr)
            if causal:
                if tril is None:
                    tril = np.tri(t, dtype=bool)
                sees = (arr & tril).any(axis=1)
            else:
                sees = arr.any(axis=1)
            if not sees.all():
                row = int(np.argmin(sees))
                raise ValueError(f"{name}: query row {row} may attend to no key{' (with causal=True)' if causal else ''}")
            arr.setflags(write=False)
            seen[id(m)] = arr
            out.append(arr)
        if not is_seq:
            out = out * n_layers
        return tuple(out)

    # -- AttentionTrace-like surface ----------------------------------------------------------
    @property
    def attentions(self) -> np.ndarray:
        L, H, T, _ = self.shape
        raise AttributeError(
            f"attentions: a LazyTrace keeps queries and keys, not the [L, H, T, T] = {[L, H, T, T]} attention "
            f"array ({L * H * T * T * 4 / 2**30:.1f} GiB as float32). Use head_map(layer, head), tile(...) or "
            "pooled(...); flows.route_graph (attention, rollout) and flows.head_stats read a LazyTrace layer by "
            "layer; the other flows over all layers (rollout matrices, max-flow) and gradients need an AttentionTrace: "
            "materialize() builds one when it fits in memory, or capture with attn_widgets.trace()."
        )

    @property
    def n_layers(self) -> int:
        return int(self._qk_shape[0][0])

    @property
    def n_heads(self) -> int:
        return int(self._qk_shape[0][1])

    @property
    def n_kv_heads(self) -> int:
        return int(self._qk_shape[1][1])

    @property
    def n_tokens(self) -> int:
        return int(self._qk_shape[0][2])

    @property
    def n_keys(self) -> int:
        return self.n_tokens

    @property
    def head_dim(self) -> int:
        return int(self._qk_shape[0][3])

    @property
    def key_labels(self) -> tuple[str, ...]:
        return self.tokens

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(L, H, T, T)``, the shape the full attention array would have."""
        L, H, T, _ = self._qk_shape[0]
        return (int(L), int(H), int(T), int(T))

    @property
    def has_gradients(self) -> bool:
        return False

    @property
    def queries(self) -> np.ndarray:
        """``[L, H, T, d]`` (a read-only copy, stacked from the per-layer arrays)."""
        v = np.stack(self._q)
        v.setflags(write=False)
        return v

    @property
    def keys(self) -> np.ndarray:
        """``[L, Hkv, T, d]`` (a read-only copy, stacked from the per-layer arrays)."""
        v = np.stack(self._k)
        v.setflags(write=False)
        return v

    @property
    def scaling(self) -> tuple[float, ...]:
        return self._scaling

    @property
    def masks(self) -> tuple:
        """Per layer: None or the extra bool ``[T, T]`` mask (shared objects are shared)."""
        return self._masks

    @property
    def nbytes(self) -> int:
        """Bytes of arrays this trace holds (queries, keys, distinct masks)."""
        masks = {id(m): m.nbytes for m in self._masks if m is not None}
        qk = sum(a.nbytes for a in self._q) + sum(a.nbytes for a in self._k)
        return int(qk + sum(masks.values()) + self.special_mask.nbytes)

    @property
    def on_demand(self) -> bool:
        """True: every map is recomputed from queries and keys when asked for."""
        return True

    def _heads(self, head: Any) -> tuple[list[int], str | None]:
        head = self.check_selector(head)
        if isinstance(head, str):
            return list(range(self.n_heads)), head
        return [head], None

    def __repr__(self) -> str:
        name = f"{self.model_name}: " if self.model_name else ""
        kv = f" ({self.n_kv_heads} key heads)" if self.n_kv_heads != self.n_heads else ""
        return (
            f"LazyTrace({name}{self.n_layers} layers x {self.n_heads} heads{kv}, {self.n_tokens} tokens"
            f"{', causal' if self.causal else ''}, q/k {self.dtype} {self.nbytes / 2**20:.0f} MiB)"
        )

    # -- maps ---------------------------------------------------------------------------------
    def head_map(self, layer: int, head: int | str) -> np.ndarray:
        """The ``[T, T]`` float32 map of one head, or ``"mean"`` / ``"max"`` of the layer's heads."""
        return self.tile(layer, head, 0, self.n_tokens, 0, self.n_tokens)

    def tile(self, layer: int, head: int | str, r0: int, r1: int, c0: int, c1: int, step: int = 1) -> np.ndarray:
        """Rows (queries) ``r0:r1`` x columns (keys) ``c0:c1`` of a head's map, float32.

        With ``step > 1`` the tile is max-pooled in ``step x step`` blocks starting at
        ``(r0, c0)`` (edge blocks are partial), shape ``[ceil(rows/step), ceil(cols/step)]``.
        Cost: proportional to ``(r1 - r0) * T`` (each row's softmax needs every key).
        """
        layer = self.check_layer(layer)
        heads, reduce = self._heads(head)
        r0, r1, c0, c1 = self.check_range(r0, r1, c0, c1)
        step = _check_step(step)
        return self._call(self._compute, layer, heads, reduce, slice(r0, r1), c0, c1, step, step)

    def pooled(self, layer: int, head: int | str, size: int) -> np.ndarray:
        """The map max-pooled to at most ``size`` per side; equals ``_wire.maxpool2d(head_map, size)``."""
        t = self.n_tokens
        return self.tile(layer, head, 0, t, 0, t, step=pool_step(t, size))

    def layer_stats(self, layer: int) -> dict[str, np.ndarray]:
        """Per-head statistics of one layer, each a float64 ``[H]`` array (means over the T
        query rows, as :func:`attn_widgets.flows.head_stats` defines them): ``"entropy"``
        (``-sum_j A log A``, nats), ``"distance"`` (``sum_j A |i - j|``, tokens) and
        ``"special"`` (the share on special tokens; zeros without any).

        Reduced row block by row block inside the kernel (all heads at once): one layer's
        maps are never held, and the cost is about that of :meth:`head_map` of ``"mean"``.
        """
        layer = self.check_layer(layer)
        return self._call(self._layer_stats, layer)

    def _layer_stats(self, layer: int, ops: Any = None) -> dict[str, np.ndarray]:
        ops = ops or _ops()
        t = self.n_tokens
        special = self.special_mask if self.special_mask.any() else None
        group = self.n_heads // self.n_kv_heads
        q, k = ops.layer_qk(self._q[layer], self._k[layer])
        q = q.reshape(self.n_kv_heads, group, *q.shape[1:])
        state: dict = {}

        def block(sel, nc, n, tri_from, hidden):
            size = self.n_heads * n * nc
            if state.get("size", 0) < size:
                state["size"] = size
                state["buf"] = self._scratch(ops, size, "heads")
                state["buf2"] = self._scratch(ops, size, "heads2")
            rows = np.arange(sel.start, sel.stop)
            return ops.stats_block(q, k, sel, rows, nc, group, self._scaling[layer], self._softcap[layer], tri_from,
                                   hidden, state["buf"], state["buf2"], self.causal, special)

        block.layer = layer
        total = np.zeros((3, self.n_heads))
        for _, _, part in self._blocks(block, slice(0, t), None, t, 1, max(1, HEADS_BLOCK_VALUES // self.n_heads)):
            total += part
        total /= t
        return {"entropy": total[0], "distance": total[1], "special": total[2]}

    # -- thumbnails -----------------------------------------------------------------------------
    def thumbnails(self, size: int = 48, layers: Sequence[int] | None = None) -> np.ndarray:
        """Exact max-pooled maps ``[len(layers), H, s, s]`` (all layers by default).

        Equal to ``_wire.maxpool2d(full [L, H, T, T], size)`` but computed head by head.
        Costs a full softmax per head: about ``L * H * T^2`` exponentials.
        """
        layers = range(self.n_layers) if layers is None else [self.check_layer(x) for x in layers]
        out = [layer_maps for _, layer_maps in self.iter_thumbnails(size, layers, background=False)]
        return np.stack(out) if out else np.zeros((0, self.n_heads, 0, 0), np.float32)

    def iter_thumbnails(
        self,
        size: int = 48,
        layers: Sequence[int] | None = None,
        *,
        background: bool = True,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(layer, [H, s, s] exact max-pooled maps)`` layer by layer.

        With ``background=True`` the heads are computed on the background compute thread
        and the work steps aside (between heads) while a foreground call (:meth:`tile`,
        :meth:`head_map`, ...) is running, so a panel stays responsive while thumbnails
        are computed. ``cancelled()`` is polled between heads; when it returns True the
        iteration stops.
        """
        t = self.n_tokens
        step = pool_step(t, size)
        layers = range(self.n_layers) if layers is None else layers
        for layer in layers:
            layer = self.check_layer(layer)
            maps = []
            for h in range(self.n_heads):
                if cancelled is not None and cancelled():
                    return
                args = (layer, [h], None, slice(0, t), 0, t, step, step)
                if background:
                    self._wait_foreground_idle()
                    maps.append(_executor("background").submit(self._compute, *args).result())
                else:
                    maps.append(self._call(self._compute, *args))
            yield layer, np.stack(maps)

    def preview_thumbnails(self, size: int = 48) -> tuple[np.ndarray, dict]:
        """A cheap approximation of :meth:`thumbnails` for a first display.

        Each thumbnail row is computed from **one sampled query row** (the middle one of
        the ``k`` rows the pixel covers) instead of the max over all ``k``; columns are
        exact max-pools over keys. Values are therefore <= the exact ones (a lower bound;
        a sharp head may look fainter). Cost: ``L * H * s * T`` instead of ``L * H * T^2``.
        When ``T <= size`` the result is exact.

        Returns ``(maps [L, H, s, s] float32, info)`` where ``info`` has ``exact``
        (bool), ``rows_per_pixel`` (k) and ``sampled_rows`` (the row indices).
        """
        t = self.n_tokens
        step = pool_step(t, size)
        if step == 1:
            return self.thumbnails(size), {"exact": True, "rows_per_pixel": 1, "sampled_rows": list(range(t))}
        n_out = math.ceil(t / step)
        rows = np.minimum(np.arange(n_out) * step + step // 2, t - 1).astype(np.int64)
        out = np.zeros((self.n_layers, self.n_heads, n_out, n_out), np.float32)

        def run() -> None:
            biases: dict = {}
            try:
                for layer in range(self.n_layers):
                    mask = self._masks[layer]
                    if id(mask) not in biases:
                        biases[id(mask)] = self._preview_bias(rows, mask)
                    out[layer] = self._preview_layer(layer, rows, step, biases[id(mask)])
            finally:  # the [H, s, T] scratch is big and needed once: do not keep it
                for key in [k for k in getattr(self._tls, "bufs", {}) if k.endswith(":preview")]:
                    del self._tls.bufs[key]

        self._call(run)
        return out, {"exact": False, "rows_per_pixel": step, "sampled_rows": rows.tolist()}

    def thumbnail_cost(self) -> float:
        """Exponentials needed for exact thumbnails of every head (about half of L*H*T^2 if causal)."""
        t = self.n_tokens
        per_head = t * (t + 1) / 2 if self.causal and all(m is None for m in self._masks) else t * t
        return float(self.n_layers * self.n_heads * per_head)

    # -- conversion -------------------------------------------------------------------------------
    def materialize(self, max_bytes: int = 1 << 30) -> AttentionTrace:
        """An :class:`AttentionTrace` with every map (refuses above ``max_bytes`` of float32)."""
        L, H, T, _ = self.shape
        need = L * H * T * T * 4
        if need > max_bytes:
            raise ValueError(
                f"max_bytes: the full attentions [{L}, {H}, {T}, {T}] take {need / 2**30:.2f} GiB, over the "
                f"{max_bytes / 2**30:.2f} GiB limit; raise max_bytes or keep using the LazyTrace"
            )
        attn = np.empty((L, H, T, T), np.float32)
        for layer in range(L):
            for h in range(H):
                attn[layer, h] = self.head_map(layer, h)
        return AttentionTrace(
            tokens=self.tokens,
            attentions=attn,
            causal=self.causal,
            special_mask=self.special_mask,
            model_name=self.model_name,
            token_ids=self.token_ids,
            meta={**self.meta, "materialized_from": "LazyTrace"},
        )

    # -- scheduling between foreground requests and background thumbnails ------------------------
    def _call(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` on a compute thread (see :func:`_executor`): the foreground one
        for a panel's request (a map, a tile), the "jobs" one for the panels' background jobs
        (a route, head statistics: calls from the job pool's threads). A job waits until no
        foreground call is running before each call, so a head switch is not queued behind a
        route's layer."""
        name = threading.current_thread().name
        if name.startswith(_THREAD_PREFIX):
            with self._foreground():
                return fn(*args)  # already on a compute thread
        if name.startswith(_JOB_THREADS):
            self._wait_foreground_idle()
            return _executor("jobs").submit(fn, *args).result()
        with self._foreground():
            return _executor("foreground").submit(fn, *args).result()

    @contextlib.contextmanager
    def _foreground(self) -> Iterator[None]:
        with self._fg_cv:
            self._fg[0] += 1
        try:
            yield
        finally:
            with self._fg_cv:
                self._fg[0] -= 1
                self._fg_cv.notify_all()

    def _wait_foreground_idle(self, timeout: float = 30.0) -> None:
        with self._fg_cv:
            self._fg_cv.wait_for(lambda: self._fg[0] == 0, timeout=timeout)

    # -- the kernel ---------------------------------------------------------------------------------
    def _preview_bias(self, rows: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
        """Additive ``[n, T]`` mask (0 / -inf) of the sampled rows: one broadcast add is far
        cheaper than a broadcast masked fill."""
        t = self.n_tokens
        hidden = np.zeros((len(rows), t), dtype=bool)
        if self.causal:
            hidden |= np.arange(t)[None, :] > rows[:, None]
        if mask is not None:
            hidden |= ~mask[rows]
        if not hidden.any():
            return None
        return np.where(hidden, np.float32(-np.inf), np.float32(0.0)).astype(np.float32)

    def _preview_layer(
        self, layer: int, rows: np.ndarray, step: int, bias: np.ndarray | None = None, ops: Any = None
    ) -> np.ndarray:
        """All heads of one layer at once: ``[H, len(rows), ceil(T / step)]`` column-pooled
        probabilities of the sampled query ``rows`` (one batched matmul, one softmax).
        ``bias`` is :meth:`_preview_bias` of the layer's mask."""
        ops = ops or _ops()
        t = self.n_tokens
        n = len(rows)
        buf = self._scratch(ops, self.n_heads * n * t, "preview")
        s = ops.batch_scores(self._q[layer], self._k[layer], rows, self.n_heads // self.n_kv_heads, buf)
        ops.mul(s, self._scaling[layer])
        cap = self._softcap[layer]
        if cap is not None:
            ops.softcap(s, cap)
        if bias is not None:
            ops.add_(s, ops.native(bias)[None])
        flat = s.reshape(self.n_heads * n, t)
        ops.softmax_(flat)
        pooled = ops.pool_cols(flat, step)
        out = np.zeros((self.n_heads * n, pooled.shape[1]), np.float32)
        ops.write(out, 0, pooled)
        return out.reshape(self.n_heads, n, -1)

    def _scratch(self, ops, n: int, which: str = "s"):
        key = f"{type(ops).__name__}:{which}"
        cache = getattr(self._tls, "bufs", None)
        if cache is None:
            cache = self._tls.bufs = {}
        buf = cache.get(key)
        if buf is None or buf.shape[0] < n:
            buf = cache[key] = ops.scratch(n)
        return buf

    def _compute(
        self,
        layer: int,
        heads: list[int],
        reduce: str | None,
        rows: slice | np.ndarray,
        c0: int,
        c1: int,
        rstep: int,
        cstep: int,
        ops: Any = None,
    ) -> np.ndarray:
        """Probabilities of ``rows`` (a slice or sorted index array) x keys ``c0:c1`` of the
        given heads (mean / max over them with ``reduce``), max-pooled by ``rstep`` x
        ``cstep``. Row blocks of about :data:`BLOCK_VALUES` scores; output float32."""
        ops = ops or _ops()
        t = self.n_tokens
        if isinstance(rows, slice):
            r_idx = None
            n_rows = rows.stop - rows.start
        else:
            r_idx = np.asarray(rows, dtype=np.int64)
            n_rows = len(r_idx)
        out = np.zeros((math.ceil(n_rows / rstep), math.ceil((c1 - c0) / cstep)), np.float32)
        if reduce is not None and len(heads) == self.n_heads:
            blocks = self._blocks(self._batched(layer, reduce, ops), rows, r_idx, n_rows, rstep,
                                  max(1, HEADS_BLOCK_VALUES // self.n_heads))
        else:
            blocks = self._blocks(self._per_head(layer, heads, reduce, ops), rows, r_idx, n_rows, rstep, BLOCK_VALUES)
        for i0, nc, acc in blocks:
            if c0 < nc:
                x = acc[:, c0 : min(c1, nc)]
                x = ops.pool_cols(ops.pool_rows(x, rstep), cstep)  # rows first: cheap, shrinks
                ops.write(out, i0 // rstep, x)
        return out

    def _blocks(self, block_fn: Callable, rows: slice | np.ndarray, r_idx: np.ndarray | None, n_rows: int,
                rstep: int, values: int) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(i0, nc, result of block_fn(sel, nc, n, tri_from, hidden))`` for row blocks
        of about ``values`` scores per head, each a multiple of ``rstep`` rows. ``nc``: keys
        after the block's last query are never seen when causal (the softmax needs the
        rest); ``tri_from``: the first column of
        the causal triangle of a contiguous block (None: no triangle); ``hidden``: bool
        ``[n, nc]`` keys the queries may not see beyond that triangle (None: none)."""
        t = self.n_tokens
        causal = self.causal
        mask = self._masks[block_fn.layer]
        i0 = 0
        while i0 < n_rows:
            first = rows.start + i0 if r_idx is None else int(r_idx[i0])
            if causal and r_idx is None:
                # n * min(t, first + n) <= values: the block covers the triangle up to its last row
                n = int((math.sqrt(first * first + 4.0 * values) - first) / 2)
            else:
                n = values // t
            n = rstep * max(1, n // rstep)
            i1 = min(n_rows, i0 + n)
            n = i1 - i0
            if r_idx is None:
                sel: Any = slice(rows.start + i0, rows.start + i1)
                last = sel.stop - 1
            else:
                sel = r_idx[i0:i1]
                last = int(sel[-1])
            nc = min(t, last + 1) if causal else t
            tri_from = None
            hidden = None
            if causal:
                if r_idx is None:
                    if nc > sel.start + 1:
                        tri_from = sel.start
                else:
                    hidden = np.arange(nc)[None, :] > sel[:, None]
            if mask is not None:
                extra = ~mask[sel, :nc]
                hidden = extra if hidden is None else hidden | extra
            yield i0, nc, block_fn(sel, nc, n, tri_from, hidden)
            i0 = i1

    def _per_head(self, layer: int, heads: list[int], reduce: str | None, ops: Any) -> Callable:
        """One head at a time into one ``[n, nc]`` scratch (a single head's map or tile)."""
        group = self.n_heads // self.n_kv_heads
        scale = self._scaling[layer]
        cap = self._softcap[layer]
        t = self.n_tokens
        qk = {h: ops.head_qk(self._q[layer][h], self._k[layer][h // group]) for h in heads}
        state: dict = {}

        def block(sel, nc, n, tri_from, hidden):
            if state.get("size", 0) < n * nc:  # grows to the largest block (about BLOCK_VALUES)
                state["size"] = n * nc
                state["buf"] = self._scratch(ops, n * nc)
                state["acc"] = self._scratch(ops, n * nc, "acc") if reduce else None
            s = ops.view(state["buf"], n, nc)
            acc = ops.view(state["acc"], n, nc) if reduce else None
            fut = None
            if tri_from is not None:
                fut = np.triu(np.ones((n, nc - tri_from), dtype=bool), k=1)
            for j, h in enumerate(heads):
                qh, kh = qk[h]
                ops.scores(ops.rows(qh, sel), kh, nc, s)
                ops.mul(s, scale)
                if cap is not None:
                    ops.softcap(s, cap)
                if fut is not None:
                    ops.fill(s[:, tri_from:], fut, float("-inf"))
                if hidden is not None:
                    ops.fill(s, hidden, float("-inf"))
                ops.softmax_(s)
                if reduce is None:
                    acc = s
                elif j == 0:
                    acc[...] = s
                elif reduce == MEAN:
                    ops.add_(acc, s)
                else:
                    ops.max_(acc, s)
            if reduce == MEAN:
                ops.mul(acc, 1.0 / len(heads))
            return acc

        block.layer = layer
        return block

    def _batched(self, layer: int, reduce: str | None, ops: Any, fn: Callable | None = None) -> Callable:
        """Every head of a row block at once (:meth:`_TorchOps.heads_exp`), reduced over
        the heads (``reduce``) or handed to ``fn(probs [H, n, nc], sel, nc)``."""
        group = self.n_heads // self.n_kv_heads
        scale = self._scaling[layer]
        cap = self._softcap[layer]
        ql, kl = self._q[layer], self._k[layer]
        q, k = ops.layer_qk(ql, kl)
        q = q.reshape(self.n_kv_heads, group, *q.shape[1:])  # a view: heads of one key group together
        # |s_ij| <= scale |q_i| max_j |k_j| (or the softcap): rows whose bound is <= 60 need no
        # max subtraction before exp (exp(60) * T cannot overflow, exp(-60) is a normal float).
        if cap is not None and cap <= _NO_SHIFT_BOUND:
            bound = None
        else:
            qn = np.sqrt(np.einsum("htd,htd->ht", ql, ql, dtype=np.float32)).reshape(self.n_kv_heads, group, -1)
            kn = np.sqrt(np.einsum("htd,htd->ht", kl, kl, dtype=np.float32)).max(axis=1)
            bound = (qn * kn[:, None, None] * np.float32(scale * 1.001)).max(axis=(0, 1))  # [T]
        state: dict = {}

        def block(sel, nc, n, tri_from, hidden):
            size = self.n_heads * n * nc
            if state.get("size", 0) < size:  # grows to the largest block (<= HEADS_BLOCK_VALUES + a row)
                state["size"] = size
                state["buf"] = self._scratch(ops, size, "heads")
            bias = None if hidden is None else ops.bias(hidden)
            shift = bound is not None and bool(bound[sel].max() > _NO_SHIFT_BOUND)
            e, z = ops.heads_exp(q, k, sel, nc, group, scale, cap, tri_from, bias, state["buf"], shift)
            if reduce == MEAN and fn is None:
                return ops.exp_mean(e, z)
            p = ops.normalise(e, z)
            return ops.amax0(p) if fn is None else fn(p, sel, nc)

        block.layer = layer
        return block
