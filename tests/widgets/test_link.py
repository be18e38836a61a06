"""aw.link: one selection across panels, traces and widget kinds (kernel side)."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets import AttentionHeatmap, AttentionMatrix, AttentionTrace, SelectionLink


def make_trace(n_layers=3, n_heads=4, n_tokens=6, seed=0) -> AttentionTrace:
    rng = np.random.default_rng(seed)
    a = rng.random((n_layers, n_heads, n_tokens, n_tokens)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    return AttentionTrace.from_tensors(a, [f"w{i}" for i in range(n_tokens)], model_name=f"m{seed}")


@pytest.fixture()
def base():
    return make_trace(seed=0)


@pytest.fixture()
def tuned():
    """Same shape as ``base``, different weights (e.g. a fine-tuned model)."""
    return make_trace(seed=1)


def selections(*widgets):
    return [w.selection for w in widgets]


def test_link_two_panels_both_ways(base):
    m, h = AttentionMatrix(base), AttentionHeatmap(base)
    lk = aw.link(m, h)
    assert isinstance(lk, SelectionLink) and lk.active
    assert lk.widgets == [m, h] and lk.names == ("layer", "head", "token")
    m.layer = 2
    m.head = 3
    assert h.selection == {"layer": 2, "head": 3, "token": None}
    h.token = 4
    h.head = "mean"
    assert m.selection == {"layer": 2, "head": "mean", "token": 4}
    # What the heatmap shows follows the matrix click.
    m.head = 1
    np.testing.assert_array_equal(h.head_map(), base.attentions[2, 1])


def test_first_panel_wins_at_link_time(base):
    m = AttentionMatrix(base, layer=2, head=1, token=5)
    h = AttentionHeatmap(base, layer=0, head="max", token=None)
    aw.link(m, h)
    assert h.selection == {"layer": 2, "head": 1, "token": 5}
    assert m.selection == {"layer": 2, "head": 1, "token": 5}


def test_link_three_panels_across_two_traces(base, tuned):
    m = AttentionMatrix(base)
    h1 = AttentionHeatmap(base)
    h2 = AttentionHeatmap(tuned)
    aw.link(m, h1, h2)
    for source, (layer, head, token) in [(m, (1, 2, 3)), (h1, (2, 0, 0)), (h2, (0, 3, 5)), (m, (2, "max", None))]:
        source.select(layer=layer, head=head, token=token)
        want = {"layer": layer, "head": head, "token": token}
        assert selections(m, h1, h2) == [want] * 3, f"set from {source!r}"
    # Same selection, each panel shows its own trace.
    h1.select(layer=1, head=2)
    np.testing.assert_array_equal(h1.head_map(), base.attentions[1, 2])
    np.testing.assert_array_equal(h2.head_map(), tuned.attentions[1, 2])
    assert not np.allclose(h1.head_map(), h2.head_map())


def test_set_state_from_a_view_propagates(base, tuned):
    """A click in one panel's view arrives as set_state and moves the other panels."""
    m, h = AttentionMatrix(base), AttentionHeatmap(tuned)
    aw.link(m, h)
    m.set_state({"layer": 1, "head": 3})
    assert h.selection == {"layer": 1, "head": 3, "token": None}
    h.set_state({"token": 2})
    assert m.token == 2


def test_lists_of_panels_are_flattened(base):
    a, b, c = AttentionHeatmap(base), AttentionHeatmap(base), AttentionMatrix(base)
    lk = aw.link([a, b], c)
    assert lk.widgets == [a, b, c]
    c.layer = 2
    assert (a.layer, b.layer) == (2, 2)


def test_unlink_stops_propagation(base, tuned):
    m, h1, h2 = AttentionMatrix(base), AttentionHeatmap(base), AttentionHeatmap(tuned)
    lk = aw.link(m, h1, h2)
    m.layer = 1
    lk.unlink()
    assert not lk.active
    assert "active=False" in repr(lk)
    m.layer = 2
    h2.head = 3
    h1.token = 0
    assert selections(m, h1, h2) == [
        {"layer": 2, "head": 0, "token": None},
        {"layer": 1, "head": 0, "token": 0},
        {"layer": 1, "head": 3, "token": None},
    ]
    lk.unlink()  # idempotent
    assert not lk.active


def test_two_independent_links(base):
    a, b = AttentionHeatmap(base), AttentionMatrix(base)
    c, d = AttentionHeatmap(base), AttentionMatrix(base)
    ab, _cd = aw.link(a, b), aw.link(c, d)
    a.layer = 2
    assert (b.layer, c.layer, d.layer) == (2, 0, 0)
    ab.unlink()
    c.layer = 1
    assert d.layer == 1 and a.layer == 2


