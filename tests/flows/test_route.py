"""Route graphs against slow references written from the definitions (loops, networkx)."""

from __future__ import annotations

from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_widgets.flows import (
    attention_flow,
    grad_rollout,
    rollout,
    route_from_layers,
    route_graph,
    route_layers,
    route_union,
)

from .reference import mixed_maps_ref
from .strategies import attention_stacks

WALK_METHODS = ("attention", "rollout", "grad_rollout", "attn_grad")
ROUTE = ("attention", "rollout", "flow", "grad_rollout", "attn_grad")


# -- slow references -------------------------------------------------------------------------


def layer_mats_ref(a, g, method, residual=0.5, signed=False):
    """Per-layer matrix (as nested lists) and per-layer extra carry, from the definitions."""
    n_layers, n_heads, t, _ = a.shape
    if method == "rollout":
        return mixed_maps_ref(a, residual), [[0.0] * t for _ in range(n_layers)]
    mats = []
    for layer in range(n_layers):
        rows = []
        for i in range(t):
            row = []
            for j in range(t):
                terms = []
                for h in range(n_heads):
                    x = float(a[layer, h, i, j])
                    if method != "attention":
                        x *= float(g[layer, h, i, j])
                        if method == "grad_rollout" or not signed:
                            x = max(x, 0.0)
                    terms.append(x)
                row.append(sum(terms) / n_heads)
            rows.append(row)
        mats.append(rows)
    extra = 1.0 if method == "grad_rollout" else 0.0  # the I of I + Abar
    return mats, [[extra] * t for _ in range(n_layers)]


def walk_ref(mats, extra, token, keep):
    """r_L = e_token; edge (l+1, q) -> (l, k) = r[q] * E[q][k] (q != k); carry = r[q] * (E[q][q] + extra);
    r_l = sum of |edge| into k + |carry[k]|, normalised. Keep: strongest edges until >= keep * total."""
    n_layers, t = len(mats), len(mats[0])
    r = [0.0] * t
    r[token] = 1.0
    nodes = {n_layers: list(r)}
    edges, carry, totals, kept = {}, {}, {}, {}
    for layer in range(n_layers - 1, -1, -1):
        m = mats[layer]
        layer_edges = {}
        for q in range(t):
            for k in range(t):
                if q != k and r[q] != 0 and m[q][k] != 0:
                    layer_edges[(q, k)] = r[q] * m[q][k]
        carry[layer] = [r[q] * (m[q][q] + extra[layer][q]) for q in range(t)]
        nxt = [abs(carry[layer][k]) + sum(abs(w) for (q, kk), w in layer_edges.items() if kk == k) for k in range(t)]
        totals[layer] = sum(abs(w) for w in layer_edges.values())
        # exact sums (Fractions); keep < 1 is met to a relative 1e-12, keep = 1 keeps every edge
        target = Fraction(keep) * sum(Fraction(abs(w)) for w in layer_edges.values())
        target = target * (1 - Fraction(1, 10**12)) if keep < 1 else target
        chosen, acc = set(), Fraction(0)
        for (q, k), w in sorted(layer_edges.items(), key=lambda kv: -abs(kv[1])):
            if acc >= target:
                break
            chosen.add((q, k))
            acc += Fraction(abs(w))
        edges[layer] = layer_edges
        kept[layer] = chosen
        s = sum(nxt)
        r = [x / s for x in nxt] if s > 0 else nxt
        nodes[layer] = list(r)
    return edges, kept, carry, totals, np.array([nodes[l] for l in range(n_layers + 1)])


def edges_of(g, layer):
    sel = g.layer == layer
    return {(int(q), int(k)): float(w) for q, k, w in zip(g.query[sel], g.key[sel], g.weight[sel])}


def check_against_ref(g, a, grads, method, token, keep, signed=False):
    mats, extra = layer_mats_ref(a, grads, method, signed=signed)
    edges, kept, carry, totals, nodes = walk_ref(mats, extra, token, keep)
    assert np.abs(g.node - nodes).max() <= 1e-9
    for layer in range(a.shape[0]):
        got = edges_of(g, layer)
        assert set(got) == kept[layer], (layer, sorted(got), sorted(kept[layer]))
        for key, w in got.items():
            assert abs(w - edges[layer][key]) <= 1e-9 * max(1.0, abs(w))
        assert abs(g.layer_total[layer] - totals[layer]) <= 1e-9 * max(1.0, totals[layer])
        np.testing.assert_allclose(g.carry[layer], carry[layer], rtol=1e-9, atol=1e-12)


