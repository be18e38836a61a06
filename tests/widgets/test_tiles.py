"""Long contexts on the kernel side: the heatmap's overview, zoom and get_tile handler, and
the matrix's progressive thumbnails for a LazyTrace (no browser)."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

from attn_widgets import AttentionHeatmap, AttentionMatrix, AttentionTrace, LazyTrace
from attn_widgets._wire import MAX_MESSAGE_BYTES, maxpool2d, quantize_u8, unpack
from attn_widgets.lazy import pool_blocks
from attn_widgets.widgets import matrix as matrix_mod

from .test_state import F16, Sent, custom, make_trace


def lazy_trace(L=2, H=3, t=40, d=8, seed=0, causal=True) -> LazyTrace:
    rng = np.random.default_rng(seed)
    return LazyTrace(
        [f"w{i}" for i in range(t)],
        rng.standard_normal((L, H, t, d)) * 1.5,
        rng.standard_normal((L, H, t, d)),
        causal=causal,
    )


@pytest.fixture(params=["attention", "lazy"])
def any_trace(request):
    lt = lazy_trace(t=40)
    return lt.materialize() if request.param == "attention" else lt


def tile_request(w, **fields):
    sent = Sent(w)
    custom(w, {"type": "get_tile", "id": "t1", **fields})
    reply, buffers = sent.last
    return reply, buffers


# -- get_tile ------------------------------------------------------------------------------------
def test_get_tile_is_the_exact_region(any_trace):
    w = AttentionHeatmap(any_trace)
    for head in (1, "mean", "max"):
        reply, buffers = tile_request(w, layer=1, head=head, r0=5, r1=17, c0=2, c1=39)
        assert reply["type"] == "tile" and reply["id"] == "t1"
        assert (reply["layer"], reply["head"], reply["step"]) == (1, head, 1)
        assert (reply["r0"], reply["r1"], reply["c0"], reply["c1"]) == (5, 17, 2, 39)
        got = unpack({**reply, "data": buffers[0]}).astype(np.float32)
        assert got.shape == (12, 37)
        np.testing.assert_allclose(got, any_trace.head_map(1, head)[5:17, 2:39], **F16)


def test_large_regions_are_max_pooled_under_the_cap(any_trace):
    w = AttentionHeatmap(any_trace, overview_size=16)
    # 1 x 40: 40 <= 16^2 cells: a strip row is sent exactly.
    reply, buffers = tile_request(w, layer=0, head=2, r0=7, r1=8, c0=0, c1=40)
    assert reply["step"] == 1 and reply["shape"] == [1, 40]
    # 40 x 40 > 256 cells: pooled by ceil(40 / 16) = 3 from the region's corner.
    reply, buffers = tile_request(w, layer=0, head=2, r0=0, r1=40, c0=0, c1=40)
    assert reply["step"] == 3 and reply["shape"] == [14, 14]
    got = unpack({**reply, "data": buffers[0]}).astype(np.float32)
    np.testing.assert_allclose(got, pool_blocks(any_trace.head_map(0, 2), 3), **F16)
    assert len(buffers[0]) <= MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(layer=0, head=0, r0=5, r1=5, c0=0, c1=3), "ValueError: rows: expected 0 <= r0 < r1 <= 40, received r0=5, r1=5"),
        (dict(layer=0, head=0, r0=0, r1=41, c0=0, c1=3), "ValueError: rows: expected 0 <= r0 < r1 <= 40"),
        (dict(layer=0, head=0, r0=0, r1=3, c0=-1, c1=3), "ValueError: cols: expected 0 <= c0 < c1 <= 40"),
        (dict(layer=0, head=0, r0=0, r1=3, c0=9, c1=2), "ValueError: cols: expected"),
        (dict(layer=0, head=0, r0=0.5, r1=3, c0=0, c1=3), "TypeError: r0: expected an int, received 0.5"),
        (dict(layer=0, head=0, r0="0", r1=3, c0=0, c1=3), "TypeError: r0: expected an int"),
        (dict(layer=0, head=0, r0=True, r1=3, c0=0, c1=3), "TypeError: r0: expected an int"),
        (dict(layer=2, head=0, r0=0, r1=3, c0=0, c1=3), "ValueError: layer: expected 0 <= layer < 2, received 2"),
        (dict(layer=0, head=3, r0=0, r1=3, c0=0, c1=3), "ValueError: head: expected 0 <= head < 3, received 3"),
        (dict(layer=0, head="sum", r0=0, r1=3, c0=0, c1=3), "TypeError: head: expected an int, 'mean' or 'max'"),
        (dict(layer=0, head=0, r0=0, r1=3), "ValueError: get_tile: missing field(s) ['c0', 'c1']"),
    ],
)
def test_bad_tile_requests_get_an_error_reply(any_trace, fields, message):
    w = AttentionHeatmap(any_trace)
    reply, buffers = tile_request(w, **fields)
    assert reply["type"] == "error" and reply["id"] == "t1" and buffers == []
    assert reply["message"].startswith(message), reply["message"]


def test_json_shaped_numbers_are_accepted(any_trace):
    w = AttentionHeatmap(any_trace)
    reply, _ = tile_request(w, layer=1.0, head=2.0, r0=0.0, r1=2, c0=3, c1=4.0)
    assert reply["type"] == "tile" and (reply["layer"], reply["head"], reply["c1"]) == (1, 2, 4)


# -- overview and zoom --------------------------------------------------------------------------
def test_small_maps_are_sent_whole_as_before():
    tr = make_trace(2, 3, 30)
    w = AttentionHeatmap(tr)
    assert "step" not in w.initial_map and w.initial_map["shape"] == [30, 30]
    assert w.map_step() == 1


def test_long_maps_are_sent_as_a_max_pooled_overview(any_trace):
    w = AttentionHeatmap(any_trace, overview_size=16, layer=1, head=2)
    assert w.map_step() == 3
    init = w.initial_map
    assert init["step"] == 3 and init["shape"] == [14, 14] and (init["layer"], init["head"]) == (1, 2)
    got = unpack(init).astype(np.float32)
    np.testing.assert_allclose(got, maxpool2d(any_trace.head_map(1, 2), 16), **F16)
    sent = Sent(w)
    custom(w, {"type": "get_map", "id": 4, "layer": 0, "head": "mean"})
    reply, buffers = sent.last
    assert reply["step"] == 3 and reply["shape"] == [14, 14]
    np.testing.assert_allclose(
        unpack({**reply, "data": buffers[0]}).astype(np.float32), maxpool2d(any_trace.head_map(0, "mean"), 16), **F16
    )


def test_strip_values_are_exact_even_when_the_map_is_pooled(any_trace):
    w = AttentionHeatmap(any_trace, overview_size=16, layer=1, head=0, token=9)
    full = any_trace.head_map(1, 0)
    np.testing.assert_allclose(w.strip_values(), full[9], atol=1e-6)
    w.direction = "to"
    np.testing.assert_allclose(w.strip_values(), full[:, 9], atol=1e-6)
    np.testing.assert_allclose(w.tile(2, 5, 7, 30), full[2:5, 7:30], atol=1e-6)


def test_zoom_trait_is_validated(any_trace):
    w = AttentionHeatmap(any_trace)
    w.zoom = [2, 10, 5, 40]
    assert w.zoom == [2, 10, 5, 40]
    w.zoom = []
    for bad in ([1, 2, 3], [5, 5, 0, 3], [0, 41, 0, 3], [0, 3, 3, 2], [0.5, 3, 0, 3]):
        with pytest.raises(traitlets.TraitError, match="zoom"):
            w.zoom = bad
    assert w.zoom == []
    with pytest.raises(ValueError, match="overview_size: expected"):
        AttentionHeatmap(any_trace, overview_size=4)


# -- the matrix of a LazyTrace -------------------------------------------------------------------
def test_cheap_lazy_thumbnails_are_exact_at_once():
    lt = lazy_trace(t=40)
    w = AttentionMatrix(lt, thumb_size=16)
    assert w.thumbs_pending == 0 and w.wait_thumbnails(0)
    maps = unpack(w.thumbs["maps"])
    np.testing.assert_array_equal(unpack(w.thumbs["pending"]), 0)
    exact = quantize_u8(lt.thumbnails(16), cap=w.cap)[0]
    assert np.abs(maps.astype(int) - exact.astype(int)).max() <= 1  # uint8 rounding
    assert w.thumbs["note"] == ""


def test_expensive_lazy_thumbnails_start_as_a_labelled_preview(monkeypatch):
    monkeypatch.setattr(matrix_mod, "SYNC_THUMB_COST", 0)
    lt = lazy_trace(L=3, H=2, t=64)
    chunks = []

    class Recorder(AttentionMatrix):
        def send(self, content, buffers=None):  # class level: the worker may start sending at once
            chunks.append((content, list(buffers or [])))

    w = Recorder(lt, thumb_size=8)
    first = w.thumbs
    assert "preview" in first["note"] and "sampled" in first["note"]
    preview, _info = lt.preview_thumbnails(8)
    np.testing.assert_array_equal(unpack(first["maps"]), quantize_u8(preview, cap=w.cap)[0])
    assert w.wait_thumbnails(30), "exact thumbnails never finished"
    assert w.thumbs_pending == 0
    exact = quantize_u8(lt.thumbnails(8), cap=w.cap)[0]
    assert np.abs(unpack(w.thumbs["maps"]).astype(int) - exact.astype(int)).max() <= 1
    np.testing.assert_array_equal(unpack(w.thumbs["pending"]), 0)
    assert w.thumbs["note"] == ""
    # One chunk per layer, the selected layer (0) first, each the exact uint8 thumbnails.
    layers = [c["layer0"] for c, _ in chunks if c.get("type") == "thumbs_chunk"]
    assert sorted(layers) == [0, 1, 2] and layers[0] == 0
    for content, buffers in chunks:
        q = np.frombuffer(buffers[0], np.uint8).reshape(content["shape"])
        assert np.abs(q.astype(int) - exact[content["layer0"] : content["layer1"]].astype(int)).max() <= 1
    # A view opening late asks for the state so far.
    sent = Sent(w)
    custom(w, {"type": "get_thumbs", "id": "g"})
    reply, buffers = sent.last
    assert reply["type"] == "thumbs" and reply["shape"] == [3, 2, 8, 8] and len(buffers) == 3
    np.testing.assert_array_equal(np.frombuffer(buffers[2], np.uint8), 0)


def test_lazy_thumbnail_errors_reach_the_panel(monkeypatch):
    monkeypatch.setattr(matrix_mod, "SYNC_THUMB_COST", 0)
    lt = lazy_trace(L=2, H=2, t=64)

    def boom(*_a, **_k):
        raise RuntimeError("out of cheese")
        yield  # pragma: no cover

    monkeypatch.setattr(LazyTrace, "iter_thumbnails", boom)
    w = AttentionMatrix(lt, thumb_size=8)
    for _ in range(200):
        if w.error:
            break
        import time

        time.sleep(0.01)
    assert w.error == "thumbnails: RuntimeError: out of cheese"
    assert not w.wait_thumbnails(0)


def test_attention_trace_matrix_is_unchanged():
    tr = make_trace(2, 3, 40)
    w = AttentionMatrix(tr, thumb_size=8)
    assert set(w.thumbs) == {"maps", "scales"} and w.thumbs_pending == 0 and w.wait_thumbnails(0)
    assert isinstance(tr, AttentionTrace)
