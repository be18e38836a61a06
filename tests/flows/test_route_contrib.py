"""value_norm and alti as route / Flow methods on real MiniLM contributions, against the
loop walk of test_route and the ALTI rollout."""

from __future__ import annotations

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets import AttentionTrace
from attn_widgets.flows import alti, route_graph, route_layers, route_union
from attn_widgets.flows.paths import (
    METHODS,
    available_methods,
    check_method,
    layer_edges,
    score_matrix,
    token_scores,
    trace_token,
)

from .conftest import SENTENCE
from .test_route import edges_of, walk_ref


@pytest.fixture(scope="module")
def ctrace(minilm):
    model, tok = minilm
    return aw.trace(model, tok, SENTENCE, contributions=True)


def contrib_mats_ref(raw):
    """Rows of the raw [L, T, T] array divided by their sums, with loops (the per-layer matrix
    of value_norm from the mixed norms and of alti from the c_ij)."""
    out = []
    for layer in raw:
        rows = []
        for row in layer:
            s = sum(float(x) for x in row)
            rows.append([float(x) / s for x in row])
        out.append(rows)
    return out


@pytest.mark.parametrize("method, field", [("value_norm", "mixed_norms"), ("alti", "contributions")])
@pytest.mark.parametrize("keep", [0.5, 1.0])
def test_contrib_routes_match_the_loop_walk(ctrace, method, field, keep):
    mats = contrib_mats_ref(getattr(ctrace, field))
    t = ctrace.n_tokens
    extra = [[0.0] * t for _ in mats]
    for token in (0, 4, t - 1):
        g = route_graph(ctrace, method, token, keep=keep, max_edges_per_layer=None)
        edges, kept, carry, totals, nodes = walk_ref(mats, extra, token, keep)
        assert g.method == method and g.token == token
        assert np.abs(g.node - nodes).max() <= 1e-9
        for layer in range(ctrace.n_layers):
            got = edges_of(g, layer)
            assert set(got) == kept[layer]
            for key, w in got.items():
                assert abs(w - edges[layer][key]) <= 1e-9
            np.testing.assert_allclose(g.carry[layer], carry[layer], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g.total, 1.0, atol=1e-9)  # row-stochastic per layer


def test_alti_route_node0_is_the_alti_row(ctrace):
    rows = alti(ctrace)[-1]
    layers = route_layers(ctrace, "alti")
    for token in range(ctrace.n_tokens):
        g = route_graph(None, "alti", token, layers=layers)
        assert np.abs(g.node[0] - rows[token]).max() <= 1e-6
    # the arrays can be given without a trace, too
    g = route_graph(ctrace.attentions, "alti", 3, contributions=ctrace.contributions)
    assert np.abs(g.node[0] - rows[3]).max() <= 1e-6
    u = route_union(ctrace, "alti", [2, 3])
    np.testing.assert_allclose(u.node[0], rows[2] + rows[3], atol=1e-6)


def test_value_norm_is_not_attention(ctrace):
    """The norms change the route: the head-mixed norms are not the mean attention."""
    att = route_graph(ctrace, "attention", 4, keep=1.0, max_edges_per_layer=None)
    vn = route_graph(ctrace, "value_norm", 4, keep=1.0, max_edges_per_layer=None)
    assert np.abs(att.node[0] - vn.node[0]).max() > 0.05


def test_strip_scores(ctrace):
    assert "value_norm" in METHODS and "alti" in METHODS
    np.testing.assert_allclose(score_matrix(ctrace, "alti"), alti(ctrace)[-1], atol=1e-6)
    sm = score_matrix(ctrace, "value_norm")
    edges = layer_edges(ctrace, "value_norm")
    for token in (0, 5):
        np.testing.assert_allclose(sm[token], trace_token(edges, token)[0], atol=1e-6)
        np.testing.assert_array_equal(token_scores(ctrace, "value_norm", token), sm[token])
    np.testing.assert_allclose(token_scores(ctrace, "alti", 2), alti(ctrace)[-1][2], atol=1e-6)
    np.testing.assert_allclose(edges.sum(-1), 1.0, atol=1e-5)
    # array inputs with the fields given by name
    np.testing.assert_array_equal(
        score_matrix(ctrace.attentions, "alti", contributions=ctrace.contributions), score_matrix(ctrace, "alti")
    )


def test_missing_contributions_say_how_to_capture(minilm_trace):
    bare = minilm_trace  # captured with gradients, without contributions
    assert available_methods(bare) == ("attention", "rollout", "flow", "grad_rollout", "attn_grad")
    for method in ("value_norm", "alti"):
        for call in (
            lambda: route_graph(bare, method, 1),
            lambda: route_layers(bare, method),
            lambda: layer_edges(bare, method),
            lambda: score_matrix(bare, method),
            lambda: token_scores(bare, method, 1),
            lambda: check_method(method, True, False),
        ):
            with pytest.raises(ValueError, match=r"contributions=True"):
                call()
    from_tensors = AttentionTrace.from_tensors(bare.attentions, bare.tokens)
    with pytest.raises(ValueError, match=r"method='alti' needs contributions"):
        score_matrix(from_tensors, "alti")
    with pytest.raises(ValueError, match=r"token: expected an int 0 <= token < 13"):
        token_scores(bare, "attention", 99)