def full_flow(g):
    """Dense [L, T, T] flow of a keep=1 flow route (cross edges + carry on the diagonal)."""
    n_layers, t = g.n_layers, g.n_tokens
    f = np.zeros((n_layers, t, t))
    f[g.layer, g.query, g.key] = g.weight
    idx = np.arange(t)
    f[:, idx, idx] += g.carry
    return f


def check_valid_flow(g, a, residual=0.5):
    ah = np.array(mixed_maps_ref(a, residual))
    f = full_flow(g)
    n_layers = f.shape[0]
    assert (f >= 0).all()
    assert (f <= ah + 2.0**-47).all(), "capacity exceeded"
    # only the source (L, token) sends and only the sink (0, source) receives
    assert np.abs(np.delete(f[-1], g.token, axis=0)).max(initial=0) == 0
    assert np.abs(np.delete(f[0], g.source, axis=1)).max(initial=0) == 0
    for c in range(1, n_layers):  # conservation at every inner node
        assert np.abs(f[c].sum(axis=0) - f[c - 1].sum(axis=1)).max() <= 1e-12
    for layer in range(n_layers):  # each layer carries the whole value
        assert abs(f[layer].sum() - g.value) <= 1e-12


def nx_value(a, residual, token, source):
    ah = mixed_maps_ref(a, residual)
    n_layers, t = len(ah), len(ah[0])
    gr = nx.DiGraph()
    for layer in range(1, n_layers + 1):
        for i in range(t):
            for j in range(t):
                gr.add_edge((layer, i), (layer - 1, j), capacity=ah[layer - 1][i][j])
    return nx.maximum_flow_value(gr, (n_layers, token), (0, source))


# -- walk methods vs the reference -------------------------------------------------------------


@pytest.mark.parametrize("method", WALK_METHODS)
@pytest.mark.parametrize("keep", [0.5, 0.8, 1.0])
def test_walk_matches_reference_on_minilm(minilm_trace, method, keep):
    a, grads = minilm_trace.attentions, minilm_trace.gradients
    for token in (0, 4, a.shape[-1] - 1):
        g = route_graph(minilm_trace, method, token, keep=keep, max_edges_per_layer=None)
        check_against_ref(g, a, grads, method, token, keep)
        assert g.method == method and g.token == token and g.value is None and g.source is None


@settings(max_examples=40, deadline=None)
@given(
    attention_stacks(max_layers=3, max_heads=2, max_tokens=5),
    st.sampled_from(WALK_METHODS),
    st.sampled_from([0.3, 0.8, 1.0]),
    st.booleans(),
    st.data(),
)
def test_walk_random_matches_reference(a, method, keep, signed, data):
    t = a.shape[-1]
    token = data.draw(st.integers(0, t - 1))
    grads = np.random.default_rng(t * 7 + a.shape[0]).normal(size=a.shape) * 2
    g = route_graph(a, method, token, grads, keep=keep, signed=signed, max_edges_per_layer=None)
    check_against_ref(g, a, grads, method, token, keep, signed=signed)


def test_rollout_node0_is_the_rollout_row(minilm_trace):
    a = minilm_trace.attentions
    roll = rollout(a)[-1]
    layers = route_layers(a, "rollout")
    for token in range(a.shape[-1]):
        g = route_graph(a, "rollout", token, layers=layers)
        assert np.abs(g.node[0] - roll[token]).max() <= 1e-6
        np.testing.assert_allclose(g.total, 1.0, atol=1e-12)


def test_rollout_residual_parameter(minilm_trace):
    a = minilm_trace.attentions
    g = route_graph(a, "rollout", 3, residual=0.2)
    assert np.abs(g.node[0] - rollout(a, residual=0.2)[-1][3]).max() <= 1e-6
    assert np.abs(g.node[0] - rollout(a)[-1][3]).max() > 1e-3


def test_grad_rollout_node0_is_the_normalised_row(minilm_trace):
    r = grad_rollout(minilm_trace)
    for token in (0, 5):
        g = route_graph(minilm_trace, "grad_rollout", token)
        assert np.abs(g.node[0] - r[token] / r[token].sum()).max() <= 1e-9
        # the identity is carry: the token's own carry dominates the top layer
        assert g.carry[-1, token] >= 1.0


