"""Exact max-flow for the attention-flow graph: warm-started push-relabel, compiled by numba.

The graph (Abnar & Zuidema 2020) has a node ``(l, i)`` per layer boundary ``l = 0..L`` and
token ``i``, and an edge ``(l, i) -> (l - 1, j)`` of capacity ``Ah_l[i, j]``. For the pair
(source ``(L, i)``, sink ``(0, j)``) only these nodes matter:

* the source ``s = (L, i)``; its edges are row ``i`` of ``Ah_L``;
* the ``M = L - 1`` internal boundaries ``l = L-1 .. 1`` ("internal layer" ``m = L-1-l``),
  joined by the dense blocks ``Ah_{L-1} .. Ah_2`` -- the same for every pair;
* the sink ``t = (0, j)``; its edges are column ``j`` of ``Ah_1``.

The other top-layer nodes have no incoming edges and the other layer-0 nodes no outgoing
ones, so they carry no s-t flow. For one source row, consecutive sinks differ only in the
capacities into ``t``; :func:`solve_sink` therefore keeps the previous sink's *preflow*
and only re-balances it (push-relabel phase one, highest label first, exact global
relabelling by BFS, gap heuristic). Phase one ends with a maximum preflow, whose excess
at ``t`` is the max-flow value, so phase two (returning stranded excess to the source) is
never needed.

Capacities are integers (``rint(cap * 2**48)``, int64), so every step is exact; the only
error is that rounding, at most ``2**-49`` per edge of the minimum cut.

The flow is sparse in practice (a few thousand of the ``M * T**2`` edges carry any), so
the kernels keep, for every block, the lists of edges with positive flow (successor and
predecessor lists with positions for O(1) removal) and, per internal layer, doubly linked
buckets of nodes by label. Pushes along forward edges walk the bucket of the label below;
relabels scan buckets upwards until they meet an unsaturated edge; the BFS labels a node
as soon as one of its edges reaches the frontier. Work per sink then grows with the number
of edges whose flow changes rather than with ``M * T**2``.

All functions take plain arrays (no Python objects) and release the GIL, so several
solvers (one per thread, each with its own state) can run in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Capacities are ``rint(cap * SCALE)``; int64 leaves 2**15 of headroom for sums.
SCALE_BITS = 48
SCALE = float(2**SCALE_BITS)

_I32 = np.int32
_I64 = np.int64


@njit(cache=True, nogil=True, inline="always")
def _arc_add(b, x, v, slist, scnt, spos, plist, pcnt, ppos):
    k = scnt[b, x]
    slist[b, x, k] = v
    spos[b, x, v] = k
    scnt[b, x] = k + 1
    k = pcnt[b, v]
    plist[b, v, k] = x
    ppos[b, v, x] = k
    pcnt[b, v] = k + 1


@njit(cache=True, nogil=True, inline="always")
def _arc_remove(b, x, v, slist, scnt, spos, plist, pcnt, ppos):
    k = spos[b, x, v]
    last = scnt[b, x] - 1
    lv = slist[b, x, last]
    slist[b, x, k] = lv
    spos[b, x, lv] = k
    scnt[b, x] = last
    k = ppos[b, v, x]
    last = pcnt[b, v] - 1
    lx = plist[b, v, last]
    plist[b, v, k] = lx
    ppos[b, v, lx] = k
    pcnt[b, v] = last


@njit(cache=True, nogil=True)
def _global_relabel(M, T, cap, flow, slist, scnt, csnk, fsnk, d, cnt, bhead, bnext, bprev, lmax,
                    queue, fl, fc, ulist, ucnt):
    """Exact distances to the sink in the residual graph (BFS), rebuilt label buckets."""
    INF = M * T + 2
    for m in range(M):
        for x in range(T):
            d[m, x] = INF
            ulist[m, x] = x
        ucnt[m] = T
    bhead[:, :] = -1
    cnt[:] = 0
    qt = 0
    for k in range(T):
        if fsnk[k] < csnk[k]:
            d[M - 1, k] = 1
            queue[qt] = (M - 1) * T + k
            qt += 1
    qs = 0
    D = 1
    while qs < qt:
        qe = qt
        for m in range(M):
            fc[m] = 0
        for q in range(qs, qe):
            y = queue[q]
            m = y // T
            fl[m, fc[m]] = y - m * T
            fc[m] += 1
        for m in range(M):
            nf = fc[m]
            if nf == 0:
                continue
            # Backward residual edges into the frontier: (m+1, v) -> (m, y) when flow[m, y, v] > 0.
            if m < M - 1:
                for q in range(nf):
                    y = fl[m, q]
                    for k in range(scnt[m, y]):
                        v = slist[m, y, k]
                        if d[m + 1, v] == INF:
                            d[m + 1, v] = D + 1
                            queue[qt] = (m + 1) * T + v
                            qt += 1
            # Forward residual edges into the frontier: (m-1, u) -> (m, y) when cap > flow.
            if m > 0:
                mm = m - 1
                k = 0
                while k < ucnt[mm]:
                    u = ulist[mm, k]
                    if d[mm, u] != INF:
                        ucnt[mm] -= 1
                        ulist[mm, k] = ulist[mm, ucnt[mm]]
                        continue
                    cr = cap[mm, u]
                    fr = flow[mm, u]
                    hit = False
                    for q in range(nf):
                        y = fl[m, q]
                        if cr[y] > fr[y]:
                            hit = True
                            break
                    if hit:
                        d[mm, u] = D + 1
                        queue[qt] = mm * T + u
                        qt += 1
                        ucnt[mm] -= 1
                        ulist[mm, k] = ulist[mm, ucnt[mm]]
                        continue
                    k += 1
        qs = qe
        D += 1
    for m in range(M):
        lmax[m] = 0
    for q in range(qt):
        node = queue[q]
        m = node // T
        lab = d[m, node - m * T]
        h = bhead[m, lab]
        bnext[node] = h
        bprev[node] = -1
        if h >= 0:
            bprev[h] = node
        bhead[m, lab] = node
        cnt[lab] += 1
        if lab > lmax[m]:
            lmax[m] = lab
    return qt


@njit(cache=True, nogil=True)
def reset_row(M, T, flow, slist, scnt, pcnt, csnk, fsnk, excess, source_caps):
    """Start a new source row: zero flow (sparsely), saturate the source edges."""
    for b in range(M - 1):
        for x in range(T):
            for k in range(scnt[b, x]):
                flow[b, x, slist[b, x, k]] = 0
            scnt[b, x] = 0
            pcnt[b, x] = 0
    for k in range(T):
        csnk[k] = 0
        fsnk[k] = 0
    for m in range(M):
        for x in range(T):
            excess[m, x] = 0
    for x in range(T):
        excess[0, x] = source_caps[x]


@njit(cache=True, nogil=True)
def solve_sink(M, T, cap, flow, slist, scnt, spos, plist, pcnt, ppos, csnk, fsnk, sink_caps, excess, d,
               cnt, bhead, bnext, bprev, lmax, ahead, anext, queue, fl, fc, ulist, ucnt, stats):
    """Switch the sink's capacities to ``sink_caps`` and re-balance to a maximum preflow.

    Returns the max-flow value (integer, in units of ``1 / SCALE``).
    """
    INF = M * T + 2
    # Edges into the new sink: lower capacity -> excess back at the layer-1 node.
    for k in range(T):
        if fsnk[k] > sink_caps[k]:
            excess[M - 1, k] += fsnk[k] - sink_caps[k]
            fsnk[k] = sink_caps[k]
        csnk[k] = sink_caps[k]
    budget = 2 * M * T + 64
    while True:
        _global_relabel(M, T, cap, flow, slist, scnt, csnk, fsnk, d, cnt, bhead, bnext, bprev, lmax,
                        queue, fl, fc, ulist, ucnt)
        stats[0] += 1
        ahead[:] = -1
        hi = 0
        for m in range(M):
            for x in range(T):
                if excess[m, x] > 0 and d[m, x] < INF:
                    node = m * T + x
                    lab = d[m, x]
                    anext[node] = ahead[lab]
                    ahead[lab] = node
                    if lab > hi:
                        hi = lab
        work = 0
        restart = False
        while hi > 0:
            node = ahead[hi]
            if node < 0:
                hi -= 1
                continue
            ahead[hi] = anext[node]
            m = node // T
            x = node - m * T
            if d[m, x] != hi or excess[m, x] <= 0:
                continue  # stale entry
            e = excess[m, x]
            du = hi
            while True:
                # -- push along admissible forward edges (to label du - 1)
                if m == M - 1:
                    if du == 1:
                        r = csnk[x] - fsnk[x]
                        if r > 0:
                            p = r if r < e else e
                            fsnk[x] += p
                            e -= p
                else:
                    tl = du - 1
                    cr = cap[m, x]
                    fr = flow[m, x]
                    base = (m + 1) * T
                    # The "vertical" edge x -> x carries the residual weight: usually the widest.
                    if d[m + 1, x] == tl:
                        r = cr[x] - fr[x]
                        if r > 0:
                            p = r if r < e else e
                            if fr[x] == 0:
                                _arc_add(m, x, x, slist, scnt, spos, plist, pcnt, ppos)
                            fr[x] += p
                            if excess[m + 1, x] == 0:
                                anext[base + x] = ahead[tl]
                                ahead[tl] = base + x
                            excess[m + 1, x] += p
                            e -= p
                            stats[2] += 1
                    v = bhead[m + 1, tl] if e > 0 else -1
                    while v >= 0:
                        vx = v - base
                        r = cr[vx] - fr[vx]
                        if r > 0:
                            p = r if r < e else e
                            if fr[vx] == 0:
                                _arc_add(m, x, vx, slist, scnt, spos, plist, pcnt, ppos)
                            fr[vx] += p
                            if excess[m + 1, vx] == 0:
                                anext[v] = ahead[tl]
                                ahead[tl] = v
                            excess[m + 1, vx] += p
                            e -= p
                            stats[2] += 1
                            if e == 0:
                                break
                        v = bnext[v]
                # -- push back along edges that carry flow into x (to label du - 1)
                if e > 0 and m > 0:
                    tl = du - 1
                    b = m - 1
                    k = 0
                    while k < pcnt[b, x]:
                        w = plist[b, x, k]
                        if d[b, w] == tl:
                            r = flow[b, w, x]
                            p = r if r < e else e
                            flow[b, w, x] = r - p
                            if excess[b, w] == 0:
                                nb = b * T + w
                                anext[nb] = ahead[tl]
                                ahead[tl] = nb
                            excess[b, w] += p
                            e -= p
                            stats[2] += 1
                            if p == r:
                                _arc_remove(b, w, x, slist, scnt, spos, plist, pcnt, ppos)
                            else:
                                k += 1
                            if e == 0:
                                break
                        else:
                            k += 1
                if e == 0:
                    break
                # -- relabel: 1 + the lowest label reachable by a residual edge
                stats[1] += 1
                work += 1
                newd = INF
                if m > 0:
                    b = m - 1
                    for k in range(pcnt[b, x]):
                        dw = d[b, plist[b, x, k]] + 1
                        if dw < newd:
                            newd = dw
                if m < M - 1:
                    cr = cap[m, x]
                    fr = flow[m, x]
                    base = (m + 1) * T
                    lab = du
                    top = lmax[m + 1]
                    while lab <= top and lab + 1 < newd:
                        v = bhead[m + 1, lab]
                        while v >= 0:
                            vx = v - base
                            if cr[vx] > fr[vx]:
                                newd = lab + 1
                                break
                            v = bnext[v]
                        lab += 1
                p_ = bprev[node]
                n_ = bnext[node]
                if p_ >= 0:
                    bnext[p_] = n_
                else:
                    bhead[m, du] = n_
                if n_ >= 0:
                    bprev[n_] = p_
                cnt[du] -= 1
                if cnt[du] == 0:
                    # Gap: no node is left at label du, so nothing above it reaches the sink.
                    for mm in range(M):
                        for lb in range(du + 1, lmax[mm] + 1):
                            v = bhead[mm, lb]
                            while v >= 0:
                                d[mm, v - mm * T] = INF
                                v = bnext[v]
                            if bhead[mm, lb] >= 0:
                                bhead[mm, lb] = -1
                                cnt[lb] = 0
                    newd = INF
                if newd >= INF:
                    d[m, x] = INF  # excess stays here: it cannot reach this sink
                    du = INF
                    break
                d[m, x] = newd
                h = bhead[m, newd]
                bnext[node] = h
                bprev[node] = -1
                if h >= 0:
                    bprev[h] = node
                bhead[m, newd] = node
                cnt[newd] += 1
                if newd > lmax[m]:
                    lmax[m] = newd
                du = newd
                if du > hi:
                    hi = du
            excess[m, x] = e
            if work > budget:
                restart = True
                break
        if not restart:
            break
    total = 0
    for k in range(T):
        total += fsnk[k]
    return total


class RowSolver:
    """Mutable solver state for one thread: max-flow values of one source row, sink by sink.

    ``ah`` is the float64 ``[L, T, T]`` stack of residual-mixed maps (``ah[l - 1]`` is
    ``Ah_l``), ``L >= 2``. Call :meth:`start_row` then :meth:`solve` for sinks in any
    order (consecutive sinks reuse the previous preflow).
    """

    def __init__(self, ah: np.ndarray) -> None:
        n_layers, T, _ = ah.shape
        if n_layers < 2:
            raise ValueError("RowSolver needs at least 2 layers (one internal layer)")
        q = np.rint(ah * SCALE).astype(_I64)
        M = n_layers - 1
        nb = M - 1
        self.L, self.T, self.M = n_layers, T, M
        self.source_caps = np.ascontiguousarray(q[n_layers - 1])  # rows of Ah_L
        self.sink_caps = np.ascontiguousarray(q[0].T)  # sink_caps[j] = column j of Ah_1
        if nb > 0:
            # block b joins internal layer b (boundary L-1-b) to b+1: capacities Ah_{L-1-b}
            self.cap = np.ascontiguousarray(np.stack([q[n_layers - 2 - b] for b in range(nb)]))
        else:
            self.cap = np.zeros((0, T, T), _I64)
        inf = M * T + 2
        self.flow = np.zeros((nb, T, T), _I64)
        self.slist = np.zeros((nb, T, T), _I32)
        self.spos = np.zeros((nb, T, T), _I32)
        self.plist = np.zeros((nb, T, T), _I32)
        self.ppos = np.zeros((nb, T, T), _I32)
        self.scnt = np.zeros((nb, T), _I64)
        self.pcnt = np.zeros((nb, T), _I64)
        self.csnk = np.zeros(T, _I64)
        self.fsnk = np.zeros(T, _I64)
        self.excess = np.zeros((M, T), _I64)
        self.d = np.zeros((M, T), _I64)
        self.cnt = np.zeros(inf + 2, _I64)
        self.bhead = np.full((M, inf + 2), -1, _I64)
        self.bnext = np.zeros(M * T, _I64)
        self.bprev = np.zeros(M * T, _I64)
        self.lmax = np.zeros(M, _I64)
        self.ahead = np.zeros(inf + 2, _I64)
        self.anext = np.zeros(M * T, _I64)
        self.queue = np.zeros(M * T, _I64)
        self.fl = np.zeros((M, T), _I64)
        self.fc = np.zeros(M, _I64)
        self.ulist = np.zeros((M, T), _I64)
        self.ucnt = np.zeros(M, _I64)
        #: diagnostics: global relabels, relabels, pushes
        self.stats = np.zeros(3, _I64)

    def start_row(self, i: int) -> None:
        reset_row(self.M, self.T, self.flow, self.slist, self.scnt, self.pcnt, self.csnk, self.fsnk,
                  self.excess, self.source_caps[i])

    def solve(self, j: int) -> int:
        """Max-flow value to sink ``j`` in units of ``1 / SCALE`` (an exact integer)."""
        return solve_sink(self.M, self.T, self.cap, self.flow, self.slist, self.scnt, self.spos, self.plist,
                          self.pcnt, self.ppos, self.csnk, self.fsnk, self.sink_caps[j], self.excess, self.d,
                          self.cnt, self.bhead, self.bnext, self.bprev, self.lmax, self.ahead, self.anext,
                          self.queue, self.fl, self.fc, self.ulist, self.ucnt, self.stats)
