"""AttentionFlow: edges sent match the method's matrices, threshold/top-k, tracing, worker."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets._jobs import Worker
from attn_widgets._wire import unpack
from attn_widgets.flows.paths import layer_edges, sparse_edges, trace_token


def _rand(L: int, H: int, T: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).random((L, H, T, T)).astype(np.float32) + 0.01
    return a / a.sum(-1, keepdims=True)


def _edges_sent(graph: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts = unpack(graph["counts"])
    layer = np.repeat(np.arange(len(counts)), counts)
    return layer, unpack(graph["query"]), unpack(graph["key"]), unpack(graph["weight"]).astype(np.float32)


def test_sent_edges_are_exactly_the_strong_edges(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="attention", threshold=0.25)
    E = minilm_trace.attentions.mean(axis=1)
    layer, q, k, w = _edges_sent(f.graphs[0])
    peak = np.abs(E).reshape(len(E), -1).max(1)
    expect = np.argwhere(np.abs(E) >= 0.25 * peak[:, None, None])
    assert sorted(zip(layer.tolist(), q.tolist(), k.tolist())) == sorted(map(tuple, expect.tolist()))
    np.testing.assert_allclose(w, E[layer, q, k], atol=2e-3)  # float16 on the wire
    assert f.drawn_edges == len(expect)


def test_threshold_and_top_k_reduce_edges(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="rollout", threshold=0.0)
    counts = [f.drawn_edges]
    for th in (0.05, 0.2, 0.6):
        f.threshold = th
        counts.append(f.drawn_edges)
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
    f.threshold = 0.0
    f.top_k = 2
    layer, q, _k, _w = _edges_sent(f.graphs[0])
    per_query = np.bincount(layer * minilm_trace.n_tokens + q.astype(np.int64))
    assert per_query.max() <= 2 + 1  # ties at the cut may keep one more


def test_cap_keeps_strongest():
    edges = layer_edges(_rand(3, 2, 40), "attention")
    sp = sparse_edges(edges, threshold=0.0, max_edges=100)
    assert sp["capped"] and sp["total"] > 100 and len(sp["weight"]) == 100
    assert np.all(np.diff(sp["layer"]) >= 0)  # still layer-major
    cut = np.sort(np.abs(edges).ravel())[-100]
    assert np.all(np.abs(sp["weight"]) >= cut - 1e-7)


def test_trace_token_shares(minilm_trace):
    E = layer_edges(minilm_trace.attentions, "rollout", residual=0.5)
    r = trace_token(E, 4)
    assert r.shape == (minilm_trace.n_layers + 1, minilm_trace.n_tokens)
    assert r[-1, 4] == 1 and np.isclose(r[-1].sum(), 1)
    np.testing.assert_allclose(r.sum(1), 1, atol=1e-5)
    # For row-stochastic layers the bottom row is the rollout row of the token.
    J = E[0].astype(np.float64)
    for l in range(1, len(E)):
        J = E[l] @ J
    np.testing.assert_allclose(r[0], J[4], atol=1e-5)


def test_token_click_publishes_nodes_and_scores(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="attention")
    assert f.nodes == {} and f.scores == {} and f.token_scores() is None
    f.token = 3
    assert f.status == "ready"
    nodes = unpack(f.nodes)
    assert nodes.shape == (1, minilm_trace.n_layers + 1, minilm_trace.n_tokens)
    np.testing.assert_allclose(nodes[0], trace_token(layer_edges(minilm_trace.attentions, "attention"), 3), atol=1e-6)
    f.token = None
    assert f.nodes == {} and f.status == ""


def test_grad_methods_need_gradients(minilm_trace):
    bare = aw.AttentionTrace.from_tensors(minilm_trace.attentions, minilm_trace.tokens)
    with pytest.raises(ValueError, match="needs gradients"):
        aw.AttentionFlow(bare, method="grad_rollout")
    f = aw.AttentionFlow(bare, method="attention")
    with pytest.raises(ValueError, match="needs gradients"):
        f.method = "attn_grad"
    assert f.method == "attention" and not f.has_gradients


def test_attn_grad_signed_has_negative_edges(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="attn_grad", signed=True, threshold=0.0)
    assert f.graphs[0]["signed"]
    _l, _q, _k, w = _edges_sent(f.graphs[0])
    assert (w < 0).any() and (w > 0).any()
    f.signed = False
    _l, _q, _k, w = _edges_sent(f.graphs[0])
    assert (w >= 0).all()


def test_bad_parameters_are_refused_and_state_kept(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, threshold=0.3)
    for name, bad in (("threshold", 1.5), ("threshold", -0.1), ("top_k", -1), ("residual", 2.0), ("method", "nope")):
        with pytest.raises((traitlets.TraitError, ValueError)):
            setattr(f, name, bad)
    assert f.threshold == 0.3 and f.method == "rollout"
    with pytest.raises(TypeError, match="unknown argument"):
        aw.AttentionFlow(minilm_trace, treshold=0.2)
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


def test_compare_side_and_diff(minilm_trace):
    shifted = aw.AttentionTrace.from_tensors(
        np.roll(minilm_trace.attentions, 1, axis=1), minilm_trace.tokens, gradients=minilm_trace.gradients
    )
    f = aw.AttentionFlow(minilm_trace, compare=shifted, labels=["base", "tuned"], method="attention", threshold=0.0)
    assert [g["label"] for g in f.graphs] == ["base", "tuned"]
    assert f.edges().shape[0] == 2
    f.token = 1
    side = f.token_scores()
    f.compare_mode = "diff"
    assert len(f.graphs) == 1 and "base" in f.graphs[0]["label"]
    np.testing.assert_allclose(f.token_scores()[0], side[0] - side[1], atol=1e-6)
    np.testing.assert_allclose(f.edges()[0], f._dense_edges()[0] - f._dense_edges()[1])


def test_flow_method_runs_in_background_and_caches(minilm_trace):
    f = aw.AttentionFlow(minilm_trace, method="rollout")
    f.token = 2
    f.method = "flow"
    assert f.status in ("computing", "ready")
    f.wait(120)
    assert f.status == "ready"
    first = f.token_scores()
    np.testing.assert_allclose(first[0], minilm_trace.attention_flow(rows=[2])[0], atol=1e-6)
    f.token = 3
    f.token = 2  # cached: no new job
    assert f.status == "ready"
    np.testing.assert_allclose(f.token_scores(), first)


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