def test_names_limits_what_is_linked(base):
    m, h = AttentionMatrix(base), AttentionHeatmap(base)
    lk = aw.link(m, h, names=["layer"])
    assert lk.names == ("layer",)
    m.select(layer=2, head=3, token=1)
    assert h.selection == {"layer": 2, "head": 0, "token": None}


def test_invalid_value_on_a_linked_panel_changes_no_panel(base, tuned):
    m, h = AttentionMatrix(base), AttentionHeatmap(tuned)
    aw.link(m, h)
    m.select(layer=1, head=1, token=1)
    with pytest.raises(traitlets.TraitError, match=r"layer: expected an int with 0 <= layer < 3, received 3"):
        h.layer = 3
    with pytest.raises(traitlets.TraitError, match=r"token"):
        m.token = 6
    assert selections(m, h) == [{"layer": 1, "head": 1, "token": 1}] * 2


@pytest.mark.parametrize(
    "shape_b, name, bound",
    [((4, 4, 6), "layer", "n_layers"), ((3, 2, 6), "head", "n_heads"), ((3, 4, 9), "token", "tokens")],
)
def test_traces_with_different_ranges_refuse_to_link_that_name(base, shape_b, name, bound):
    other = make_trace(*shape_b, seed=2)
    m, h = AttentionMatrix(base), AttentionHeatmap(other)
    with pytest.raises(ValueError) as exc:
        aw.link(m, h)
    msg = str(exc.value)
    assert f"cannot link {name!r} between panels with different {bound}" in msg
    want = {"n_layers": (3, shape_b[0]), "n_heads": (4, shape_b[1]), "tokens": (6, shape_b[2])}[bound]
    assert f"AttentionMatrix #0: {want[0]}" in msg and f"AttentionHeatmap #1: {want[1]}" in msg
    assert "pass names=" in msg
    # Nothing was linked by the failed call.
    m.layer = 2
    assert h.layer == 0
    # The names that agree can still be linked.
    rest = tuple(n for n in ("layer", "head", "token") if n != name)
    lk = aw.link(m, h, names=rest)
    assert lk.names == rest
    m.select(layer=1, head=1, token=1)
    for n in rest:
        assert getattr(h, n) == 1
    assert getattr(h, name) == (None if name == "token" else 0)


def test_different_n_layers_with_the_real_trace(minilm_trace):
    small = make_trace(2, 12, minilm_trace.n_tokens)
    with pytest.raises(ValueError, match=r"cannot link 'layer' between panels with different n_layers"):
        aw.link(AttentionMatrix(minilm_trace), AttentionHeatmap(small))
    m, h = AttentionMatrix(minilm_trace), AttentionHeatmap(small)
    aw.link(m, h, names=("head", "token"))
    m.select(layer=5, head=11, token=12)
    assert h.selection == {"layer": 0, "head": 11, "token": 12}


def test_link_argument_errors(base):
    m, h = AttentionMatrix(base), AttentionHeatmap(base)
    with pytest.raises(ValueError, match=r"names: expected some of \('layer', 'head', 'token'\), received \['heads'\]"):
        aw.link(m, h, names=("heads",))
    with pytest.raises(ValueError, match=r"link: expected at least two widgets, received 1"):
        aw.link(m)
    with pytest.raises(ValueError, match=r"received 0"):
        aw.link()
    with pytest.raises(TypeError, match=r"link: IntSlider has no selection traits"):
        import ipywidgets

        aw.link(m, ipywidgets.IntSlider())
    with pytest.raises(TypeError, match=r"link: str has no selection traits"):
        aw.link(m, "heatmap")


def test_link_with_a_plain_traitlets_object_having_one_name(base):
    """Each name is linked among the panels that have it (e.g. a token picker)."""

    class TokenPicker(traitlets.HasTraits):
        token = traitlets.Int(None, allow_none=True)

    m, h, picker = AttentionMatrix(base), AttentionHeatmap(base), TokenPicker()
    aw.link(m, h, picker)
    picker.token = 3
    assert m.token == 3 and h.token == 3
    m.layer = 2
    assert h.layer == 2


