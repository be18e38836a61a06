"""HeadSummary (bqplot) and Explorer: state round trips, clicks as the comm delivers them, linking."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

import attn_widgets as aw


@pytest.fixture()
def bare(minilm_trace):
    return aw.AttentionTrace.from_tensors(minilm_trace.attentions, minilm_trace.tokens, special_mask=minilm_trace.special_mask)


def test_summary_shows_head_stats(minilm_trace):
    s = aw.HeadSummary(minilm_trace)
    stats = minilm_trace.head_stats()
    np.testing.assert_allclose(s.mark.color, stats["entropy"])
    for metric in ("distance", "special", "grad_importance"):
        s.metric = metric
        np.testing.assert_allclose(s.mark.color, stats[metric])
        assert s.selector.value == metric and metric.replace("_", " ") in s.figure.title
    s.selector.value = "entropy"  # the toggle buttons drive the metric too
    assert s.metric == "entropy"


def test_summary_click_round_trip(minilm_trace):
    """A click is bqplot setting ``selected`` from the view: feed it through set_state."""
    s = aw.HeadSummary(minilm_trace)
    s.mark.set_state({"selected": {"dtype": "int32", "shape": [1, 2], "value": np.array([[2, 9]], dtype=np.int32).tobytes()}})
    assert (s.layer, s.head) == (2, 9)
    s.head = 4
    assert s.mark.selected.tolist() == [[2, 4]]
    s.head = "mean"  # an aggregate highlights the whole layer row
    assert s.mark.selected.tolist() == [[2, h] for h in range(minilm_trace.n_heads)]
    assert s.head == "mean"


def test_summary_click_as_the_browser_sends_it_moves_every_panel(minilm_trace):
    """The page sends ``selected`` as a JSON list of cells (not a binary array): it must reach
    the observers. Starts from another cell than the one clicked."""
    ex = aw.Explorer(minilm_trace)
    ex.select(layer=2, head=7)
    ex.summary.mark.set_state({"selected": [[4, 9]]})
    assert ex.selection["layer"] == 4 and ex.selection["head"] == 9
    assert (ex.matrix.layer, ex.matrix.head, ex.heatmap.layer, ex.heatmap.head, ex.flow.layer) == (4, 9, 4, 9, 4)
    assert ex.summary.mark.selected.tolist() == [[4, 9]]
    # JSON numbers may arrive as floats; a cell outside the trace is ignored, not applied.
    ex.summary.mark.set_state({"selected": [[1.0, 3.0]]})
    assert (ex.layer, ex.head) == (1, 3)
    ex.summary.mark.set_state({"selected": [[60, 3]]})
    assert (ex.layer, ex.head) == (1, 3) and ex.summary.mark.selected.tolist() == [[1, 3]]
    ex.summary.mark.set_state({"selected": [[1, "x"]]})
    assert (ex.layer, ex.head) == (1, 3)


def test_summary_without_gradients_offers_no_grad_metric(bare):
    s = aw.HeadSummary(bare)
    assert "grad_importance" not in s.available
    with pytest.raises(traitlets.TraitError):
        s.metric = "grad_importance"
    with pytest.raises(ValueError, match="no gradients"):
        aw.HeadSummary(bare, metric="grad_importance")


def test_summary_validates_selection(minilm_trace):
    s = aw.HeadSummary(minilm_trace)
    with pytest.raises(traitlets.TraitError, match="layer"):
        s.layer = 6
    with pytest.raises(traitlets.TraitError, match="head"):
        s.head = "median"
    with pytest.raises(TypeError, match="unknown argument"):
        aw.HeadSummary(minilm_trace, metrc="entropy")
    assert s.layer == 0


def test_explorer_links_every_panel(minilm_trace):
    ex = aw.Explorer(minilm_trace)
    seen = []
    ex.observe(lambda ch: seen.append((ch["name"], ch["new"])), ["layer", "head", "token"])
    ex.matrix.set_state({"layer": 3, "head": 7})  # a click in the matrix view
    assert ex.selection == {"layer": 3, "head": 7, "token": None}
    assert (ex.heatmap.layer, ex.heatmap.head, ex.flow.layer, ex.summary.layer, ex.summary.head) == (3, 7, 3, 3, 7)
    assert ("layer", 3) in seen and ("head", 7) in seen
    ex.heatmap.set_state({"token": 5})  # a click on a word
    assert ex.flow.token == 5 and ex.token == 5 and ex.flow.status == "ready"
    ex.select(layer=1, head="max", token=None)
    assert ex.matrix.head == "max" and ex.flow.token is None


def test_explorer_select_is_all_or_nothing(minilm_trace):
    ex = aw.Explorer(minilm_trace)
    ex.select(layer=2, head=3, token=4)
    with pytest.raises(traitlets.TraitError):
        ex.select(layer=5, head=99)
    with pytest.raises(TypeError, match="unknown field"):
        ex.select(laye=1)
    assert ex.selection == {"layer": 2, "head": 3, "token": 4}


def test_two_explorers_share_a_selection(minilm_trace, bare):
    a, b = aw.Explorer(minilm_trace), aw.Explorer(bare)
    lk = aw.link(a, b)
    a.matrix.set_state({"layer": 4, "head": 1})
    assert b.selection["layer"] == 4 and b.heatmap.head == 1
    b.flow.set_state({"token": 2})
    assert a.heatmap.token == 2
    lk.unlink()
    a.select(layer=0)
    assert b.layer == 4


def test_explorer_target_switch_rebuilds_gradient_views(minilm, minilm_trace):
    import torch

    model, tok = minilm

    def first_dim(outputs):
        return outputs.last_hidden_state[0, 0, 0]

    other = aw.trace(model, tok, " ".join(minilm_trace.tokens[1:-1]).replace(" ##", ""), target=first_dim)
    if other.tokens != minilm_trace.tokens:
        pytest.fail(f"retokenised text differs: {other.tokens} vs {minilm_trace.tokens}")
    ex = aw.Explorer({"norm": minilm_trace, "first dim": other}, method="grad_rollout")
    ex.select(layer=2, head=1, token=3)
    before = ex.flow.routes[0]
    ex.target_picker.value = "first dim"
    assert ex.trace is other and ex.flow.trace is other
    assert ex.flow.method == "grad_rollout" and ex.flow.token == 3
    after = ex.flow.routes[0]
    assert before.n_edges != after.n_edges or not np.allclose(before.node, after.node)
    ex.matrix.set_state({"layer": 5, "head": 0})  # still linked after the rebuild
    assert ex.flow.layer == 5 and ex.summary.layer == 5
    del torch


def test_explorer_rejects_mismatched_targets(minilm_trace):
    a = np.full((6, 12, 4, 4), 0.25, dtype=np.float32)
    other = aw.AttentionTrace.from_tensors(a, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="same tokens"):
        aw.Explorer({"x": minilm_trace, "y": other})
    with pytest.raises(TypeError, match="unknown argument"):
        aw.Explorer(minilm_trace, treshold=0.1)
