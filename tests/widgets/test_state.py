"""Widget state round trips and the request/response handlers, without a browser.

The kernel side of every panel is plain Python: ``get_state()`` is what the view
receives, ``set_state()`` / ``_handle_msg`` is what it sends back, and custom messages
are answered by ``_on_custom_msg``. Values are checked against the trace itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import traitlets
from ipywidgets.widgets.widget import _remove_buffers

import attn_widgets as aw
from attn_widgets import AttentionHeatmap, AttentionMatrix, AttentionTrace
from attn_widgets._wire import maxpool2d, quantize_u8, unpack
from attn_widgets.widgets import protocol

F16 = dict(rtol=1e-3, atol=1e-7)  # float16 has an 11-bit significand: relative error <= 2**-11


def make_trace(n_layers=2, n_heads=3, n_tokens=5, seed=0, **kwargs) -> AttentionTrace:
    rng = np.random.default_rng(seed)
    a = rng.random((n_layers, n_heads, n_tokens, n_tokens)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    return AttentionTrace.from_tensors(a, [f"t{i}" for i in range(n_tokens)], **kwargs)


@pytest.fixture()
def synth():
    return make_trace()


@pytest.fixture(params=["synthetic", "minilm"])
def any_trace(request):
    if request.param == "minilm":
        return request.getfixturevalue("minilm_trace")
    return make_trace(3, 4, 7, seed=1)


class Sent:
    """Stands in for ``widget.send``: records (content, buffers) instead of using a comm."""

    def __init__(self, widget):
        self.messages: list[tuple[dict, list]] = []
        widget.send = self  # instance attribute shadows the method

    def __call__(self, content, buffers=None):
        self.messages.append((content, list(buffers or [])))

    @property
    def last(self):
        assert self.messages, "the widget sent nothing"
        return self.messages[-1]


def custom(widget, content, buffers=()):
    """Deliver a custom message the way ipywidgets does when the view calls model.send()."""
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})


def update(widget, state):
    """Deliver a state update the way the view's save_changes() does."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})


