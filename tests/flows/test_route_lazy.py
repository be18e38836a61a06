"""route_graph, available_methods and head_stats on an on-demand trace (LazyTrace): the
layer-by-layer walk equals the in-memory one on the materialized trace, progress and
cancellation behave, and the exact bracketed pruning equals the sorting one."""

from __future__ import annotations

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets.flows import RouteCancelled, StatsCancelled, available_methods, head_stats, route_graph
from attn_widgets.flows import route as route_mod
from attn_widgets.lazy import LazyTrace

from .conftest import PARAGRAPH

pytest.importorskip("torch")


@pytest.fixture(params=[False, True], ids=["in_line", "look_ahead"])
def look_ahead(request, monkeypatch):
    """Both ways of fetching layers: in line, and the next layer on a helper thread."""
    monkeypatch.setattr(route_mod, "LOOK_AHEAD", request.param)
    return request.param


def random_lazy(L=3, H=4, Hkv=None, t=40, d=8, seed=0, **kw):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((L, H, t, d)).astype(np.float32) * 1.5
    k = rng.standard_normal((L, Hkv or H, t, d)).astype(np.float32)
    return LazyTrace([f"t{i}" for i in range(t)], q, k, **kw)


@pytest.fixture(scope="module")
def minilm_lazy(minilm):
    """Real MiniLM queries and keys (bidirectional, [CLS] / [SEP] special)."""
    model, tok = minilm
    lt = aw.trace_lazy(model, tok, PARAGRAPH, max_length=40)
    assert not lt.causal and lt.n_tokens == 40
    return lt


@pytest.fixture(scope="module")
def gpt2_lazy():
    """The config-built long-context GPT-2 (causal), few layers and tokens."""
    model, tok = aw.capture.long_context_model("gpt2", n_layer=3, n_head=4, n_embd=32, n_positions=128)
    lt = aw.trace_lazy(model, tok, PARAGRAPH, max_length=48)
    assert lt.causal
    return lt


def _window(t, w):
    return np.tri(t, dtype=bool) & ~np.tri(t, k=-w, dtype=bool)


def _traces(minilm_lazy, gpt2_lazy):
    t = 40
    return {
        "minilm": minilm_lazy,
        "gpt2": gpt2_lazy,
        "causal_window_gqa": random_lazy(H=6, Hkv=2, t=t, causal=True, mask=[_window(t, 6), None, _window(t, 3)]),
        "bidir_band": random_lazy(t=t, causal=False, mask=_window(t, 5) | _window(t, 5).T, seed=1),
    }


def assert_same_route(got, ref):
    """Same kept edges, same weights / nodes / carry up to float32 rounding, exact counts.
    Edges are compared as sets: two weights equal to float32 rounding may swap places in
    the strongest-first order (the lazy maps are float32 head means, the in-memory ones
    float64), so the order is checked as non-increasing weights per layer."""
    assert got.method == ref.method and got.token == ref.token
    np.testing.assert_array_equal(got.needed, ref.needed)
    np.testing.assert_array_equal(got.capped, ref.capped)
    og, orf = np.lexsort((got.key, got.query, got.layer)), np.lexsort((ref.key, ref.query, ref.layer))
    for field in ("layer", "query", "key"):
        np.testing.assert_array_equal(getattr(got, field)[og], getattr(ref, field)[orf], err_msg=field)
    np.testing.assert_allclose(got.weight[og], ref.weight[orf], atol=2e-6, rtol=2e-5, err_msg="weight")
    same_layer = got.layer[1:] == got.layer[:-1]
    assert (np.abs(got.weight[1:]) <= np.abs(got.weight[:-1]))[same_layer].all()
    for field in ("node", "carry", "layer_total", "dropped", "total"):
        np.testing.assert_allclose(getattr(got, field), getattr(ref, field), atol=2e-6, rtol=2e-5, err_msg=field)


