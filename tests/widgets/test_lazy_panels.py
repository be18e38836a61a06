"""The Flow panel, HeadSummary and the Explorer on a LazyTrace: routes and statistics in the
background with progress, cancellation, the previous route kept until the new one arrives,
methods that are not offered saying why. References: the same trace materialised in memory
and the in-memory flows (route_graph, head_stats)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets import LazyTrace
from attn_widgets._wire import unpack
from attn_widgets.flows import route as route_mod
from attn_widgets.flows.route import route_from_layers, route_graph, route_layers
from attn_widgets.widgets import flow as flow_mod
from attn_widgets.widgets import summary as summary_mod

TEXT = " ".join(["the cat sat on the mat and looked at the dog"] * 5)


@pytest.fixture(scope="module")
def lazy():
    """A real capture: a 3-layer x 4-head GPT-2 from a config, ~57 tokens, maps on demand."""
    model, tok = aw.capture.long_context_model("gpt2", n_layer=3, n_head=4, n_positions=256)
    return aw.trace_lazy(model, tok, TEXT)


@pytest.fixture(scope="module")
def in_memory(lazy):
    return lazy.materialize()


@pytest.fixture(autouse=True)
def no_look_ahead(monkeypatch):
    """Each layer's rows fetched in line by the job's own thread, so the gate below counts and
    holds them one by one (the look-ahead thread is covered by tests/flows/test_route_lazy)."""
    monkeypatch.setattr(route_mod, "LOOK_AHEAD", False)


@pytest.fixture()
def fast_progress(monkeypatch):
    """Every progress step reaches the traits (the panels throttle to ~10 a second)."""
    monkeypatch.setattr(flow_mod, "PROGRESS_INTERVAL", 0.0)
    monkeypatch.setattr(summary_mod, "PROGRESS_INTERVAL", 0.0)


class Gate:
    """Blocks the LazyTrace computations made from the job pool until released (one call per
    ``step()``, or all with ``open()``); counts them. ``what="route"`` holds ``tile`` (a route
    reads each layer's head-mean rows with one tile call), ``what="stats"`` holds
    ``layer_stats`` (one call per layer of head statistics). Calls on other threads pass."""

    def __init__(self, monkeypatch, what: str = "route") -> None:
        self.calls = 0
        self.entered = threading.Event()
        self._sem = threading.Semaphore(0)
        self._open = threading.Event()
        name = {"route": "tile", "stats": "layer_stats"}[what]
        real = getattr(LazyTrace, name)
        gate = self

        def held(tr, *args, **kwargs):
            if threading.current_thread().name.startswith("attn_widgets-pool"):
                gate.calls += 1
                gate.entered.set()
                while not gate._open.is_set() and not gate._sem.acquire(timeout=0.01):
                    pass
            return real(tr, *args, **kwargs)

        monkeypatch.setattr(LazyTrace, name, held)

    def step(self) -> None:
        self._sem.release()

    def open(self) -> None:
        self._open.set()


def _until(cond, timeout=30.0):
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def _same_route(graph: dict, rg) -> None:
    counts = unpack(graph["counts"])
    np.testing.assert_array_equal(np.repeat(np.arange(len(counts)), counts), rg.layer)
    np.testing.assert_array_equal(unpack(graph["query"]), rg.query)
    np.testing.assert_array_equal(unpack(graph["key"]), rg.key)
    np.testing.assert_allclose(unpack(graph["weight"]), rg.weight, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(unpack(graph["node"]), rg.node, rtol=1e-5, atol=1e-7)
    assert graph["token"] == rg.token and graph["method"] == rg.method


# -- AttentionFlow ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["attention", "rollout"])
def test_lazy_route_is_the_in_memory_route(lazy, in_memory, method):
    f = aw.AttentionFlow(lazy, method=method).wait(60)
    assert f.route_token == lazy.n_tokens - 1 and f.graphs[0]["token"] == lazy.n_tokens - 1  # causal default
    f.token = 7  # a click on another token
    f.wait(60)
    assert f.status == "ready" and f.job == {} and f.error == ""
    ref = route_graph(in_memory, method, 7, keep=0.8)
    _same_route(f.graphs[0], ref)
    np.testing.assert_allclose(f.token_scores()[0], ref.node[0], rtol=1e-5, atol=1e-7)
    f.keep = 0.6  # a keep change walks again (the layers' maps are not kept)
    f.wait(60)
    _same_route(f.graphs[0], route_graph(in_memory, method, 7, keep=0.6))


def test_lazy_route_progress_and_the_previous_route_stays(lazy, monkeypatch, fast_progress):
    f = aw.AttentionFlow(lazy, token=3).wait(60)
    before = f.graphs
    gate = Gate(monkeypatch)
    f.token = 9
    assert f.status == "computing" and f.graphs is before and f.graphs[0]["token"] == 3
    assert f.scores == {}  # the strip's scores were token 3's: not shown under token 9
    assert f.job["kind"] == "route" and f.job["token"] == 9
    assert f.job["text"] == f"rollout route of token 9: layer 0/{lazy.n_layers}"
    seen = [f.job["text"]]
    for k in range(1, lazy.n_layers):
        gate.step()
        _until(lambda k=k: f.job.get("done") == k)
        seen.append(f.job["text"])
        assert f.graphs is before and f.status == "computing"  # still the old route, dimmed by the view
    assert seen == [f"rollout route of token 9: layer {k}/{lazy.n_layers}" for k in range(lazy.n_layers)]
    gate.open()
    f.wait(60)
    assert f.graphs[0]["token"] == 9 and f.job == {} and f.status == "ready" and f.progress == 1.0


def test_a_new_click_cancels_the_running_route(lazy, monkeypatch):
    f = aw.AttentionFlow(lazy, token=3).wait(60)
    gate = Gate(monkeypatch)
    f.token = 9
    _until(gate.entered.is_set)  # the walk for 9 is inside its first layer
    f.token = 11
    assert f.job["token"] == 11
    gate.open()
    f.wait(60)
    assert f.graphs[0]["token"] == 11 and f.scores["token"] == 11
    # 11's walk made every layer; 9's stopped after the layer it was in.
    assert gate.calls == lazy.n_layers + 1


def test_lazy_trace_shows_max_flow_unavailable_with_the_limit(lazy, minilm_trace, monkeypatch):
    f = aw.AttentionFlow(lazy)
    info = {m["name"]: m for m in f.methods}
    assert [m for m in info if info[m]["available"]] == ["attention", "rollout"]
    limit = flow_mod.flow_token_limit(lazy.n_layers)
    assert f"up to {limit} tokens at {lazy.n_layers} layers; this LazyTrace has {lazy.n_tokens}" in info["flow"]["reason"]
    assert "grad_rollout=True" in info["grad_rollout"]["reason"]
    with pytest.raises(traitlets.TraitError, match="up to .* tokens"):
        f.method = "flow"
    assert f.method == "rollout"
    # An in-memory trace over the size limit: listed, not offered, the limit named.
    monkeypatch.setattr(flow_mod, "FLOW_MAX_BYTES", 72 * minilm_trace.n_layers * 10 * 10)
    g = aw.AttentionFlow(minilm_trace)
    fl = next(m for m in g.methods if m["name"] == "flow")
    assert not fl["available"]
    assert fl["reason"] == f"exact max-flow: up to 10 tokens at 6 layers; this trace has {minilm_trace.n_tokens}"
    with pytest.raises(traitlets.TraitError, match="up to 10 tokens"):
        g.method = "flow"
    monkeypatch.undo()
    assert next(m for m in aw.AttentionFlow(minilm_trace).methods if m["name"] == "flow")["available"]
    assert [flow_mod.flow_token_limit(n) for n in (6, 32)] == [1114, 482]


class _GradRoute:
    """A streamed gradient route of one position (the contract's ``trace.grad_route``): here
    the route of ``I + mean_h relu(A * G)`` of the in-memory trace with gradients of ones."""

    def __init__(self, trace: aw.AttentionTrace, position: int) -> None:
        self.position, self.target = position, "test target"
        self._layers = route_layers(trace.attentions, "grad_rollout", np.ones_like(trace.attentions))

    def route(self, keep=0.8, max_edges_per_layer=None):
        return route_from_layers(self._layers[0], self.position, carry=self._layers[1], keep=keep,
                                 max_edges_per_layer=max_edges_per_layer, method="grad_rollout")


class _GradLazy(LazyTrace):
    grad_route = None


def _with_grad_route(lazy: LazyTrace, in_memory, position: int) -> LazyTrace:
    glt = _GradLazy(lazy.tokens, lazy.queries, lazy.keys, causal=True, special_mask=lazy.special_mask,
                    model_name=lazy.model_name)
    object.__setattr__(glt, "grad_route", _GradRoute(in_memory, position))
    return glt


def test_lazy_grad_rollout_only_for_its_position(lazy, in_memory):
    glt = _with_grad_route(lazy, in_memory, 20)
    f = aw.AttentionFlow(glt, method="rollout", token=4).wait(60)
    assert next(m for m in f.methods if m["name"] == "grad_rollout")["available"]
    before = f.graphs
    f.method = "grad_rollout"  # token 4 has no gradient route: a message, the route stays
    assert f.status == "error" and f.graphs is before
    assert "position 20" in f.error and "token 4" in f.error
    f.token = 20
    f.wait(60)
    assert f.status == "ready" and f.error == ""
    _same_route(f.graphs[0], glt.grad_route.route(keep=0.8, max_edges_per_layer=f.max_edges_per_layer))
    f.token = 5
    assert f.status == "error" and "position 20" in f.error and f.graphs[0]["token"] == 20
    assert flow_mod.default_token(glt) == 20  # no token selected: the gradient route's position


def test_lazy_flow_refuses_compare(lazy, in_memory):
    with pytest.raises(TypeError, match="compare: .*in-memory AttentionTraces"):
        aw.AttentionFlow(lazy, compare=in_memory)


# -- HeadSummary ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3), (3, 1), (1, 1)])
def test_summary_of_one_layer_or_one_head(shape):
    """bqplot squeezed a size-1 axis of the colours (TraitError / IndexError before)."""
    L, H = shape
    a = np.random.default_rng(0).random((L, H, 5, 5)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    s = aw.HeadSummary(aw.AttentionTrace.from_tensors(a, list("abcde")))
    assert s.mark.color.shape == (L, H)
    s.metric = "distance"
    assert s.mark.color.shape == (L, H)
    s.layer, s.head = L - 1, H - 1
    s.mark.set_state({"selected": [[0, 0]]})
    assert (s.layer, s.head) == (0, 0)
    assert "<svg" in s.to_svg()


def test_lazy_summary_fills_in_the_background_and_links_meanwhile(lazy, in_memory, monkeypatch, fast_progress):
    gate = Gate(monkeypatch, "stats")  # the statistics' layers; the routes pass
    ex = aw.Explorer(lazy)
    s = ex.summary
    assert s.computing and s.job["text"] == f"head statistics: layer 0/{lazy.n_layers}"
    assert "head statistics: layer 0/3" in s.status_line.value and s.status_bar.layout.display == ""
    assert not s.mark.color.any() and "computing" in s.figure.title
    assert s.figure.axes[2].visible is False  # no colour scale to read yet
    # Selection works while the statistics are computed: a click on a cell moves every panel.
    assert (ex.layer, ex.head) == (0, 0)
    s.mark.set_state({"selected": [[2, 1]]})
    assert (ex.heatmap.layer, ex.heatmap.head, ex.matrix.layer, ex.matrix.head) == (2, 1, 2, 1)
    gate.step()  # the first layer
    _until(lambda: s.job.get("done") == 1)
    assert "layer 1/3" in s.status_line.value and s.computing
    gate.open()
    s.wait(60)
    ref = in_memory.head_stats()
    for m in ("entropy", "distance", "special"):
        np.testing.assert_allclose(s.stats[m], ref[m], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.mark.color, ref["entropy"], rtol=1e-5, atol=1e-6)
    assert s.status_line.value == "" and s.status_bar.layout.display == "none" and s.job == {}
    assert s.available == ["entropy", "distance", "special"] and "computing" not in s.figure.title
    assert s.mark.selected.tolist() == [[2, 1]]
    assert s.figure.axes[2].visible is True  # the colour bar is back
    # A random model's entropies are close together: the legend still tells min and max apart.
    import re

    lo, hi = re.search(r"blues from (\S+) \(light\) to (\S+) \(dark\)", s.legend_text).groups()
    assert lo != hi and float(lo) < float(hi)
    fmt = s.figure.axes[2].tick_format[1:]  # and so do the colour bar's ticks
    assert format(s.stats["entropy"].min(), fmt) != format(s.stats["entropy"].max(), fmt)


# -- Explorer ------------------------------------------------------------------------------------


def test_explorer_on_a_lazy_trace_every_panel(lazy, in_memory):
    ex = aw.Explorer(lazy, method="attention")
    assert ex.agreement is None and ex.agreement_note in ex._grid.children
    assert "not shown for a LazyTrace" in ex.agreement_note.value
    assert ex.summary in ex._grid.children and ex.flow in ex._grid.children
    assert "LazyTrace" in ex._header.value
    ex.flow.wait(60)
    ex.summary.wait(60)
    # A click on a token row of the flow view (the page sets token) moves every panel, and the
    # route of that token is drawn.
    assert ex.token is None
    ex.flow.set_state({"token": 12})
    assert (ex.token, ex.heatmap.token, ex.matrix.token) == (12, 12, 12)
    ex.flow.wait(60)
    _same_route(ex.flow.graphs[0], route_graph(in_memory, "attention", 12, keep=0.8))
    ex.select(layer=1, head=3)
    sent = []
    ex.heatmap.send = lambda content, buffers=None: sent.append((content, buffers))
    ex.heatmap._on_custom_msg(ex.heatmap, {"type": "get_map", "id": "r1", "layer": 1, "head": 3}, [])
    got = np.frombuffer(sent[-1][1][0], np.float16).reshape(sent[-1][0]["shape"])
    np.testing.assert_allclose(got, in_memory.head_map(1, 3), atol=2e-3)  # the heatmap draws this head
    assert ex.summary.mark.selected.tolist() == [[1, 3]]
    assert "<svg" in ex.to_svg()
    with pytest.raises(traitlets.TraitError, match="exact max-flow"):
        ex.method = "flow"


def test_explorer_mapping_of_lazy_traces_and_compare(lazy, in_memory):
    ex = aw.Explorer({"first": lazy, "second": lazy})
    ex.select(token=6)
    ex.target_picker.value = "second"
    assert ex.agreement is None and ex.flow.token == 6
    ex.flow.wait(60)
    assert ex.flow.graphs[0]["token"] == 6
    with pytest.raises(TypeError, match="in-memory AttentionTraces"):
        aw.Explorer(lazy, compare=in_memory)
    # A mapping that mixes an in-memory trace in still gets the agreement panel for it.
    ex2 = aw.Explorer(in_memory)
    assert ex2.agreement is not None and ex2.agreement_note.layout.display == "none"