def _number_lists(obj, path=()):
    """Paths of JSON lists of numbers longer than a shape (what binary buffers replace)."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _number_lists(v, (*path, k))]
    if isinstance(obj, (list, tuple)):
        if len(obj) > 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in obj):
            return [path]
        return [p for i, v in enumerate(obj) for p in _number_lists(v, (*path, i))]
    return []


# -- get_state -------------------------------------------------------------------------------

COMMON = {"layer", "head", "token", "tokens", "special", "n_layers", "n_heads", "model_name", "causal", "error"}


def test_matrix_state_from_the_real_trace(minilm_trace):
    tr = minilm_trace
    w = AttentionMatrix(tr)
    st = w.get_state()
    assert COMMON | {"thumbs", "thumb_size", "cell_size"} <= set(st)
    assert st["tokens"] == list(tr.tokens) and st["tokens"][0] == "[CLS]" and st["tokens"][-1] == "[SEP]"
    assert st["special"] == [True] + [False] * (tr.n_tokens - 2) + [True]
    assert (st["n_layers"], st["n_heads"]) == (6, 12)
    assert st["model_name"] == tr.model_name and st["causal"] is False
    assert (st["layer"], st["head"], st["token"]) == (0, 0, None)
    # Thumbnails travel as binary buffers, never as JSON number lists.
    state, paths, buffers = _remove_buffers(st)
    assert sorted(paths) == [["thumbs", "maps", "data"], ["thumbs", "scales", "data"]]
    assert all(isinstance(b, (bytes, memoryview)) for b in buffers)
    state.pop("_esm")  # the view's source code
    assert _number_lists(state) == []
    assert len(json.dumps(state)) < 2000
    # Decoded, they are the per-head-normalised max-pooled maps of this very trace.
    maps = unpack(st["thumbs"]["maps"])
    scales = unpack(st["thumbs"]["scales"])
    assert maps.shape == (6, 12, tr.n_tokens, tr.n_tokens)  # T=13 <= 48: no pooling
    # scales: each head's colour top, the p99.5 of its nonzero weights (the default cap)
    tops = np.array([[np.percentile(m[m > 0].astype(np.float64), 99.5) for m in layer] for layer in tr.attentions])
    np.testing.assert_allclose(scales, tops, rtol=1e-6)
    np.testing.assert_array_equal(maps, quantize_u8(tr.attentions, cap=99.5)[0])
    below = np.minimum(tr.attentions, scales[..., None, None])  # above the top: saturated at 255
    np.testing.assert_allclose(maps / 255.0 * scales[..., None, None], below, atol=scales.max() / 255)


def test_matrix_thumbnails_are_pooled_to_thumb_size():
    tr = make_trace(1, 2, 40, seed=4)
    w = AttentionMatrix(tr, thumb_size=8)
    maps = unpack(w.thumbs["maps"])
    assert maps.shape == (1, 2, 8, 8)
    np.testing.assert_array_equal(maps, quantize_u8(maxpool2d(tr.attentions, 8), cap=w.cap)[0])


@pytest.mark.parametrize("size", [3, 257])
def test_matrix_rejects_thumb_size_out_of_range(synth, size):
    with pytest.raises(ValueError, match=rf"thumb_size: expected 4 <= thumb_size <= 256, received {size}"):
        AttentionMatrix(synth, thumb_size=size)


def test_heatmap_state_carries_the_selected_map_as_float16_bytes(any_trace):
    tr = any_trace
    w = AttentionHeatmap(tr, layer=tr.n_layers - 1, head=2)
    st = w.get_state()
    assert COMMON | {"direction", "initial_map", "preloaded", "size"} <= set(st)
    init = st["initial_map"]
    assert (init["layer"], init["head"], init["dtype"], init["shape"]) == (
        tr.n_layers - 1, 2, "float16", [tr.n_tokens, tr.n_tokens])
    assert isinstance(init["data"], bytes) and len(init["data"]) == 2 * tr.n_tokens**2
    state, paths, _ = _remove_buffers(st)
    # and the heads' maxima (float32 [L, H], for the shared colour scales)
    assert sorted(paths) == [["head_max", "data"], ["initial_map", "data"]]
    assert st["head_max"]["shape"] == [tr.n_layers, tr.n_heads] and st["head_max"]["dtype"] == "float32"
    assert _number_lists(state) == []
    np.testing.assert_allclose(unpack(init).astype(np.float32), tr.head_map(tr.n_layers - 1, 2), **F16)
    # Not some other head's map.
    assert not np.allclose(unpack(init), tr.head_map(0, 0), **F16)


@pytest.mark.parametrize("agg, fn", [("mean", np.mean), ("max", np.max)])
def test_heatmap_aggregate_heads(any_trace, agg, fn):
    tr = any_trace
    w = AttentionHeatmap(tr, layer=1, head=agg)
    assert w.head == agg and w.get_state()["head"] == agg
    expected = fn(tr.attentions[1], axis=0)
    np.testing.assert_allclose(w.head_map(), expected, rtol=1e-6)
    np.testing.assert_allclose(unpack(w.initial_map).astype(np.float32), expected, **F16)
    assert w.initial_map["head"] == agg


def test_heatmap_strip_values_follow_direction(synth):
    w = AttentionHeatmap(synth, layer=1, head=2)
    assert w.strip_values() is None
    w.token = 3
    np.testing.assert_array_equal(w.strip_values(), synth.attentions[1, 2, 3, :])
    assert w.strip_values().sum() == pytest.approx(1.0, abs=1e-5)
    w.direction = "to"
    np.testing.assert_array_equal(w.strip_values(), synth.attentions[1, 2, :, 3])
    with pytest.raises(traitlets.TraitError):
        w.direction = "sideways"
    assert w.direction == "to"


# -- set_state / trait assignment ----------------------------------------------------------


@pytest.mark.parametrize("cls", [AttentionMatrix, AttentionHeatmap])
def test_trait_assignment_round_trips_through_state(any_trace, cls):
    w = cls(any_trace)
    w.layer, w.head, w.token = 2, 3, 4
    st = w.get_state(["layer", "head", "token"])
    assert st == {"layer": 2, "head": 3, "token": 4}
    w.head = "max"
    w.token = None
    assert w.get_state(["head", "token"]) == {"head": "max", "token": None}
    assert w.selection == {"layer": 2, "head": "max", "token": None}


@pytest.mark.parametrize("cls", [AttentionMatrix, AttentionHeatmap])
def test_set_state_from_the_view_round_trips(any_trace, cls):
    w = cls(any_trace)
    update(w, {"layer": 1, "head": 2, "token": 0})
    assert (w.layer, w.head, w.token) == (1, 2, 0)
    update(w, {"head": "mean", "token": None})
    assert w.get_state(["layer", "head", "token"]) == {"layer": 1, "head": "mean", "token": None}
    # The whole state of one panel restores another panel of the same trace.
    other = cls(any_trace)
    sel = w.get_state(["layer", "head", "token"])
    other.set_state(sel)
    assert other.selection == w.selection


def test_heatmap_view_traits_round_trip(synth):
    w = AttentionHeatmap(synth, direction="to", size=300)
    assert w.get_state(["direction", "size"]) == {"direction": "to", "size": 300}
    update(w, {"direction": "from", "size": 0})
    assert (w.direction, w.size) == ("from", 0)


BAD = [
    ("layer", -1, r"layer: expected an int with 0 <= layer < {L}, received -1"),
    ("layer", "{L}", r"layer: expected an int with 0 <= layer < {L}, received {L}"),
    ("layer", False, r"layer: expected an int with 0 <= layer < {L}, received False"),
    ("head", "{H}", r"head: expected 0 <= head < {H}, 'mean' or 'max', received {H}"),
    ("head", -1, r"head: expected 0 <= head < {H}, 'mean' or 'max', received -1"),
    ("head", "sum", r"head: expected an int or one of \('mean', 'max'\), received 'sum'"),
    ("head", False, r"head: expected 0 <= head < {H}, 'mean' or 'max', received False"),
    ("token", "{T}", r"token: expected None or 0 <= token < {T}, received {T}"),
    ("token", -1, r"token: expected None or 0 <= token < {T}, received -1"),
]


def _fill(v, tr):
    if isinstance(v, str) and v.startswith("{"):
        return int(v.format(L=tr.n_layers, H=tr.n_heads, T=tr.n_tokens))
    return v


@pytest.mark.parametrize("cls", [AttentionMatrix, AttentionHeatmap])
@pytest.mark.parametrize("name, value, match", BAD)
def test_invalid_selection_is_a_clear_error_and_keeps_the_old_value(any_trace, cls, name, value, match):
    tr = any_trace
    value = _fill(value, tr)
    match = match.format(L=tr.n_layers, H=tr.n_heads, T=tr.n_tokens)
    w = cls(tr, layer=1, head=1, token=2)
    before = w.selection
    with pytest.raises(traitlets.TraitError, match=match):
        setattr(w, name, value)
    assert w.selection == before
    with pytest.raises(traitlets.TraitError, match=match):
        w.set_state({name: value})
    assert w.selection == before
    with pytest.raises(traitlets.TraitError, match=match):
        w.select(**{name: value})
    assert w.selection == before
    with pytest.raises(traitlets.TraitError, match=match):
        cls(tr, **{name: value})


def test_wrong_type_selection_is_rejected(synth):
    w = AttentionMatrix(synth)
    with pytest.raises(traitlets.TraitError, match="layer"):
        w.layer = "1"
    with pytest.raises(traitlets.TraitError, match="token"):
        w.token = 1.5
    assert w.selection == {"layer": 0, "head": 0, "token": None}


def test_set_state_with_one_bad_field_changes_nothing(synth):
    w = AttentionHeatmap(synth)
    with pytest.raises(traitlets.TraitError, match="head"):
        w.set_state({"layer": 1, "head": 99, "token": 2})
    assert w.selection == {"layer": 0, "head": 0, "token": None}


def test_select_is_atomic(synth):
    w = AttentionHeatmap(synth)
    seen = []
    w.observe(lambda ch: seen.append(ch["name"]), names=["layer", "head", "token"])
    assert w.select(layer=1, head="mean", token=4) is w
    assert w.selection == {"layer": 1, "head": "mean", "token": 4}
    assert sorted(seen) == ["head", "layer", "token"]
    with pytest.raises(traitlets.TraitError, match="token"):
        w.select(layer=0, token=5)
    assert w.selection == {"layer": 1, "head": "mean", "token": 4}
    with pytest.raises(TypeError, match=r"select: unknown field\(s\) \['heads'\]"):
        w.select(heads=1)


@pytest.mark.parametrize("cls", [AttentionMatrix, AttentionHeatmap])
def test_unknown_kwarg_is_a_type_error_naming_it(synth, cls):
    with pytest.raises(TypeError, match=rf"{cls.__name__}: unknown argument\(s\) \['lyaer'\]; expected some of"):
        cls(synth, lyaer=1)
    # Traits fixed by the trace, and those the kernel computes, are not arguments either.
    for name in ["n_layers", "tokens", "error"]:
        with pytest.raises(TypeError, match=rf"unknown argument\(s\) \['{name}'\]"):
            cls(synth, **{name: 1})


def test_computed_traits_are_not_arguments(synth):
    with pytest.raises(TypeError, match=r"\['thumbs'\]"):
        AttentionMatrix(synth, thumbs={})
    with pytest.raises(TypeError, match=r"\['initial_map'\]"):
        AttentionHeatmap(synth, initial_map={})
    # The panel-specific arguments are accepted.
    assert AttentionMatrix(synth, cell_size=20, thumb_size=16, layout={"width": "400px"}).cell_size == 20
    assert AttentionHeatmap(synth, direction="to", size=200).direction == "to"


def test_constructor_needs_a_trace():
    with pytest.raises(TypeError, match=r"trace: expected an AttentionTrace .*received ndarray"):
        AttentionMatrix(np.zeros((1, 1, 2, 2)))


def test_trace_is_exposed_read_only(synth):
    w = AttentionMatrix(synth)
    assert w.trace is synth
    with pytest.raises(AttributeError):
        w.trace = make_trace()


# -- custom messages (the view asking for data) -----------------------------------------------


def test_get_map_returns_the_requested_head_of_the_real_trace(minilm_trace):
    tr = minilm_trace
    w = AttentionHeatmap(tr)
    sent = Sent(w)
    for layer, head in [(0, 0), (2, 7), (5, 11), (3, "mean"), (4, "max")]:
        custom(w, {"type": "get_map", "id": f"r-{layer}-{head}", "layer": layer, "head": head})
        reply, buffers = sent.last
        assert reply == {"type": "map", "id": f"r-{layer}-{head}", "dtype": "float16",
                         "shape": [tr.n_tokens, tr.n_tokens], "layer": layer, "head": head}
        assert len(buffers) == 1 and len(buffers[0]) == 2 * tr.n_tokens**2
        got = unpack({**reply, "data": buffers[0]}).astype(np.float32)
        np.testing.assert_allclose(got, tr.head_map(layer, head), **F16)
        if head != "max":  # rows of a head, and of the mean of heads, still sum to 1 in float16
            np.testing.assert_allclose(got.sum(-1), 1.0, atol=5e-3)
    assert len(sent.messages) == 5


def test_every_head_is_distinct_on_the_wire(synth):
    w = AttentionHeatmap(synth)
    sent = Sent(w)
    maps = {}
    for layer in range(synth.n_layers):
        for head in range(synth.n_heads):
            custom(w, {"type": "get_map", "id": 1, "layer": layer, "head": head})
            reply, buffers = sent.last
            maps[layer, head] = unpack({**reply, "data": buffers[0]})
            np.testing.assert_allclose(maps[layer, head].astype(np.float32), synth.attentions[layer, head], **F16)
    assert len({m.tobytes() for m in maps.values()}) == synth.n_layers * synth.n_heads


def test_get_map_accepts_json_shaped_numbers(synth):
    w = AttentionHeatmap(synth)
    sent = Sent(w)
    custom(w, {"type": "get_map", "id": "x", "layer": 1.0, "head": 2.0})
    reply, buffers = sent.last
    assert (reply["type"], reply["layer"], reply["head"]) == ("map", 1, 2)
    np.testing.assert_allclose(unpack({**reply, "data": buffers[0]}).astype(np.float32), synth.attentions[1, 2], **F16)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"type": "get_map", "layer": 2, "head": 0}, "ValueError: layer: expected 0 <= layer < 2, received 2"),
        ({"type": "get_map", "layer": -1, "head": 0}, "ValueError: layer: expected 0 <= layer < 2, received -1"),
        ({"type": "get_map", "layer": 0, "head": 3}, "ValueError: head: expected 0 <= head < 3, received 3"),
        ({"type": "get_map", "layer": 0, "head": "sum"}, "TypeError: head: expected an int, 'mean' or 'max'"),
        ({"type": "get_map", "head": 0}, "ValueError: get_map: missing field(s) ['layer']"),
        ({"type": "get_everything", "layer": 0, "head": 0}, "unknown request 'get_everything'"),
        ({"layer": 0}, "unknown request None"),
    ],
)
def test_bad_requests_get_an_error_reply_with_the_same_id(synth, content, message, caplog):
    w = AttentionHeatmap(synth)
    sent = Sent(w)
    custom(w, {**content, "id": "r42"})
    assert len(sent.messages) == 1
    reply, buffers = sent.last
    assert reply["type"] == "error" and reply["id"] == "r42"
    assert reply["message"].startswith(message)
    assert buffers == []
    # The comm survives: the next good request is answered.
    custom(w, {"type": "get_map", "id": "r43", "layer": 0, "head": 0})
    assert sent.last[0]["type"] == "map" and sent.last[0]["id"] == "r43"


def test_non_dict_messages_are_ignored(synth):
    w = AttentionHeatmap(synth)
    sent = Sent(w)
    custom(w, "get_map")
    custom(w, ["get_map", 0, 0])
    assert sent.messages == []


def test_matrix_has_no_data_requests(synth):
    w = AttentionMatrix(synth)
    sent = Sent(w)
    custom(w, {"type": "get_map", "id": 7, "layer": 0, "head": 0})
    assert sent.last == ({"type": "error", "id": 7, "message": "unknown request 'get_map'"}, [])


def test_reply_over_the_message_cap_is_an_error_not_a_dropped_message(synth, monkeypatch):
    w = AttentionHeatmap(synth)
    sent = Sent(w)
    n = 2 * synth.n_tokens**2
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", n - 1)
    custom(w, {"type": "get_map", "id": "big", "layer": 0, "head": 0})
    assert sent.last == ({"type": "error", "id": "big", "message": f"reply of {n} bytes is over the cap"}, [])
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", n)
    custom(w, {"type": "get_map", "id": "ok", "layer": 0, "head": 0})
    assert sent.last[0]["type"] == "map"


def test_array_over_the_pack_cap_is_reported_to_the_view(synth, monkeypatch):
    from attn_widgets import _wire

    w = AttentionHeatmap(synth)
    sent = Sent(w)
    monkeypatch.setattr(_wire, "MAX_MESSAGE_BYTES", 10)
    custom(w, {"type": "get_map", "id": "big", "layer": 0, "head": 0})
    reply, buffers = sent.last
    assert reply["type"] == "error" and reply["id"] == "big" and buffers == []
    assert "ValueError: arr:" in reply["message"] and "per-message cap" in reply["message"]


def test_a_custom_handler_is_called_with_the_message_content(synth):
    w = AttentionHeatmap(synth)
    sent = Sent(w)
    calls = []

    def handler(content):
        calls.append(content)
        return {"type": "echo", "n": content["n"]}, [b"\x01\x02"]

    w._handlers["echo"] = handler
    custom(w, {"type": "echo", "id": 5, "n": 3})
    assert calls == [{"type": "echo", "id": 5, "n": 3}]
    assert sent.last == ({"type": "echo", "n": 3, "id": 5}, [b"\x01\x02"])


def test_top_level_names_are_the_widget_classes():
    assert aw.AttentionMatrix is AttentionMatrix and aw.AttentionHeatmap is AttentionHeatmap
