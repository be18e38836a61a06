"""The kernel keeps control: facts the page cannot rewrite, bounded messages, bounded work."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets import (
    AttentionFlow,
    AttentionHeatmap,
    AttentionMatrix,
    AttentionTrace,
)


def make_trace(n_layers=3, n_heads=2, n_tokens=6, seed=0) -> AttentionTrace:
    rng = np.random.default_rng(seed)
    a = rng.random((n_layers, n_heads, n_tokens, n_tokens)).astype(np.float32)
    a /= a.sum(-1, keepdims=True)
    return AttentionTrace.from_tensors(a, [f"t{i}" for i in range(n_tokens)])


def update(widget, state):
    """Deliver a state update the way the view's save_changes() does."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})


# -- issue 13 item 5: the page cannot rewrite facts -------------------------------------------
@pytest.mark.parametrize("cls", [AttentionMatrix, AttentionHeatmap, AttentionFlow])
def test_page_cannot_rewrite_the_facts_of_the_trace(cls, caplog):
    tr = make_trace()
    w = cls(tr)
    with caplog.at_level(logging.WARNING, logger="attn_widgets"):
        update(w, {"n_layers": 50, "n_heads": 40, "tokens": ["x"] * 60, "special": [True] * 60,
                   "model_name": "evil", "causal": True, "error": "fake", "layer": 1})
    assert (w.n_layers, w.n_heads, w.tokens, w.model_name, w.causal, w.error) == (3, 2, list(tr.tokens), "", False, "")
    assert w.special == [False] * 6
    assert w.layer == 1  # the rest of the update still applies
    assert "read-only" in caplog.text and "n_layers" in caplog.text
    # Validation uses the trace: layer 50 is still out of range, and nothing later breaks.
    with pytest.raises(traitlets.TraitError, match="layer"):
        w.set_state({"layer": 50})
    assert w.layer == 1
    assert w.to_svg().startswith("<?xml") or w.to_svg().startswith("<svg")


def test_page_cannot_write_computed_traits():
    w = AttentionHeatmap(make_trace())
    before = dict(w.initial_map)
    update(w, {"initial_map": {"dtype": "float16", "shape": [1], "data": b"\0\0"}, "head": 1})
    assert w.initial_map.keys() == before.keys() and w.initial_map["shape"] == before["shape"]
    assert w.head == 1
    m = AttentionMatrix(make_trace())
    thumbs = m.thumbs
    update(m, {"thumbs": {}})
    assert m.thumbs is thumbs


def test_page_cannot_rewrite_facts_of_the_explorer_panels(minilm_trace):
    ex = aw.Explorer(minilm_trace)
    update(ex.heatmap, {"n_layers": 50, "layer": 5})
    assert ex.heatmap.n_layers == 6 and ex.layer == 5
    with pytest.raises(traitlets.TraitError):
        ex.matrix.set_state({"n_layers": 60, "layer": 50})
    assert ex.matrix.n_layers == 6 and ex.layer == 5
    assert ex.heatmap.strip_values() is None or len(ex.heatmap.strip_values()) == minilm_trace.n_tokens


# -- issue 13 item 2: bounded background work ---------------------------------------------------
def _pool_threads() -> int:
    import threading

    # Job threads: the pool's (attn_widgets-pool-N) and the old one-thread-per-job
    # worker's (attn_widgets:<key>), so the test fails on the old design. Not jobs: the
    # one-off numba warm-up, the LazyTrace executors and a lazy matrix's thumbnail refiner
    # (fixed threads, left running by earlier tests in the same process).
    return sum(1 for th in threading.enumerate()
               if (th.name.startswith("attn_widgets-pool-") or th.name.startswith("attn_widgets:"))
               and "warm-up" not in th.name)


def test_a_burst_of_jobs_runs_on_the_bounded_pool_and_drops_superseded_ones():
    import threading

    from attn_widgets._jobs import POOL_SIZE, Worker

    w = Worker()
    ran, results, peak = [], [], 0
    gate = threading.Event()

    def job_fn(i):
        def fn(job):
            ran.append(i)
            gate.wait(5)  # the first jobs block: later ones pile up behind them
            return i
        return fn

    last = None
    for i in range(1000):
        last = w.submit(i, job_fn(i), results.append, results.append)
        peak = max(peak, _pool_threads())
    gate.set()
    assert last.done.wait(10)
    assert peak <= POOL_SIZE and _pool_threads() <= POOL_SIZE
    assert results == [999]  # only the newest job's result reaches the panel
    assert len(ran) <= POOL_SIZE + 1  # what had started, and the newest: 998 never ran


