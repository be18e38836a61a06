"""The kernel keeps control: facts the page cannot rewrite, bounded messages, bounded work."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets import AttentionFlow, AttentionHeatmap, AttentionMatrix, AttentionTrace


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