def test_attn_grad_signed_keeps_signs(minilm_trace):
    a, grads = minilm_trace.attentions, minilm_trace.gradients
    signed = route_graph(minilm_trace, "attn_grad", 2, signed=True, keep=1.0, max_edges_per_layer=None)
    clipped = route_graph(minilm_trace, "attn_grad", 2, signed=False, keep=1.0, max_edges_per_layer=None)
    assert (signed.weight < 0).any() and (signed.weight > 0).any()
    assert (clipped.weight > 0).all()
    # top layer: the weight is the matrix entry itself (upstream share 1)
    top = a[-1].astype(np.float64) * grads[-1]
    e_signed = top.mean(axis=0)[2]
    got = edges_of(signed, a.shape[0] - 1)
    for (q, k), w in got.items():
        assert q == 2 and abs(w - e_signed[k]) <= 1e-9


# -- flow: a valid maximum flow ----------------------------------------------------------------


def test_flow_route_is_a_maximum_flow_on_minilm(minilm_trace):
    a = minilm_trace.attentions
    raw = attention_flow(a, normalize=False)
    for token in (0, 3, a.shape[-1] - 1):
        g = route_graph(a, "flow", token, keep=1.0, max_edges_per_layer=None)
        assert g.source == int(np.argmax(raw[token]))
        assert abs(g.value - raw[token, g.source]) <= 1e-9
        check_valid_flow(g, a)
        # another sink, given explicitly
        other = (g.source + 2) % a.shape[-1]
        g2 = route_graph(a, "flow", token, keep=1.0, source=other, max_edges_per_layer=None)
        assert g2.source == other and abs(g2.value - raw[token, other]) <= 1e-9
        check_valid_flow(g2, a)
        assert abs(g2.value - nx_value(a, 0.5, token, other)) <= 1e-6