def test_a_burst_of_token_changes_on_a_flow_panel_stays_bounded():
    from attn_widgets._jobs import POOL_SIZE

    tr = make_trace(n_layers=4, n_heads=2, n_tokens=10, seed=3)
    f = AttentionFlow(tr, method="flow")
    peak = 0
    for i in range(1000):
        f.token = i % 10
        peak = max(peak, _pool_threads())
    f.token = 7
    f.wait(120)
    assert peak <= POOL_SIZE, f"{peak} background threads for a burst (bound {POOL_SIZE})"
    assert f.status == "ready" and f.scores["token"] == 7
    np.testing.assert_allclose(f.token_scores()[0], tr.attention_flow(rows=[7])[0], atol=1e-6)


# -- issue 13 item 1: no trait update over the message bound ----------------------------------
def _capture(widget, monkeypatch):
    sent = []
    monkeypatch.setattr(widget, "_send", lambda msg, buffers=None: sent.append((msg, list(buffers or []))))
    return sent


def _packed(nbytes: int) -> dict:
    return {"dtype": "uint8", "shape": [nbytes], "data": bytes(nbytes)}


def test_a_trait_update_over_the_bound_is_refused_with_a_message(monkeypatch):
    from attn_widgets._wire import MAX_MESSAGE_BYTES

    w = AttentionHeatmap(make_trace())
    sent = _capture(w, monkeypatch)
    big = {f"0:{i}": _packed(3_000_000) for i in range(4)}  # 12 MB in one trait
    w.preloaded = big
    updates = [m for m, _ in sent if m.get("method") == "update"]
    assert all("preloaded" not in m["state"] for m in updates), "an over-bound update was sent"
    assert "preloaded" in w.error and "not sent" in w.error and "MB" in w.error
    assert all(sum(len(b) for b in bufs) <= MAX_MESSAGE_BYTES for _, bufs in sent)
    # Under the bound it goes out as usual.
    w.preloaded = {"0:0": _packed(1000)}
    assert any("preloaded" in m["state"] for m, _ in sent if m.get("method") == "update")


def test_a_joint_update_over_the_bound_is_split_per_trait(monkeypatch):
    from attn_widgets._wire import MAX_MESSAGE_BYTES

    w = AttentionHeatmap(make_trace())
    sent = _capture(w, monkeypatch)
    with w.hold_sync():
        w.preloaded = {"0:0": _packed(5_000_000)}
        w.image = _packed(5_000_000)
        w.head = 1
    updates = [(m, b) for m, b in sent if m.get("method") == "update"]
    assert {k for m, _ in updates for k in m["state"]} >= {"preloaded", "image", "head"}
    assert len(updates) >= 2 and all(sum(len(x) for x in b) <= MAX_MESSAGE_BYTES for _, b in updates)
    assert w.error == ""


# -- issue 13 item 3: exports compute only what they embed ------------------------------------
def test_heatmap_export_computes_only_the_maps_that_fit(monkeypatch):
    import json

    tr = make_trace(n_layers=3, n_heads=4, n_tokens=40)
    w = AttentionHeatmap(tr, layer=1, head=2)
    calls = []
    real = AttentionHeatmap._packed_map
    monkeypatch.setattr(AttentionHeatmap, "_packed_map", lambda self, l, h: calls.append((l, h)) or real(self, l, h))
    one = len(json.dumps(w.export_extras(10**9)[0]["preloaded"]["1:0"])) + 16
    calls.clear()
    state, _extras, notes = w.export_extras(3 * one + one // 2)  # room for three maps
    assert list(state["preloaded"]) == ["1:0", "1:1", "1:2"]  # the selected layer first
    assert len(calls) == 3, f"computed {len(calls)} maps to embed 3"
    assert notes and "15 of 18" in notes[0]
    np.testing.assert_allclose(
        np.frombuffer(__import__("base64").b64decode(state["preloaded"]["1:2"]["data"]["$b64"]), np.float16),
        tr.head_map(1, 2).astype(np.float16).ravel())


def test_save_html_reports_progress(tmp_path, minilm_trace):
    seen = []
    ex = aw.Explorer(minilm_trace)
    ex.save_html(tmp_path / "ex.html", progress=lambda f, what: seen.append((f, what)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) >= 5
    assert {"matrix: state", "heatmap: embedded data", "flow: embedded data"} <= {w for _, w in seen}
    with pytest.raises(TypeError, match="progress"):
        ex.save_html(tmp_path / "x.html", progress="yes")