@pytest.mark.parametrize("method", ["attention", "rollout"])
def test_lazy_route_equals_the_route_of_the_materialized_trace(method, minilm_lazy, gpt2_lazy, look_ahead):
    for name, lt in _traces(minilm_lazy, gpt2_lazy).items():
        full = lt.materialize()
        t = lt.n_tokens
        for token in (t - 1, t // 2, 0):
            for keep, cap in ((0.8, 400), (0.5, 7), (1.0, None)):
                kw = dict(keep=keep, max_edges_per_layer=cap, residual=0.3)
                got = route_graph(lt, method, token, **kw)
                assert_same_route(got, route_graph(full, method, token, **kw))
                if lt.causal:  # the walk from token p never leaves rows / keys <= p
                    assert got.key.max(initial=0) <= token and got.query.max(initial=0) <= token
                    assert not got.node[:, token + 1 :].any()


def test_route_union_of_a_lazy_trace(gpt2_lazy):
    from attn_widgets.flows import route_union

    got = route_union(gpt2_lazy, "rollout", [10, 30], keep=0.7)
    ref = route_union(gpt2_lazy.materialize(), "rollout", [10, 30], keep=0.7)
    np.testing.assert_array_equal(got.needed, ref.needed)
    np.testing.assert_array_equal(np.stack([got.layer, got.query, got.key]), np.stack([ref.layer, ref.query, ref.key]))
    np.testing.assert_allclose(got.weight, ref.weight, atol=2e-6, rtol=2e-5)
    np.testing.assert_allclose(got.node, ref.node, atol=2e-6, rtol=2e-5)


def test_lazy_route_reads_only_the_rows_it_reaches(gpt2_lazy, look_ahead):
    calls = []

    class Spy(LazyTrace):
        def tile(self, layer, head, r0, r1, c0, c1, step=1):
            calls.append((layer, head, r0, r1, c0, c1))
            return super().tile(layer, head, r0, r1, c0, c1, step)

    lt = gpt2_lazy
    spy = Spy(lt.tokens, lt.queries, lt.keys, causal=True, scaling=lt.scaling)
    token = 20
    route_graph(spy, "rollout", token)
    top = spy.n_layers - 1
    assert calls[0] == (top, "mean", token, token + 1, 0, token + 1)  # the top layer: one row
    assert all(head == "mean" and r1 <= token + 1 and c1 <= token + 1 for _, head, _, r1, _, c1 in calls)
    assert sorted(c[0] for c in calls) == list(range(spy.n_layers))  # each layer computed once


def test_progress_is_called_once_per_layer_and_cancel_raises(gpt2_lazy, look_ahead):
    lt = gpt2_lazy
    seen = []
    route_graph(lt, "rollout", 30, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, lt.n_layers) for i in range(1, lt.n_layers + 1)]

    polls = []

    def cancelled():
        polls.append(1)
        return len(polls) > 2  # cancel before the third layer

    seen.clear()
    with pytest.raises(RouteCancelled):
        route_graph(lt, "rollout", 30, progress=lambda d, n: seen.append(d), cancelled=cancelled)
    assert seen == [1, 2]
    # nothing left broken: the next call completes and equals a fresh one
    again = route_graph(lt, "rollout", 30, cancelled=lambda: False)
    assert_same_route(again, route_graph(lt.materialize(), "rollout", 30))
    # the in-memory walk takes the same callbacks
    seen.clear()
    route_graph(lt.materialize(), "attention", 30, progress=lambda d, n: seen.append(d))
    assert seen == [1, 2, 3]
    with pytest.raises(RouteCancelled):
        route_graph(lt.materialize(), "attention", 30, cancelled=lambda: True)


def test_on_demand_methods_and_errors(gpt2_lazy):
    lt = gpt2_lazy
    assert available_methods(lt) == ("attention", "rollout")
    assert "flow" in available_methods(lt.materialize())
    with pytest.raises(ValueError, match="method: 'flow' needs every map"):
        route_graph(lt, "flow", 3)
    with pytest.raises(ValueError, match="trace_lazy\\(..., grad_rollout=True\\)"):
        route_graph(lt, "grad_rollout", 3)
    with pytest.raises(ValueError, match="token: expected 0 <= token < 48"):
        route_graph(lt, "rollout", 48)
    with pytest.raises(TypeError, match="progress: expected None or a callable"):
        route_graph(lt, "rollout", 3, progress=5)

    expected = route_graph(lt.materialize(), "grad_rollout", 7, gradients=np.ones(lt.shape, np.float32))

    class Streamed:
        position = 7
        target = "test"

        def route(self, keep=0.8, max_edges_per_layer=400):
            assert (keep, max_edges_per_layer) == (0.6, 9)
            return expected

    lg = LazyTrace(lt.tokens, lt.queries, lt.keys, causal=True, scaling=lt.scaling, grad_route=Streamed())
    assert available_methods(lg) == ("attention", "rollout", "grad_rollout")
    assert route_graph(lg, "grad_rollout", 7, keep=0.6, max_edges_per_layer=9) is expected
    with pytest.raises(ValueError, match="streamed for position 7, received 3"):
        route_graph(lg, "grad_rollout", 3)


# -- the exact pruning above the sorting size ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["uniform", "heavy", "ties", "sparse"])
def test_bracketed_prune_equals_the_sorting_prune(kind, dtype, monkeypatch):
    rng = np.random.default_rng(3)
    n = 300_000
    if kind == "uniform":
        mag = rng.random(n)
    elif kind == "heavy":
        mag = rng.pareto(1.2, n)
    elif kind == "ties":
        mag = rng.integers(0, 6, n).astype(float)  # a few values, many equal
    else:
        mag = np.where(rng.random(n) < 0.02, rng.random(n), 0.0)
    mag = mag.astype(dtype)
    assert mag.size > route_mod._PRUNE_SORT
    for keep in (0.2, 0.8, 0.999, 1.0):
        for cap in (None, 1, 50):
            if cap is None and keep > 0.5 and kind != "sparse":
                continue  # a full sort of most edges: covered by the sparse case
            got = route_mod._prune(mag, keep, cap)
            ref = route_mod._prune_sort(mag, keep, cap)
            assert got[2] == ref[2], (keep, cap)  # needed
            np.testing.assert_array_equal(got[0], ref[0])  # kept, in order
            assert got[1] == pytest.approx(ref[1], rel=1e-12)