@settings(max_examples=40, deadline=None)
@given(attention_stacks(max_layers=4, max_heads=2, max_tokens=5), st.sampled_from([0.0, 0.5, 0.9]), st.data())
def test_flow_route_random(a, residual, data):
    t = a.shape[-1]
    token = data.draw(st.integers(0, t - 1))
    source = data.draw(st.integers(0, t - 1))
    g = route_graph(a, "flow", token, keep=1.0, residual=residual, source=source, max_edges_per_layer=None)
    check_valid_flow(g, a, residual)
    raw = attention_flow(a, rows=[token], residual=residual, normalize=False)[0, source]
    assert abs(g.value - raw) <= 1e-9
    assert abs(g.value - nx_value(a, residual, token, source)) <= 1e-6
    np.testing.assert_allclose(g.node[-1][token], g.value, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(attention_stacks(max_layers=4, max_heads=2, max_tokens=6), st.sampled_from([0.0, 0.5]), st.data())
def test_flow_default_source_is_the_argmax(a, residual, data):
    token = data.draw(st.integers(0, a.shape[-1] - 1))
    raw = attention_flow(a, rows=[token], residual=residual, normalize=False)[0]
    g = route_graph(a, "flow", token, residual=residual)
    assert g.source == int(np.argmax(raw)) and g.value == raw[g.source]


def test_flow_default_source_all_tokens_minilm(minilm_long):
    a = minilm_long.attentions
    layers = route_layers(a, "flow")
    for token in range(0, a.shape[-1], 7):
        raw = attention_flow(a, rows=[token], normalize=False)[0]
        g = route_graph(a, "flow", token, layers=layers)
        assert g.source == int(np.argmax(raw)) and g.value == raw[g.source]


@pytest.mark.parametrize("method", ROUTE)
def test_causal_routes_only_look_back(gpt2_trace, method):
    t = gpt2_trace.n_tokens
    src = 0 if method == "flow" else None
    g = route_graph(gpt2_trace, method, t - 1, keep=1.0, source=src, max_edges_per_layer=None)
    assert g.n_edges > 0 and (g.key < g.query).all()
    g = route_graph(gpt2_trace, method, t - 3, keep=1.0, source=src, max_edges_per_layer=None)
    assert (g.key < g.query).all() and (g.node[:, t - 2 :] == 0).all()  # later tokens are not on it


def test_flow_carry_is_the_self_edge_flow(minilm_trace):
    a = minilm_trace.attentions
    g = route_graph(a, "flow", 4, keep=0.5)
    assert (g.query != g.key).all()
    full = route_graph(a, "flow", 4, keep=1.0, source=g.source, max_edges_per_layer=None)
    np.testing.assert_array_equal(g.carry, full.carry)
    # pruning keeps a subset of the full flow's edges with the same flows
    fe = {(int(l_), int(q), int(k)): w for l_, q, k, w in zip(full.layer, full.query, full.key, full.weight)}
    for l_, q, k, w in zip(g.layer, g.query, g.key, g.weight):
        assert fe[(int(l_), int(q), int(k))] == w


# -- keep and the bookkeeping ------------------------------------------------------------------


def check_keep(g, full):
    """``g`` pruned, ``full`` the same route with keep=1 and no cap."""
    for layer in range(g.n_layers):
        sel = g.layer == layer
        kept = np.abs(g.weight[sel])
        allw = np.abs(full.weight[full.layer == layer])
        total = g.layer_total[layer]
        assert abs(total - allw.sum()) <= 1e-12 * max(1.0, total)
        # carry + kept edges + dropped = total (all in |weight|)
        assert abs(np.abs(g.carry[layer]).sum() + kept.sum() + g.dropped[layer] - g.total[layer]) <= 1e-12
        assert abs(np.abs(g.carry[layer]).sum() + total - g.total[layer]) <= 1e-12
        # the kept edges are the strongest ones
        if kept.size and kept.size < allw.size:
            assert kept.min() >= np.sort(allw)[::-1][kept.size]
        if not g.capped[layer]:
            assert kept.size == g.needed[layer]
            assert kept.sum() >= g.keep * total * (1 - 1e-12)
            if kept.size:  # minimal: without the weakest kept edge it falls short (exact sums)
                exact_total = sum(Fraction(float(w)) for w in allw)
                without = sum(Fraction(float(w)) for w in kept) - Fraction(float(kept.min()))
                assert without < Fraction(g.keep) * exact_total
        else:
            assert kept.size < g.needed[layer]


@pytest.mark.parametrize("method", ROUTE)
def test_keep_minimal_and_totals_on_minilm(minilm_trace, method):
    for token in (1, 6):
        full = route_graph(minilm_trace, method, token, keep=1.0, max_edges_per_layer=None)
        for keep in (0.3, 0.6, 0.9):
            g = route_graph(minilm_trace, method, token, keep=keep, source=full.source, max_edges_per_layer=None)
            check_keep(g, full)


@settings(max_examples=40, deadline=None)
@given(attention_stacks(max_layers=3, max_heads=2, max_tokens=6), st.sampled_from(ROUTE), st.data())
def test_keep_random(a, method, data):
    t = a.shape[-1]
    token = data.draw(st.integers(0, t - 1))
    grads = np.random.default_rng(t).normal(size=a.shape)
    src = data.draw(st.integers(0, t - 1)) if method == "flow" else None
    full = route_graph(a, method, token, grads, keep=1.0, source=src, max_edges_per_layer=None)
    counts = []
    for keep in (0.1, 0.4, 0.7, 0.95, 1.0):
        g = route_graph(a, method, token, grads, keep=keep, source=src, max_edges_per_layer=None)
        check_keep(g, full)
        counts.append(g.n_edges)
    assert counts == sorted(counts), counts  # more keep, never fewer edges


def test_edge_count_monotonic_in_keep_on_minilm(minilm_trace):
    counts = [route_graph(minilm_trace, "rollout", 5, keep=k).n_edges for k in np.linspace(0.05, 1.0, 20)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_cap_bounds_edges_and_is_reported(minilm_trace):
    g = route_graph(minilm_trace, "attention", 5, keep=0.99, max_edges_per_layer=3)
    per_layer = np.bincount(g.layer, minlength=g.n_layers)
    assert (per_layer <= 3).all()
    assert g.capped.any() and (g.needed[g.capped] > 3).all()
    free = route_graph(minilm_trace, "attention", 5, keep=0.99, max_edges_per_layer=None)
    assert not free.capped.any()
    assert (g.dropped >= free.dropped - 1e-15).all() and (g.dropped > free.dropped + 1e-6).any()


def test_edges_are_cross_token_and_sorted(minilm_trace):
    g = route_graph(minilm_trace, "attention", 5)
    assert (g.query != g.key).all()
    assert (np.diff(g.layer) >= 0).all()
    for layer in range(g.n_layers):
        w = np.abs(g.weight[g.layer == layer])
        assert (np.diff(w) <= 0).all()
    with pytest.raises(ValueError):
        g.weight[0] = 1.0  # read-only result


def test_precomputed_layers_give_the_same_route(minilm_trace):
    for method in ("rollout", "grad_rollout", "attn_grad", "flow"):
        layers = route_layers(minilm_trace, method, signed=True)
        a = route_graph(minilm_trace, method, 3, layers=layers, signed=True)
        b = route_graph(minilm_trace, method, 3, signed=True)
        for f in ("layer", "query", "key", "weight", "carry", "node"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_route_from_layers_custom_carry():
    # two layers, three tokens: a contribution matrix with explicit carry and no diagonal
    mats = np.array([[[0, 0.5, 0.5], [1, 0, 0], [0.25, 0.75, 0]], [[0, 1, 0], [0.5, 0, 0.5], [0, 0, 0]]], float)
    carry = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    g = route_from_layers(mats, 1, carry=carry, keep=1.0, normalize=False)
    # top layer: token 1 sends 0.5 to 0 and 0.5 to 2, keeps 1
    assert edges_of(g, 1) == {(1, 0): 0.5, (1, 2): 0.5}
    np.testing.assert_allclose(g.carry[1], [0, 1, 0])
    np.testing.assert_allclose(g.node[1], [0.5, 1, 0.5])
    # layer 0 from r = [0.5, 1, 0.5]
    assert edges_of(g, 0) == {(0, 1): 0.25, (0, 2): 0.25, (1, 0): 1.0, (2, 0): 0.125, (2, 1): 0.375}
    np.testing.assert_allclose(g.carry[0], [0.5, 0, 1.0])
    np.testing.assert_allclose(g.node[0], [1.625, 0.625, 1.25])


def test_tokens_on_route_and_nbytes(minilm_trace):
    g = route_graph(minilm_trace, "rollout", 4, keep=0.5)
    on = g.tokens_on_route()
    assert set(on.tolist()) == set(g.query.tolist()) | set(g.key.tolist()) | {4}
    assert (np.diff(on) > 0).all()
    assert g.nbytes == g.n_edges * (4 + 4 + 4 + 8)
    f = route_graph(minilm_trace, "flow", 4, source=7)
    assert 7 in f.tokens_on_route().tolist()


def test_route_union(minilm_trace):
    one = route_graph(minilm_trace, "rollout", 2)
    u1 = route_union(minilm_trace, "rollout", [2])
    np.testing.assert_array_equal(np.sort(u1.weight), np.sort(one.weight))
    u = route_union(minilm_trace, "rollout", [2, 5])
    other = route_graph(minilm_trace, "rollout", 5)
    np.testing.assert_allclose(u.node, one.node + other.node)
    np.testing.assert_allclose(u.weight.sum(), one.weight.sum() + other.weight.sum())
    assert u.n_edges <= one.n_edges + other.n_edges


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"keep": 0.0}, "keep: expected 0 < keep <= 1"),
        ({"keep": 1.5}, "keep: expected 0 < keep <= 1"),
        ({"keep": "a"}, "keep: expected a number"),
        ({"keep": True}, "keep: expected a number"),
        ({"token": 99}, "token: expected 0 <= token < 13"),
        ({"token": -1}, "token: expected 0 <= token < 13"),
        ({"token": 1.0}, "token: expected an int"),
        ({"method": "magic"}, "method: expected one of"),
        ({"max_edges_per_layer": 0}, "max_edges_per_layer: expected None or an int >= 1"),
        ({"source": 2}, "source: only used by method='flow'"),
        ({"method": "flow", "source": 13}, "source: expected 0 <= source < 13"),
        ({"residual": 2.0}, "residual: expected 0 <= residual <= 1"),
        ({"signed": "yes"}, "signed: expected a bool"),
        ({"layers": "x"}, "layers: expected the"),
    ],
)
def test_errors(minilm_trace, kwargs, match):
    args = {"method": "rollout", "token": 3, **kwargs}
    assert minilm_trace.attentions.shape[-1] == 13
    with pytest.raises(ValueError, match=match):
        route_graph(minilm_trace, **args)


def test_errors_gradients_and_shapes(minilm_trace):
    a = minilm_trace.attentions
    with pytest.raises(ValueError, match="gradients"):
        route_graph(a, "grad_rollout", 0)
    with pytest.raises(ValueError, match="mats: expected a non-empty"):
        route_from_layers(np.zeros((2, 3, 4)), 0)
    with pytest.raises(ValueError, match=r"carry: expected shape \(2, 3\)"):
        route_from_layers(np.zeros((2, 3, 3)), 0, carry=np.ones((3, 2)))
    with pytest.raises(ValueError, match="layers: carry must be"):
        route_graph(a, "rollout", 0, layers=route_layers(minilm_trace, "grad_rollout"))
    with pytest.raises(ValueError, match="tokens: expected at least one"):
        route_union(a, "rollout", [])
