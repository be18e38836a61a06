"""Route graphs walked layer by layer as the layers arrive (e.g. during a backward pass).

:func:`~attn_widgets.flows.route_from_layers` needs every layer's ``[T, T]`` matrix at
hand. A long-context capture cannot keep them (the gradient rollout of a 4096-token,
32 x 32-head model needs ``[L, H, T, T]`` gradients: 64 GiB), but it produces them from
the top layer down, which is exactly the order the route walks. :class:`StreamedRouteBuilder`
takes one layer at a time, as row blocks of that layer's weighted edges
``w[q, k] = r_{l+1}[q] * E_l[q, k]`` for the rows ``q`` the route reaches, and keeps only a
summary per layer:

* the node row ``r_l`` (``[T]``), the carry (``[T]``), the layer's cross-token total;
* the strongest ``keep_edges`` cross-token edges (ties: lowest ``(query, key)`` first,
  as :func:`route_from_layers` breaks them);
* the number of non-zero cross-token edges, and a count / sum histogram of their
  magnitudes over the float32 bit pattern (sign, exponent and 7 mantissa bits: bins
  ``2**-7`` wide relative to their value).

:meth:`StreamedRoute.route` then prunes by any ``keep`` without the matrices. What is
exact (equal to ``route_from_layers`` on the same matrices, up to float rounding):
``node``, ``carry``, ``layer_total``, ``total``; ``needed`` whenever the kept edges fit in
the stored ``keep_edges`` (always for ``keep = 1``: the non-zero count); the kept edges,
``dropped`` and ``capped`` whenever ``min(needed, max_edges_per_layer) <= keep_edges``.
When ``keep`` needs more edges than were stored, the stored ones are returned,
``capped`` is True (as when ``max_edges_per_layer`` bites) and ``needed`` is estimated from
the histogram: the edges above the bin where the running sum crosses ``keep * total``
are counted exactly, those inside that bin from its mean (an error of at most the
bin's count times ``2**-7``). The capture's kernel counts cross-token weights below
float32's smallest normal number (1.2e-38) as zero edges. Memory: ``O(L * T + L * keep_edges)`` plus the histogram's
non-empty bins.

Pure numpy; the heavy per-block work may be done elsewhere (the capture does it in
torch) and handed over through :meth:`LayerAccumulator.offer` / :meth:`LayerAccumulator.finish`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .route import MAX_EDGES_PER_LAYER, RouteGraph, _check_cap, _check_keep, _check_token, _graph

__all__ = ["StreamedRoute", "StreamedRouteBuilder", "LayerAccumulator", "streamed_route_from_layers",
           "HIST_BINS", "HIST_SHIFT"]

#: Magnitude histogram: float32 bit pattern >> HIST_SHIFT (non-negative floats: < HIST_BINS).
HIST_SHIFT = 16
HIST_BINS = 1 << (31 - HIST_SHIFT)


def hist_keys(mag: np.ndarray) -> np.ndarray:
    """Histogram bins of positive magnitudes (float32 bit pattern >> :data:`HIST_SHIFT`)."""
    return (np.ascontiguousarray(mag, dtype=np.float32).view(np.int32) >> HIST_SHIFT).astype(np.int64)


class LayerAccumulator:
    """One layer's summary, built from row blocks offered in increasing row order."""

    def __init__(self, keep_edges: int) -> None:
        self.keep_edges = int(keep_edges)
        self._q: list[np.ndarray] = []
        self._k: list[np.ndarray] = []
        self._w: list[np.ndarray] = []
        self._n = 0
        self.threshold = 0.0  # an edge must exceed this to enter the top keep_edges
        self.result: dict | None = None

    def offer(self, query: np.ndarray, key: np.ndarray, weight: np.ndarray) -> None:
        """Candidate cross-token edges (all those of a block with ``weight > threshold``),
        blocks in increasing query order, each block's edges in any order."""
        if len(weight) == 0:
            return
        self._q.append(np.asarray(query, dtype=np.int32))
        self._k.append(np.asarray(key, dtype=np.int32))
        self._w.append(np.asarray(weight, dtype=np.float64))
        self._n += len(weight)
        if self._n > 2 * self.keep_edges:
            self._compress()

    def _compress(self) -> None:
        q, k, w = (np.concatenate(x) for x in (self._q, self._k, self._w))
        order = np.lexsort((k, q, -w))[: self.keep_edges]  # strongest first, ties by (query, key)
        q, k, w = q[order], k[order], w[order]
        self._q, self._k, self._w, self._n = [q], [k], [w], len(w)
        if len(w) == self.keep_edges:
            # Later blocks hold larger (query, key): an equal weight loses the tie, so strict >.
            self.threshold = float(w[-1])

    def offer_dense(self, rows: np.ndarray, w: np.ndarray) -> None:
        """A block of cross-token edges ``w[i, k]`` of query ``rows[i]`` (diagonal already zero)."""
        qi, ki = np.nonzero(w > self.threshold)
        self.offer(np.asarray(rows)[qi], ki, w[qi, ki])

    def finish(self, cross: np.ndarray, carry: np.ndarray, nnz: int, hist_count: np.ndarray,
               hist_sum: np.ndarray) -> None:
        """The layer's column sums of cross-token weight (``[T]``), carry (``[T]``), the count of
        non-zero cross-token edges and the magnitude histogram (``[HIST_BINS]`` count / sum)."""
        if self._n:
            self._compress()
        q, k, w = ((np.concatenate(x) if x else np.zeros(0, d)) for x, d in
                   ((self._q, np.int32), (self._k, np.int32), (self._w, np.float64)))
        hc = np.asarray(hist_count, dtype=np.int64)
        hs = np.asarray(hist_sum, dtype=np.float64)
        bins = np.flatnonzero(hc)[::-1]  # strongest bin first
        self.result = {
            "cross": np.asarray(cross, dtype=np.float64), "carry": np.asarray(carry, dtype=np.float64),
            "query": q, "key": k, "weight": w, "nnz": int(nnz),
            "hist_count": hc[bins], "hist_sum": hs[bins],
        }