def test_bracket_widens_when_the_sample_misleads(monkeypatch):
    # A sample of 64 values cannot place the cut well: the bracket must widen until exact.
    monkeypatch.setattr(route_mod, "_SAMPLE", 64)
    rng = np.random.default_rng(5)
    mag = rng.pareto(0.8, 200_000)
    for keep in (0.3, 0.9):
        got, ref = route_mod._prune(mag, keep, 20), route_mod._prune_sort(mag, keep, 20)
        assert got[2] == ref[2]
        np.testing.assert_array_equal(got[0], ref[0])


# -- head statistics -------------------------------------------------------------------------------
def test_head_stats_of_a_lazy_trace_equal_the_materialized(minilm_lazy, gpt2_lazy):
    for name, lt in _traces(minilm_lazy, gpt2_lazy).items():
        seen = []
        got = head_stats(lt, progress=lambda d, n: seen.append((d, n)))
        ref = head_stats(lt.materialize())
        assert set(got) == set(ref)
        assert seen == [(i, lt.n_layers) for i in range(1, lt.n_layers + 1)]
        for key in ("entropy", "distance", "special"):
            assert got[key].shape == (lt.n_layers, lt.n_heads)
            np.testing.assert_allclose(got[key], ref[key], atol=1e-6, rtol=1e-6, err_msg=f"{name} {key}")
        assert np.isnan(got["grad_importance"]).all() and np.isnan(got["value_importance"]).all()
    assert minilm_lazy.special_mask.any() and head_stats(minilm_lazy)["special"].min() > 0

    class NoLayerStats(LazyTrace):  # another on-demand trace: head_stats reads head_map per head
        layer_stats = None

    lt = minilm_lazy
    other = NoLayerStats(lt.tokens, lt.queries, lt.keys, scaling=lt.scaling, special_mask=lt.special_mask)
    for key, v in head_stats(other).items():
        np.testing.assert_allclose(v, head_stats(lt)[key], atol=1e-6, rtol=1e-6, err_msg=key)
    with pytest.raises(StatsCancelled):
        head_stats(gpt2_lazy, cancelled=lambda: True)


def test_lazy_route_on_the_trace_compute_thread_does_not_deadlock(gpt2_lazy, look_ahead):
    # e.g. a caller that runs its whole job through the trace's foreground thread
    import threading

    lt = gpt2_lazy
    box = []
    runner = threading.Thread(target=lambda: box.append(lt._call(route_graph, lt, "rollout", 25)), daemon=True)
    runner.start()
    runner.join(60)  # a deadlock fails the test instead of hanging the suite
    assert box, "route_graph on the trace's compute thread did not finish"
    assert_same_route(box[0], route_graph(lt.materialize(), "rollout", 25))


def test_prune_with_a_heavy_head_and_a_bracket_inside_the_bracket(monkeypatch):
    # An attention sink: a few edges far above a million tiny ones. The sample misses them
    # (they are below one in a stride), so they are taken exactly first.
    rng = np.random.default_rng(7)
    mag = rng.random(1_200_000) * 1e-6
    mag[rng.choice(mag.size, 5, replace=False)] = [5.0, 2.0, 2.0, 1.0, 0.5]
    for keep in (0.5, 0.8, 0.95, 0.9999):
        for cap in (None, 30) if keep < 0.9 else (30,):
            got, ref = route_mod._prune(mag, keep, cap), route_mod._prune_sort(mag, keep, cap)
            assert got[2] == ref[2], (keep, cap)
            np.testing.assert_array_equal(got[0], ref[0])
    # A coarse sample makes a bracket of ~800k values: it is bracketed again inside itself.
    calls = []
    real = route_mod._needed

    def spy(*args):
        calls.append(args[0].size)
        return real(*args)

    monkeypatch.setattr(route_mod, "_needed", spy)
    monkeypatch.setattr(route_mod, "_SAMPLE", 4096)
    mag = rng.random(3_000_000)
    for keep in (0.5, 0.8):
        got, ref = route_mod._prune(mag, keep, 40), route_mod._prune_sort(mag, keep, 40)
        assert got[2] == ref[2], keep
        np.testing.assert_array_equal(got[0], ref[0])
    assert any(n < mag.size for n in calls), calls  # a bracket inside a bracket ran
