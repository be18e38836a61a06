"""Slow, obviously-correct references written from the papers (loops, networkx).

Nothing here is vectorised: each quantity is spelled out the way the paper defines it,
so that the fast implementations in attn_widgets.flows can be checked against it.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np


def mixed_maps_ref(attentions, residual=0.5):
    """Ah_l[i][j] = (1 - r) * (1/H) sum_h A[l, h, i, j] + r * [i == j], each row / its sum."""
    a = np.asarray(attentions, dtype=np.float64)
    n_layers, n_heads, t, _ = a.shape
    out = []
    for layer in range(n_layers):
        rows = []
        for i in range(t):
            row = []
            for j in range(t):
                mean = sum(float(a[layer, h, i, j]) for h in range(n_heads)) / n_heads
                row.append((1.0 - residual) * mean + (residual if i == j else 0.0))
            s = sum(row)
            rows.append([x / s for x in row])
        out.append(rows)
    return out


def matmul_ref(x, y):
    n, k, m = len(x), len(y), len(y[0])
    return [[sum(x[i][p] * y[p][j] for p in range(k)) for j in range(m)] for i in range(n)]


def rollout_ref(attentions, residual=0.5, start_layer=0):
    """Abnar & Zuidema: J_1 = Ah_1, J_l = Ah_l @ J_{l-1}; layers before start_layer: identity."""
    ah = mixed_maps_ref(attentions, residual)
    t = len(ah[0])
    eye = [[1.0 if i == j else 0.0 for j in range(t)] for i in range(t)]
    out = []
    j_mat = eye
    for layer in range(len(ah)):
        if layer >= start_layer:
            j_mat = matmul_ref(ah[layer], j_mat)
        out.append(j_mat)
    return np.array(out)


def flow_graph_ref(attentions, residual=0.5):
    """The (L + 1) * T node DAG: edge (l, i) -> (l - 1, j) with capacity Ah_l[i, j]."""
    ah = mixed_maps_ref(attentions, residual)
    n_layers, t = len(ah), len(ah[0])
    g = nx.DiGraph()
    for layer in range(1, n_layers + 1):
        for i in range(t):
            for j in range(t):
                g.add_edge((layer, i), (layer - 1, j), capacity=ah[layer - 1][i][j])
    return g, n_layers, t


def flow_ref(attentions, residual=0.5, rows=None, normalize=True):
    """Max-flow value from (L, i) to (0, j) per pair (networkx), then each row / its sum."""
    g, n_layers, t = flow_graph_ref(attentions, residual)
    rows = range(t) if rows is None else rows
    out = []
    for i in rows:
        vals = [nx.maximum_flow_value(g, (n_layers, i), (0, j), capacity="capacity") for j in range(t)]
        if normalize:
            s = sum(vals)
            vals = [v / s for v in vals]
        out.append(vals)
    return np.array(out)


def grad_rollout_ref(attentions, gradients):
    """Chefer et al. 2021: Abar_l = mean_h relu(G * A); R = I; R = R + Abar_l @ R."""
    a = np.asarray(attentions, dtype=np.float64)
    g = np.asarray(gradients, dtype=np.float64)
    n_layers, n_heads, t, _ = a.shape
    r = [[1.0 if i == j else 0.0 for j in range(t)] for i in range(t)]
    for layer in range(n_layers):
        abar = [
            [sum(max(float(g[layer, h, i, j]) * float(a[layer, h, i, j]), 0.0) for h in range(n_heads)) / n_heads
             for j in range(t)]
            for i in range(t)
        ]
        prod = matmul_ref(abar, r)
        r = [[r[i][j] + prod[i][j] for j in range(t)] for i in range(t)]
    return np.array(r)


def head_stats_ref(attentions, gradients=None, special_mask=None):
    a = np.asarray(attentions, dtype=np.float64)
    n_layers, n_heads, t, _ = a.shape
    ent = np.zeros((n_layers, n_heads))
    dist = np.zeros((n_layers, n_heads))
    spec = np.zeros((n_layers, n_heads))
    gi = np.full((n_layers, n_heads), np.nan)
    for layer in range(n_layers):
        for h in range(n_heads):
            e_rows, d_rows, s_rows = [], [], []
            for i in range(t):
                row = [float(x) for x in a[layer, h, i]]
                e_rows.append(-sum(p * math.log(p) for p in row if p > 0))
                d_rows.append(sum(p * abs(i - j) for j, p in enumerate(row)))
                if special_mask is not None:
                    s_rows.append(sum(p for j, p in enumerate(row) if special_mask[j]))
            ent[layer, h] = sum(e_rows) / t
            dist[layer, h] = sum(d_rows) / t
            spec[layer, h] = sum(s_rows) / t if special_mask is not None else 0.0
            if gradients is not None:
                tot = 0.0
                for i in range(t):
                    for j in range(t):
                        tot += abs(float(a[layer, h, i, j]) * float(gradients[layer, h, i, j]))
                gi[layer, h] = tot / (t * t)
    return {"entropy": ent, "distance": dist, "special": spec, "grad_importance": gi}
