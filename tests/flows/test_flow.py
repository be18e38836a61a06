"""Exact attention flow: networkx reference on real models, engines, properties, callbacks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_widgets.flows import FlowCancelled, attention_flow
from attn_widgets.flows._inputs import mixed_maps

from .conftest import PARAGRAPH
from .reference import flow_ref
from .strategies import attention_stacks


@pytest.fixture(scope="module")
def minilm_128(minilm):
    import attn_widgets as aw

    model, tok = minilm
    tr = aw.trace(model, tok, " ".join([PARAGRAPH] * 3), max_length=128, gradients=False)
    assert tr.n_tokens == 128
    return tr


# -- against the networkx reference (the published method: one max-flow per pair) ------------


def test_matches_networkx_on_minilm(minilm_trace):
    a = minilm_trace.attentions
    assert a.shape[-1] <= 16
    raw_ref = flow_ref(a, normalize=False)
    raw = attention_flow(a, normalize=False)
    assert np.abs(raw - raw_ref).max() <= 1e-6
    ref = raw_ref / raw_ref.sum(1, keepdims=True)
    out = attention_flow(a)
    assert out.shape == ref.shape and out.dtype == np.float64
    assert np.abs(out - ref).max() <= 1e-6


def test_matches_networkx_on_causal_gpt2(gpt2_trace):
    a = gpt2_trace.attentions
    ref = flow_ref(a)
    out = attention_flow(a)
    assert np.abs(out - ref).max() <= 1e-6
    assert (np.triu(out, 1) == 0).all()  # a later token can't reach an earlier output


@pytest.mark.parametrize("residual", [0.0, 0.2, 0.8])
def test_residual_matches_networkx(minilm_trace, residual):
    a = minilm_trace.attentions
    rows = [0, 4, a.shape[-1] - 1]
    ref = flow_ref(a, residual=residual, rows=rows, normalize=False)
    out = attention_flow(a, rows=rows, residual=residual, normalize=False)
    assert np.abs(out - ref).max() <= 1e-6


@settings(max_examples=40, deadline=None)
@given(attention_stacks(max_layers=4, max_heads=2, max_tokens=6), st.sampled_from([0.0, 0.5, 0.9]))
def test_random_matches_networkx(a, residual):
    ref = flow_ref(a, residual=residual, normalize=False)
    out = attention_flow(a, residual=residual, normalize=False)
    assert np.abs(out - ref).max() <= 1e-6


# -- engines and parallelism agree on longer real inputs --------------------------------------


def test_numba_and_scipy_engines_agree_real_t64(minilm_long):
    rows = [0, 17, 63]
    fast = attention_flow(minilm_long, rows=rows, normalize=False, engine="numba")
    slow = attention_flow(minilm_long, rows=rows, normalize=False, engine="scipy")
    assert np.abs(fast - slow).max() <= 1e-6


def test_numba_and_scipy_engines_agree_real_t128(minilm_128):
    fast = attention_flow(minilm_128, rows=[70], normalize=False, engine="numba")
    slow = attention_flow(minilm_128, rows=[70], normalize=False, engine="scipy")
    assert np.abs(fast - slow).max() <= 1e-6


def test_threads_give_identical_values(minilm_long):
    one = attention_flow(minilm_long, workers=1)
    two = attention_flow(minilm_long, workers=2)
    np.testing.assert_array_equal(one, two)  # exact integer arithmetic: bit-identical
    # few rows, many workers: each row's sinks are split between threads
    np.testing.assert_array_equal(attention_flow(minilm_long, rows=[3], workers=3), one[[3]])


def test_rows_subset_order_and_duplicates(minilm_long):
    full = attention_flow(minilm_long, rows=None)
    assert full.shape == (64, 64)
    sub = attention_flow(minilm_long, rows=[40, 2, 40])
    np.testing.assert_array_equal(sub, full[[40, 2, 40]])
    np.testing.assert_array_equal(attention_flow(minilm_long, rows=np.int64(5)), full[[5]])
    np.testing.assert_array_equal(attention_flow(minilm_long, rows=np.array([1, 2])), full[[1, 2]])
    assert attention_flow(minilm_long, rows=[]).shape == (0, 64)


# -- closed forms for one and two layers -------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(attention_stacks(max_layers=2, max_tokens=7), st.floats(0, 1))
def test_one_and_two_layers_closed_form(a, residual):
    ah = mixed_maps(a, residual)
    out = attention_flow(a, residual=residual, normalize=False)
    if a.shape[0] == 1:
        expect = ah[0]  # the edge itself is the only path
    else:
        # two layers: paths (2, i) -> (1, k) -> (0, j) are edge-disjoint
        expect = np.minimum(ah[1][:, :, None], ah[0][None, :, :]).sum(axis=1)
    assert np.abs(out - expect).max() <= 1e-9


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(attention_stacks(max_layers=5, max_heads=3, max_tokens=9), st.floats(0, 1))
def test_values_in_unit_interval_rows_sum_to_one(a, residual):
    raw = attention_flow(a, residual=residual, normalize=False)
    assert (raw >= 0).all() and (raw <= 1 + 1e-12).all()
    out = attention_flow(a, residual=residual)
    assert (out >= 0).all() and (out <= 1 + 1e-12).all()
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(attention_stacks(max_layers=5, max_tokens=9, causal=True), st.floats(0, 1))
def test_causal_in_causal_out(a, residual):
    out = attention_flow(a, residual=residual)
    assert (np.triu(out, 1) == 0).all()


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 9), st.floats(0, 1))
def test_identity_attention_gives_identity(n_layers, n_heads, t, residual):
    a = np.broadcast_to(np.eye(t), (n_layers, n_heads, t, t))
    np.testing.assert_allclose(attention_flow(a, residual=residual), np.eye(t), atol=1e-12)


def test_flow_bounded_by_sink_capacity(minilm_long):
    # max-flow <= capacity of the cut around the sink: column sums of Ah_1 (and <= 1)
    raw = attention_flow(minilm_long, rows=[0, 10], normalize=False)
    ah = mixed_maps(minilm_long.attentions, 0.5)
    assert (raw <= np.minimum(1.0, ah[0].sum(0)) + 1e-9).all()


# -- progress and cancel ------------------------------------------------------------------------


def test_progress_reports_every_pair_when_unthrottled(minilm_trace):
    t = minilm_trace.n_tokens
    calls = []
    attention_flow(minilm_trace, rows=[0, 1], progress=lambda d, n: calls.append((d, n)), progress_every=0,
                   workers=1)
    assert calls[0] == (0, 2 * t) and calls[-1] == (2 * t, 2 * t)
    assert [d for d, _ in calls] == list(range(2 * t + 1))


def test_progress_is_throttled_and_monotone(minilm_long):
    calls = []
    attention_flow(minilm_long, rows=None, progress=lambda d, n: calls.append((d, n)), progress_every=10.0)
    total = 64 * 64
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert len(calls) <= 3


def test_progress_with_threads_runs_in_calling_thread(minilm_long):
    me = threading.get_ident()
    seen = []
    attention_flow(minilm_long, rows=None, workers=2, progress_every=0,
                   progress=lambda d, n: seen.append((threading.get_ident(), d)))
    assert {tid for tid, _ in seen} == {me}
    done = [d for _, d in seen]
    assert done == sorted(done) and done[-1] == 64 * 64


def test_cancel_immediately(minilm_trace):
    with pytest.raises(FlowCancelled) as err:
        attention_flow(minilm_trace, rows=[0], cancel=lambda: True)
    assert err.value.done == 0 and err.value.total == minilm_trace.n_tokens


def test_cancel_between_pairs(minilm_trace):
    t = minilm_trace.n_tokens
    checks = []

    def cancel():
        checks.append(1)
        return len(checks) > 5

    with pytest.raises(FlowCancelled) as err:
        attention_flow(minilm_trace, rows=[0, 1], cancel=cancel, workers=1)
    assert err.value.done == 5 and err.value.total == 2 * t


def test_cancel_stops_worker_threads(minilm_128):
    start = time.perf_counter()
    with pytest.raises(FlowCancelled) as err:
        attention_flow(minilm_128, rows=None, workers=2, cancel=lambda: time.perf_counter() - start > 0.2)
    assert time.perf_counter() - start < 2.0  # the full matrix would take several seconds
    assert 0 < err.value.done < err.value.total
    assert not [th for th in threading.enumerate() if th.name.startswith("attn-flow-")]


def test_cancel_false_changes_nothing(minilm_trace):
    np.testing.assert_array_equal(
        attention_flow(minilm_trace, rows=[2], cancel=lambda: False, progress=lambda d, n: None),
        attention_flow(minilm_trace, rows=[2]),
    )


def test_without_numba_auto_falls_back_to_scipy(minilm_trace, monkeypatch):
    from attn_widgets.flows import maxflow

    expect = attention_flow(minilm_trace, rows=[1, 5], engine="numba")
    monkeypatch.setattr(maxflow, "_numba_available", lambda: False)
    got = attention_flow(minilm_trace, rows=[1, 5])
    assert np.abs(got - expect).max() <= 1e-6
    with pytest.raises(ImportError, match="numba"):
        attention_flow(minilm_trace, rows=[1], engine="numba")