class StreamedRouteBuilder:
    """Walks a route down from ``position`` as layers arrive, top layer first.

    For layer ``l`` (``L - 1`` down to 0): :meth:`rows` are the query rows the route
    reaches, :meth:`weights` their share ``r_{l+1}``; hand the layer's edges to
    :meth:`start`'s accumulator and call :meth:`finish`. :meth:`skip` is a layer whose
    cross-token matrix is zero (its carry only).
    """

    def __init__(self, n_layers: int, n_tokens: int, position: int, *, keep_edges: int = MAX_EDGES_PER_LAYER,
                 method: str = "grad_rollout", target: str = "", identity_carry: bool = True) -> None:
        if isinstance(keep_edges, bool) or not isinstance(keep_edges, (int, np.integer)) or keep_edges < 1:
            raise ValueError(f"keep_edges: expected an int >= 1, received {keep_edges!r}")
        self.n_layers, self.n_tokens = int(n_layers), int(n_tokens)
        self.position = _check_token(position, self.n_tokens, "position")
        self.keep_edges = int(keep_edges)
        self.method, self.target = method, str(target)
        self.identity_carry = bool(identity_carry)
        self.node = np.zeros((self.n_layers + 1, self.n_tokens))
        self.node[self.n_layers, self.position] = 1.0
        self.next_layer = self.n_layers - 1  # the layer the walk needs next
        self._layers: dict[int, dict] = {}

    def rows(self, layer: int) -> np.ndarray:
        return np.flatnonzero(self.node[layer + 1])

    def weights(self, layer: int) -> np.ndarray:
        return self.node[layer + 1]

    def start(self, layer: int) -> LayerAccumulator:
        if layer != self.next_layer:
            raise RuntimeError(f"layer {layer} arrived out of order; the walk needs layer {self.next_layer}")
        return LayerAccumulator(self.keep_edges)

    def identity(self, layer: int) -> np.ndarray:
        """Carry of the identity (``r_{l+1}``) when ``identity_carry``, else zeros."""
        r = self.node[layer + 1]
        return r.copy() if self.identity_carry else np.zeros_like(r)

    def finish(self, layer: int, acc: LayerAccumulator) -> None:
        res = acc.result
        if res is None:
            raise RuntimeError("finish: the accumulator was not finished (call acc.finish(...))")
        nxt = res["cross"] + np.abs(res["carry"])
        s = float(nxt.sum())
        res["layer_total"] = float(res["cross"].sum())
        res["total"] = s
        self.node[layer] = nxt / s if s > 0 else nxt
        self._layers[layer] = res
        self.next_layer = layer - 1

    def skip(self, layer: int) -> None:
        acc = self.start(layer)
        acc.finish(np.zeros(self.n_tokens), self.identity(layer), 0, np.zeros(0, np.int64), np.zeros(0))
        self.finish(layer, acc)

    def build(self) -> "StreamedRoute":
        if self.next_layer != -1:
            raise RuntimeError(f"build: layers {self.next_layer}..0 were not walked")
        return StreamedRoute(self)


