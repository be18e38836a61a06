"""AttentionFlow: the drawn route is flows.route_graph's, keep prunes monotonically, the
method switch changes the edge set, compare / diff / agreement, the background worker."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets._jobs import Worker
from attn_widgets._wire import unpack
from attn_widgets.flows.route import route_graph
from attn_widgets.widgets.flow import default_token, flow_methods

METHODS = ("attention", "rollout", "flow", "grad_rollout", "attn_grad")


def _rand(L: int, H: int, T: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).random((L, H, T, T)).astype(np.float32) + 0.01
    return a / a.sum(-1, keepdims=True)


def _edges_sent(graph: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts = unpack(graph["counts"])
    layer = np.repeat(np.arange(len(counts)), counts)
    return layer, unpack(graph["query"]), unpack(graph["key"]), unpack(graph["weight"])


def _edge_set(graph: dict) -> set:
    layer, q, k, _w = _edges_sent(graph)
    return set(zip(layer.tolist(), q.tolist(), k.tolist()))


@pytest.mark.parametrize("method", METHODS)
def test_payload_is_the_route_graph(minilm_trace, method):
    tr = minilm_trace
    f = aw.AttentionFlow(tr, method=method, keep=0.7, token=4).wait(120)
    rg = route_graph(tr, method, 4, keep=0.7)
    g = f.graphs[0]
    layer, q, k, w = _edges_sent(g)
    np.testing.assert_array_equal(layer, rg.layer)
    np.testing.assert_array_equal(q, rg.query)
    np.testing.assert_array_equal(k, rg.key)
    scale = rg.value if method == "flow" else 1.0  # flow: shares of the max-flow value
    np.testing.assert_allclose(w, rg.weight / scale, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(unpack(g["carry"]), rg.carry / scale, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(unpack(g["node"]), rg.node / scale, rtol=1e-6, atol=1e-9)
    assert f.drawn_edges == rg.n_edges and g["method"] == method and g["token"] == 4
    assert (q != k).all()  # carry is never an edge
    np.testing.assert_array_equal(unpack(g["rows"]), rg.tokens_on_route())  # 13 tokens: all rows fit


def test_keep_changes_edges_monotonically(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="rollout", keep=1.0, token=3)
    counts, sets = [f.drawn_edges], [_edge_set(f.graphs[0])]
    for keep in (0.9, 0.8, 0.65, 0.5):
        f.keep = keep
        counts.append(f.drawn_edges)
        sets.append(_edge_set(f.graphs[0]))
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
    assert all(b <= a for a, b in itertools.pairwise(sets))  # a smaller keep keeps a subset
    with pytest.raises(traitlets.TraitError, match="keep"):
        f.keep = 0.3
    assert f.keep == 0.5


def test_method_switch_changes_the_edge_set(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="attention", token=5)
    seen = {}
    for m in METHODS:
        f.method = m
        f.wait(120)
        seen[m] = _edge_set(f.graphs[0])
        assert f.graphs[0]["method"] == m
    # Every pair of methods draws a different route (the issue: flow drew rollout's edges).
    for a in METHODS:
        for b in METHODS:
            if a < b:
                assert seen[a] != seen[b], (a, b)
    # gradient-weighted rollout is not only self-edges any more: carry is separate.
    assert len(seen["grad_rollout"]) > 0


def test_no_token_shows_the_default_position(minilm_trace, gpt2):
    f = aw.AttentionFlow(minilm_trace)
    assert f.token is None and f.route_token == default_token(minilm_trace) == f.graphs[0]["token"]
    assert f.scores == {} and f.status == ""
    f.token = 2
    assert f.route_token == 2 and f.graphs[0]["token"] == 2 and f.status == "ready"
    f.token = None
    assert f.route_token == default_token(minilm_trace)
    enc = aw.AttentionTrace.from_tensors(minilm_trace.attentions, minilm_trace.tokens)
    assert default_token(enc) == 0  # [CLS] of an encoder without a target position
    model, tok = gpt2
    causal = aw.trace(model, tok, "The cat sat on the mat")
    causal.meta.pop("position", None)
    assert default_token(causal) == causal.n_tokens - 1


def test_threshold_is_gone_with_a_pointer_to_keep(minilm_trace):
    for old in ("threshold", "top_k"):
        with pytest.raises(TypeError, match="use keep="):
            aw.AttentionFlow(minilm_trace, **{old: 0.1})
    with pytest.raises(TypeError, match="use keep="):
        aw.Explorer(minilm_trace, threshold=0.1)


def test_methods_list_comes_from_flows(minilm_trace):
    bare = aw.AttentionTrace.from_tensors(minilm_trace.attentions, minilm_trace.tokens)
    f = aw.AttentionFlow(bare)
    names = [m["name"] for m in f.methods]
    from attn_widgets.flows import route

    assert names == list(route.ROUTE_METHODS)
    avail = {m["name"]: m["available"] for m in f.methods}
    assert avail["rollout"] and not avail["grad_rollout"] and not avail["attn_grad"]
    assert {m["name"]: m["available"] for m in flow_methods([minilm_trace])}["attn_grad"]
    with pytest.raises(traitlets.TraitError, match="needs gradients"):
        f.method = "attn_grad"
    assert f.method == "rollout"


def test_rows_collapse_to_the_route_at_long_inputs():
    T = 300
    a = np.full((3, 2, T, T), 1e-4, np.float32)
    a[..., np.arange(T), np.arange(T)] = 1.0  # mostly self-attention ...
    a[..., :, 7] = 0.5  # ... plus a few strong keys
    a[..., :, 123] = 0.3
    a /= a.sum(-1, keepdims=True)
    tr = aw.AttentionTrace.from_tensors(a, [f"t{i}" for i in range(T)])
    f = aw.AttentionFlow(tr, method="rollout", keep=0.5, token=200)
    rows = unpack(f.graphs[0]["rows"])
    assert 200 in rows and 7 in rows and 123 in rows
    assert len(rows) <= f.max_rows and set(rows.tolist()) <= set(f.routes[0].tokens_on_route().tolist())
    f.max_rows = 3
    assert len(unpack(f.graphs[0]["rows"])) == 3 and 200 in unpack(f.graphs[0]["rows"])


def test_cap_is_reported():
    tr = aw.AttentionTrace.from_tensors(_rand(2, 2, 40), [f"t{i}" for i in range(40)])
    f = aw.AttentionFlow(tr, method="attention", keep=0.95, token=0, max_edges_per_layer=5000)
    assert f.graphs[0]["capped"] == [] and f.drawn_edges > 100
    f.max_edges_per_layer = 5
    assert f.graphs[0]["capped"] == [0, 1] and f.drawn_edges == 10


def test_grad_methods_need_gradients(minilm_trace):
    bare = aw.AttentionTrace.from_tensors(minilm_trace.attentions, minilm_trace.tokens)
    with pytest.raises(traitlets.TraitError, match="needs gradients"):
        aw.AttentionFlow(bare, method="grad_rollout")
    f = aw.AttentionFlow(bare, method="attention")
    assert f.method == "attention" and not f.has_gradients


def test_attn_grad_signed_has_negative_edges(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="attn_grad", signed=True, keep=1.0, token=0)
    assert f.graphs[0]["signed"]
    w = _edges_sent(f.graphs[0])[3]
    assert (w < 0).any() and (w > 0).any()
    f.signed = False
    assert (_edges_sent(f.graphs[0])[3] >= 0).all() and not f.graphs[0]["signed"]


def test_bad_parameters_are_refused_and_state_kept(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, keep=0.7)
    for name, bad in (("keep", 1.5), ("keep", 0.2), ("residual", 2.0), ("method", "nope"), ("max_rows", 0),
                      ("rows", "some")):
        with pytest.raises((traitlets.TraitError, ValueError)):
            setattr(f, name, bad)
    assert f.keep == 0.7 and f.method == "rollout" and f.rows == "route"
    with pytest.raises(TypeError, match="unknown argument"):
        aw.AttentionFlow(minilm_trace, kep=0.2)
    with pytest.raises(TypeError, match="unknown argument"):
        aw.AttentionFlow(minilm_trace, graphs=[])  # computed, not settable


def test_compare_requires_same_tokens(minilm_trace):
    other_tokens = list(minilm_trace.tokens)
    other_tokens[2] = "dog"
    other = aw.AttentionTrace.from_tensors(minilm_trace.attentions, other_tokens)
    with pytest.raises(ValueError, match="position 2"):
        aw.AttentionFlow(minilm_trace, compare=other)
    short = aw.AttentionTrace.from_tensors(_rand(6, 12, 5), [f"t{i}" for i in range(5)])
    with pytest.raises(ValueError, match="shape"):
        aw.AttentionFlow(minilm_trace, compare=short)
    with pytest.raises(ValueError, match="second trace"):
        aw.AttentionFlow(minilm_trace, compare_mode="diff")


def _shifted(tr):
    return aw.AttentionTrace.from_tensors(np.roll(tr.attentions, 2, axis=0) * 0.6 + tr.attentions * 0.4,
                                          tr.tokens, gradients=tr.gradients, model_name="tuned")


def test_compare_side_by_side_same_token_and_keep(minilm_trace):
    other = _shifted(minilm_trace)
    f = aw.AttentionFlow(minilm_trace, compare=other, labels=["base", "tuned"], method="rollout", keep=0.6, token=1)
    a, b = f.graphs
    assert [a["label"], b["label"]] == ["base", "tuned"]
    assert a["token"] == b["token"] == 1 and a["keep"] == b["keep"] == 0.6
    assert _edge_set(b) == {(int(l_), int(q), int(k)) for l_, q, k in
                            zip(*(getattr(route_graph(other, "rollout", 1, keep=0.6), x) for x in ("layer", "query", "key")))}
    np.testing.assert_array_equal(unpack(a["rows"]), unpack(b["rows"]))  # one row layout for both
    assert f.token_scores().shape == (2, minilm_trace.n_tokens)


def test_diff_marks_appearing_and_vanishing_edges(minilm_trace):
    other = _shifted(minilm_trace)
    f = aw.AttentionFlow(minilm_trace, compare=other, labels=["base", "tuned"], method="rollout", keep=0.6, token=1)
    side = f.token_scores()
    sa, sb = _edge_set(f.graphs[0]), _edge_set(f.graphs[1])
    f.compare_mode = "diff"
    (g,) = f.graphs
    assert g["diff"] and g["names"] == ["base", "tuned"] and "tuned" in g["label"] and "base" in g["label"]
    layer, q, k, d = _edges_sent(g)
    status = unpack(g["status"])
    edges = list(zip(layer.tolist(), q.tolist(), k.tolist()))
    assert set(edges) == sa | sb
    for e, s in zip(edges, status.tolist()):
        assert s == (0 if e in sa and e in sb else 1 if e in sb else 2)
    assert g["appear"] == len(sb - sa) > 0 and g["vanish"] == len(sa - sb) > 0
    ra, rb = route_graph(minilm_trace, "rollout", 1, keep=0.6), route_graph(other, "rollout", 1, keep=0.6)
    wa = dict(zip(zip(ra.layer.tolist(), ra.query.tolist(), ra.key.tolist()), ra.weight))
    wb = dict(zip(zip(rb.layer.tolist(), rb.query.tolist(), rb.key.tolist()), rb.weight))
    np.testing.assert_allclose(d, [wb.get(e, 0.0) - wa.get(e, 0.0) for e in edges], atol=1e-6)
    assert not g["agree"] and f.diff_agrees() is False
    np.testing.assert_allclose(f.token_scores()[0], side[1] - side[0], atol=1e-6)


def test_diff_of_equal_traces_says_they_agree(minilm_trace):
    twin = aw.AttentionTrace.from_tensors(minilm_trace.attentions + 0, minilm_trace.tokens)
    f = aw.AttentionFlow(minilm_trace, compare=twin, compare_mode="diff", method="attention", token=3)
    g = f.graphs[0]
    assert g["agree"] and g["max_change"] <= 1e-3 and f.diff_agrees() is True
    assert "agree within" in f.to_svg()


def test_flow_method_runs_in_background_and_caches(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="rollout")
    f.token = 2
    f.method = "flow"
    assert f.status in ("computing", "ready")
    f.wait(120)
    assert f.status == "ready" and f.graphs[0]["method"] == "flow"
    first = f.token_scores()
    np.testing.assert_allclose(first[0], minilm_trace.attention_flow(rows=[2])[0], atol=1e-6)
    f.token = 3
    f.wait(120)
    f.token = 2  # cached: no new job
    assert f.status == "ready"
    np.testing.assert_allclose(f.token_scores(), first)


def test_svg_figure_draws_the_route_with_its_legend(minilm_trace):
    import xml.etree.ElementTree as ET

    f = aw.AttentionFlow(minilm_trace, method="grad_rollout", token=6)
    root = ET.fromstring(f.to_svg())
    ns = "{http://www.w3.org/2000/svg}"
    groups = {g.get("class"): g for g in root.iter(f"{ns}g") if g.get("class")}
    assert "aw-legend" in groups and "aw-carry" in groups
    assert len(list(groups["aw-edges"].iter(f"{ns}line"))) == f.drawn_edges > 0
    legend = " ".join(t.text or "" for t in groups["aw-legend"].iter(f"{ns}text"))
    assert "carry" in legend and "grad_rollout" in legend
    img = f._png_array(scale=1)
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0


def test_new_selection_cancels_stale_job():
    w = Worker()
    started, release = threading.Event(), threading.Event()
    seen = []

    def slow(job):
        started.set()
        release.wait(5)
        return "old" if job.cancelled() else "fresh"

    w.submit("a", slow, seen.append, seen.append)
    assert started.wait(5)
    job_b = w.submit("b", lambda job: "b", seen.append, seen.append)
    job_b.done.wait(5)
    release.set()
    time.sleep(0.2)
    assert seen == ["b"]  # the stale job's result never reached the panel
    assert w.cached("b") == "b"


def test_worker_reports_errors_of_current_job_only():
    w = Worker()
    errors = []

    def boom(job):
        raise RuntimeError("bad row")

    job = w.submit("x", boom, lambda r: None, errors.append)
    job.done.wait(5)
    time.sleep(0.05)
    assert len(errors) == 1 and "bad row" in str(errors[0])