def test_click_reaches_linked_views_as_one_update(minilm_trace, monkeypatch):
    """A click that sets layer and head in one view must reach each linked view as one
    state update (one redraw, one map fetch), not one message per trait."""
    from attn_widgets import AttentionHeatmap, AttentionMatrix, link

    m, h = AttentionMatrix(minilm_trace), AttentionHeatmap(minilm_trace)
    link(m, h)
    sent = []
    monkeypatch.setattr(h, "_send", lambda msg, buffers=None: sent.append(msg))
    m.set_state({"layer": 4, "head": 5})  # what the comm does with the view's update
    updates = [msg["state"] for msg in sent if msg.get("method") == "update"]
    assert (h.layer, h.head) == (4, 5)
    assert updates == [{"layer": 4, "head": 5}]


def test_linked_head_click_pushes_the_map_before_the_update(minilm_trace, monkeypatch):
    """The heatmap sends the newly selected map ahead of the selection update, once, so its
    view draws without a request round trip; its own view's clicks push nothing."""
    import numpy as np

    from attn_widgets import AttentionHeatmap, AttentionMatrix, link
    from attn_widgets._wire import unpack

    m, h = AttentionMatrix(minilm_trace), AttentionHeatmap(minilm_trace)
    link(m, h)
    sent = []
    monkeypatch.setattr(h, "_send", lambda msg, buffers=None: sent.append((msg, buffers)))
    m.set_state({"layer": 3, "head": 2})
    kinds = [msg.get("method") for msg, _ in sent]
    assert kinds == ["custom", "update"]
    pushed, buffers = sent[0]
    content = pushed["content"]
    assert content["type"] == "map" and content["push"] and (content["layer"], content["head"]) == (3, 2)
    got = unpack({"dtype": content["dtype"], "shape": content["shape"], "data": bytes(buffers[0])})
    np.testing.assert_allclose(got, minilm_trace.attentions[3, 2], atol=1e-3)
    sent.clear()
    h._on_custom_msg(h, {"type": "map_ack", "seq": content["seq"]}, [])  # the view got it
    m.set_state({"layer": 1, "head": 1})  # new: pushed
    h._on_custom_msg(h, {"type": "map_ack", "seq": sent[-2][0]["content"]["seq"]}, [])
    m.set_state({"layer": 3, "head": 2})  # pushed recently: not sent again
    assert sum(1 for msg, _ in sent if msg.get("method") == "custom") == 1
    sent.clear()
    h.set_state({"head": 5})  # a click in the heatmap's own view: it fetches what it needs
    assert [msg.get("method") for msg, _ in sent if msg.get("method") != "echo_update"] == []


def test_a_burst_of_changes_keeps_one_push_in_flight_and_sends_only_the_newest(minilm_trace, monkeypatch):
    """Backpressure: 1000 changes from Python without the view acknowledging send one map;
    the ack sends the newest selection's map (none for heads selected meanwhile)."""
    from attn_widgets import AttentionHeatmap

    h = AttentionHeatmap(minilm_trace)
    sent = []
    monkeypatch.setattr(h, "_send", lambda msg, buffers=None: sent.append((msg, buffers)))
    pushes = lambda: [m["content"] for m, _ in sent if m.get("method") == "custom"]  # noqa: E731
    h._on_custom_msg(h, {"type": "map_ack", "seq": None}, [])  # the view started
    assert (h.layer, h.head) == (0, 0)
    for i in range(1, 1001):
        h.layer, h.head = (i // 12) % 6, i % 12
    assert [(p["layer"], p["head"]) for p in pushes()] == [(0, 1)]  # the first change only
    first = pushes()[0]
    h._on_custom_msg(h, {"type": "map_ack", "seq": first["seq"] + 5}, [])  # not the one in flight
    assert len(pushes()) == 1
    h._on_custom_msg(h, {"type": "map_ack", "seq": first["seq"]}, [])
    assert [(p["layer"], p["head"]) for p in pushes()] == [(0, 1), (h.layer, h.head)]
    assert (h.layer, h.head) == (1000 // 12 % 6, 1000 % 12)
    h._on_custom_msg(h, {"type": "map_ack", "seq": pushes()[-1]["seq"]}, [])
    assert len(pushes()) == 2  # nothing wanted: nothing more sent
    h.head = 11 if h.head != 11 else 10  # idle again: the next change is pushed at once
    assert len(pushes()) == 3 and pushes()[-1]["head"] == h.head
    # A map the view requested is not pushed again.
    sent.clear()
    h._on_custom_msg(h, {"type": "map_ack", "seq": None}, [])
    h._on_custom_msg(h, {"type": "get_map", "id": "r1", "layer": 5, "head": 6}, [])
    h.select(layer=5, head=6)
    assert [p["type"] for p in pushes()] == ["map"] and pushes()[0]["id"] == "r1"