class StreamedRoute:
    """A walked route's per-layer summary; :meth:`route` prunes it by any ``keep``.

    Attributes
    ----------
    position
        The output token the route starts from.
    target
        What the gradients were taken of (text), for gradient methods.
    method
        The flow method (``"grad_rollout"``).
    keep_edges
        How many of the strongest cross-token edges each layer stored.
    n_layers, n_tokens
        ``L`` and ``T``.
    """

    def __init__(self, builder: StreamedRouteBuilder) -> None:
        L = builder.n_layers
        self.position = builder.position
        self.target = builder.target
        self.method = builder.method
        self.keep_edges = builder.keep_edges
        self.n_layers, self.n_tokens = L, builder.n_tokens
        self._node = _ro(builder.node.copy())
        lay = [builder._layers[i] for i in range(L)]
        self._carry = _ro(np.stack([x["carry"] for x in lay]))
        self._layer_total = _ro(np.array([x["layer_total"] for x in lay]))
        self._total = _ro(np.array([x["total"] for x in lay]))
        self._nnz = np.array([x["nnz"] for x in lay], dtype=np.int64)
        self._edges = [(x["query"], x["key"], x["weight"], np.cumsum(x["weight"])) for x in lay]
        self._hist = [(x["hist_count"], x["hist_sum"]) for x in lay]

    @property
    def nbytes(self) -> int:
        n = self._node.nbytes + self._carry.nbytes
        n += sum(q.nbytes + k.nbytes + w.nbytes + c.nbytes for q, k, w, c in self._edges)
        return int(n + sum(a.nbytes + b.nbytes for a, b in self._hist))

    def __repr__(self) -> str:
        return (f"StreamedRoute({self.method}, position {self.position}, {self.n_layers} layers x "
                f"{self.n_tokens} tokens, top {self.keep_edges} edges per layer; target: {self.target})")

    def _needed(self, layer: int, keep: float) -> tuple[int, bool]:
        """(edges ``keep`` needs, exact?) for one layer."""
        total = float(self._layer_total[layer])
        nnz = int(self._nnz[layer])
        if nnz == 0 or total <= 0:
            return 0, True
        if keep >= 1.0:
            return nnz, True
        target = keep * total * (1.0 - 1e-12)  # the rounding margin route_from_layers uses
        cum = self._edges[layer][3]
        if cum.size and cum[-1] >= target:
            return min(int(np.searchsorted(cum, target, side="left")) + 1, nnz), True
        count, sums = self._hist[layer]
        run = np.cumsum(sums)
        b = min(int(np.searchsorted(run, target, side="left")), len(run) - 1)
        above = int(count[:b].sum())
        rest = target - (float(run[b - 1]) if b else 0.0)
        mean = float(sums[b]) / int(count[b])
        inside = int(np.clip(np.ceil(rest / mean), 1, count[b]))
        return int(np.clip(above + inside, cum.size + 1, nnz)), False

    def needed(self, keep: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Per layer: how many edges ``keep`` needs, and whether that count is exact."""
        k = _check_keep(keep)
        out = [self._needed(layer, k) for layer in range(self.n_layers)]
        return np.array([n for n, _ in out], dtype=np.int64), np.array([e for _, e in out], dtype=bool)

    def route(self, keep: float = 0.8, max_edges_per_layer: int | None = MAX_EDGES_PER_LAYER) -> RouteGraph:
        """The :class:`RouteGraph` that ``route_from_layers`` gives on the full matrices.

        Exact while ``min(needed, max_edges_per_layer) <= keep_edges`` in every layer (see
        the module docs); beyond, the stored ``keep_edges`` strongest edges are kept and
        ``capped`` is True there.
        """
        k = _check_keep(keep)
        cap = _check_cap(max_edges_per_layer)
        L = self.n_layers
        needed = np.zeros(L, dtype=np.int64)
        capped = np.zeros(L, dtype=bool)
        dropped = np.zeros(L)
        out: list[list[np.ndarray]] = [[], [], [], []]
        for layer in range(L):
            q, kk, w, cum = self._edges[layer]
            need, _ = self._needed(layer, k)
            n = need if cap is None else min(need, cap)
            capped[layer] = (cap is not None and need > cap) or n > w.size
            n = min(n, w.size)
            needed[layer] = need
            dropped[layer] = float(self._layer_total[layer]) - (float(cum[n - 1]) if n else 0.0)
            out[0].append(np.full(n, layer, dtype=np.int32))
            out[1].append(q[:n])
            out[2].append(kk[:n])
            out[3].append(w[:n])
        cat = [np.concatenate(x) for x in out]
        return _graph(self.method, self.position, k, cat, carry=self._carry.copy(), node=self._node.copy(),
                      layer_total=self._layer_total.copy(), dropped=dropped, needed=needed, capped=capped,
                      total=self._total.copy())


def _ro(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    x.flags.writeable = False
    return x


def streamed_route_from_layers(
    mats: Any,
    token: int,
    *,
    carry: Any = None,
    keep_edges: int = MAX_EDGES_PER_LAYER,
    block_rows: int = 7,
    method: str = "custom",
) -> StreamedRoute:
    """The streamed walk of ``[L, T, T]`` matrices (diagonal = carry, ``carry`` ``[L, T]`` added on
    top, e.g. ones for an identity), one layer and ``block_rows`` rows at a time, in numpy: the
    reference for the capture's streamed gradient rollout, and a way to test :class:`StreamedRoute`.
    """
    e = np.asarray(mats)
    if e.ndim != 3 or e.shape[1] != e.shape[2] or min(e.shape) == 0:
        raise ValueError(f"mats: expected a non-empty [L, T, T] array, received shape {e.shape}")
    n_layers, t = e.shape[0], e.shape[-1]
    extra = None if carry is None else np.asarray(carry, dtype=np.float64)
    b = StreamedRouteBuilder(n_layers, t, token, keep_edges=keep_edges, method=method, identity_carry=False)
    for layer in range(n_layers - 1, -1, -1):
        rows, r = b.rows(layer), b.weights(layer)
        acc = b.start(layer)
        cross = np.zeros(t)
        c = np.zeros(t)
        nnz = 0
        hc = np.zeros(HIST_BINS, np.int64)
        hs = np.zeros(HIST_BINS)
        for i0 in range(0, rows.size, block_rows):
            idx = rows[i0:i0 + block_rows]
            w = r[idx, None] * np.asarray(e[layer][idx], dtype=np.float64)
            ar = np.arange(idx.size)
            c[idx] = w[ar, idx]
            w[ar, idx] = 0.0
            w = np.abs(w)
            cross += w.sum(axis=0)
            pos = w[w > 0]
            nnz += pos.size
            keys = hist_keys(pos)
            hc += np.bincount(keys, minlength=HIST_BINS)
            hs += np.bincount(keys, weights=pos, minlength=HIST_BINS)
            acc.offer_dense(idx, w)
        if extra is not None:
            c[rows] += r[rows] * extra[layer, rows]
        acc.finish(cross, c, nnz, hc, hs)
        b.finish(layer, acc)
    return b.build()
