"""Every model kind in the panels: cross-attention (non-square) traces in AttentionMatrix and
AttentionHeatmap, clear refusals from the panels that need square maps, and vision
transformer traces whose heatmap carries the image and its patch grid.

Small traces come from the real capture functions (tiny configs, random weights, nothing
downloaded) and from synthetic arrays.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import traitlets
from ipywidgets.widgets.widget import _remove_buffers

import attn_widgets as aw
from attn_widgets import AttentionHeatmap, AttentionMatrix, AttentionTrace
from attn_widgets._wire import colour_tops, maxpool2d, maxpool_axes, unpack
from attn_widgets.widgets import heatmap as heatmap_mod

from .test_state import F16, Sent, custom, update

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_cross(l=2, h=3, tq=4, tk=6, seed=0, **kwargs) -> AttentionTrace:
    rng = np.random.default_rng(seed)
    a = rng.random((l, h, tq, tk)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    return AttentionTrace(
        tokens=[f"q{i}" for i in range(tq)], key_tokens=[f"k{j}" for j in range(tk)], attentions=a, **kwargs
    )


def make_vision(rows=2, cols=3, n_special=1, image=None, seed=0, **meta) -> AttentionTrace:
    n = n_special + rows * cols
    rng = np.random.default_rng(seed)
    a = rng.random((2, 2, n, n)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    if image is None:
        image = rng.integers(0, 256, (rows * 8, cols * 8, 3), dtype=np.uint8)
    tokens = ["[CLS]", "[DIST]"][:n_special] + [f"p({r},{c})" for r in range(rows) for c in range(cols)]
    mask = np.arange(n) < n_special
    return AttentionTrace(
        tokens=tokens, attentions=a, special_mask=mask,
        meta={"kind": "vision", "patch_grid": (rows, cols), "image": image, "n_special": n_special, **meta},
    )


# -- real captures (tiny configs, random weights) ---------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from attn_widgets.capture.demo import _minilm_path

    return AutoTokenizer.from_pretrained(_minilm_path())


@pytest.fixture(scope="module")
def s2s(tokenizer):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
        num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102,
    )).eval()
    return aw.trace_seq2seq(t5, tokenizer, "the cat sat on the mat", target_text="le chat est assis")


@pytest.fixture(scope="module")
def vit_trace():
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=5,
    )).eval()
    yy, xx = np.mgrid[0:32, 0:32]
    image = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], -1).astype(np.uint8)
    pixels = torch.tensor(image / 127.5 - 1, dtype=torch.float32).permute(2, 0, 1)
    return aw.trace_image(vit, pixels, image=image), image


# -- cross-attention: the heatmap --------------------------------------------------------------


def test_heatmap_of_a_real_cross_trace(s2s):
    cross = s2s.cross
    tq, tk = cross.n_tokens, cross.n_keys
    assert tq != tk  # the test means something only for a non-square map
    w = AttentionHeatmap(cross, layer=1, head=2, token=tq - 1)
    assert w.tokens == list(s2s.decoder.tokens) and w.key_tokens == list(s2s.encoder.tokens)
    assert w.is_cross and w.key_token is None and w.direction == "from"
    init = unpack(w.initial_map)
    assert init.shape == (tq, tk) and "step" not in w.initial_map
    np.testing.assert_allclose(init, cross.attentions[1, 2], **F16)
    # "from": the query token's row over the KEY tokens.
    np.testing.assert_allclose(w.strip_values(), cross.attentions[1, 2, tq - 1])
    assert w.strip_subject() == tq - 1
    # "to": the key token's column over the QUERY tokens; nothing until a key is selected.
    w.direction = "to"
    assert w.strip_subject() is None and w.strip_values() is None
    w.key_token = tk - 2
    np.testing.assert_allclose(w.strip_values(), cross.attentions[1, 2, :, tk - 2])
    assert w.head_map().shape == (tq, tk)
    svg = w.to_svg()
    assert svg.startswith("<?xml") and "attention to key" in svg


def test_cross_get_map_and_tiles_are_non_square():
    tr = make_cross(tq=4, tk=6)
    w = AttentionHeatmap(tr)
    sent = Sent(w)
    custom(w, {"type": "get_map", "id": 1, "layer": 1, "head": "mean"})
    msg, bufs = sent.last
    assert msg["type"] == "map" and msg["shape"] == [4, 6]
    np.testing.assert_allclose(np.frombuffer(bufs[0], "<f2").reshape(4, 6), tr.attentions[1].mean(0), **F16)
    custom(w, {"type": "get_tile", "id": 2, "layer": 0, "head": 1, "r0": 0, "r1": 4, "c0": 5, "c1": 6})
    msg, bufs = sent.last
    assert msg["type"] == "tile" and msg["shape"] == [4, 1]  # a key's column: the "to" strip
    np.testing.assert_allclose(np.frombuffer(bufs[0], "<f2")[:], tr.attentions[0, 1, :, 5], **F16)
    custom(w, {"type": "get_tile", "id": 3, "layer": 0, "head": 1, "r0": 0, "r1": 4, "c0": 0, "c1": 7})
    msg, _ = sent.last
    assert msg["type"] == "error" and "c1 <= 6" in msg["message"]
    w.zoom = [1, 3, 2, 6]
    assert w.zoom == [1, 3, 2, 6]
    with pytest.raises(traitlets.TraitError, match="c1 <= 6"):
        w.zoom = [0, 4, 0, 7]


def test_large_cross_maps_are_pooled_like_tiles():
    tr = make_cross(l=1, h=1, tq=20, tk=40)
    w = AttentionHeatmap(tr, overview_size=16)  # 800 cells > 16 ** 2: pooled by ceil(40 / 16) = 3
    assert w.map_step() == 3
    assert w.initial_map["step"] == 3 and w.initial_map["shape"] == [7, 14]
    w2 = AttentionHeatmap(tr, overview_size=32)  # 800 <= 1024 cells: whole
    assert w2.map_step() == 1 and w2.initial_map["shape"] == [20, 40]


def test_cross_selection_validates_each_axis():
    tr = make_cross(tq=4, tk=6)
    w = AttentionHeatmap(tr)
    w.token = 3
    with pytest.raises(traitlets.TraitError, match=r"token < 4 \(a query token: a row\)"):
        w.token = 4  # a key index is not a query index
    w.key_token = 5
    with pytest.raises(traitlets.TraitError, match=r"key_token < 6 \(a key token: a column\)"):
        w.key_token = 6
    with pytest.raises(traitlets.TraitError, match="key_token"):
        w.key_token = True
    # select(): every value validated before any is set
    with pytest.raises(traitlets.TraitError):
        w.select(token=0, key_token=9)
    assert (w.token, w.key_token) == (3, 5)
    w.select(token=1, key_token=2)
    assert (w.token, w.key_token) == (1, 2)
    with pytest.raises(TypeError, match="unknown field"):
        w.select(key=1)
    # The view sends both back (a cell click) and the key alone with direction "to" (a key label).
    update(w, {"key_token": 4, "direction": "to"})
    assert (w.key_token, w.direction, w.token) == (4, "to", 1)
    np.testing.assert_allclose(w.strip_values(), tr.attentions[0, 0, :, 4])
    w2 = AttentionHeatmap(tr, key_token=0, direction="to")
    assert w2.strip_subject() == 0
    with pytest.raises(traitlets.TraitError, match="key_token < 6"):
        AttentionHeatmap(tr, key_token=6)


def test_square_traces_keep_their_behaviour(synth_square):
    w = AttentionHeatmap(synth_square, token=2, direction="to")
    assert w.key_tokens == [] and not w.is_cross and w.key_token is None
    np.testing.assert_allclose(w.strip_values(), synth_square.attentions[0, 0, :, 2])
    with pytest.raises(traitlets.TraitError, match="key_token: only for cross-attention"):
        w.key_token = 1
    with pytest.raises(traitlets.TraitError, match="only for cross-attention"):
        AttentionHeatmap(synth_square, key_token=0)
    st = w.get_state()
    assert st["key_tokens"] == [] and st["image"] == {} and st["patch_grid"] == [] and st["patch_offset"] == 0
    assert AttentionMatrix(synth_square).get_state()["key_tokens"] == []


@pytest.fixture()
def synth_square():
    rng = np.random.default_rng(3)
    a = rng.random((2, 2, 5, 5)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    return AttentionTrace(tokens=[f"t{i}" for i in range(5)], attentions=a)


def test_cross_heatmap_links_with_the_decoder_by_query_token(s2s):
    dec = AttentionHeatmap(s2s.decoder)
    cross = AttentionHeatmap(s2s.cross)
    aw.link(dec, cross, names=("token",))
    dec.token = 2
    assert cross.token == 2  # `token` is a decoder (query) index in both
    cross.token = 1
    assert dec.token == 1
    with pytest.raises(ValueError, match="different tokens"):
        aw.link(AttentionHeatmap(s2s.encoder), cross, names=("token",))


def test_cross_state_syncs_key_tokens_and_exports(tmp_path):
    tr = make_cross()
    w = AttentionHeatmap(tr, token=1, key_token=3)
    st = w.get_state()
    assert st["key_tokens"] == list(tr.key_tokens) and st["key_token"] == 3
    path = w.save_html(tmp_path / "cross.html")
    text = path.read_text()
    assert '"key_tokens"' in text and "k5" in text


# -- cross-attention: the matrix -----------------------------------------------------------------


def test_maxpool_axes_pools_each_axis_on_its_own():
    rng = np.random.default_rng(1)
    sq = rng.random((2, 3, 50, 50))
    np.testing.assert_array_equal(maxpool_axes(sq, 16), maxpool2d(sq, 16))
    a = rng.random((2, 3, 5, 100)).astype(np.float32)
    p = maxpool_axes(a, 48)  # rows stay (5 <= 48), keys pooled by ceil(100 / 48) = 3
    assert p.shape == (2, 3, 5, 34)
    for j in range(34):
        np.testing.assert_array_equal(p[..., j], a[..., 3 * j : 3 * j + 3].max(-1))
    assert maxpool_axes(a, 200) is a or np.shares_memory(maxpool_axes(a, 200), a)
    b = rng.random((70, 9))
    q = maxpool_axes(b, 8)  # ceil(70/8) = 9 -> 8 rows; ceil(9/8) = 2 -> 5 cols
    assert q.shape == (8, 5)
    assert q[0, 0] == b[:9, :2].max() and q[-1, -1] == b[63:, 8:].max()
    with pytest.raises(ValueError, match="size"):
        maxpool_axes(b, 0)


def test_matrix_of_a_cross_trace(s2s):
    cross = s2s.cross
    m = AttentionMatrix(cross)
    maps = unpack(m.thumbs["maps"])
    assert maps.shape == (cross.n_layers, cross.n_heads, cross.n_tokens, cross.n_keys)
    assert m.key_tokens == list(cross.key_tokens)
    # Per-head uint8 scaling against each head's colour top, as for square maps (the default
    # p99.5 cap of its nonzero pixels; cap=100: the head's max).
    scales = unpack(m.thumbs["scales"])
    np.testing.assert_allclose(scales, colour_tops(cross.attentions, 99.5), rtol=1e-6)
    assert (maps.max(axis=(-2, -1)) == 255).all()
    exact = AttentionMatrix(cross, cap=100)
    np.testing.assert_allclose(unpack(exact.thumbs["scales"]), cross.attentions.max(axis=(-2, -1)), rtol=1e-6)
    # Figures: the thumbnails are stretched to square cells, as on the panel.
    img = m._png_array()
    assert img.ndim == 3 and img.shape[2] == 3
    assert m.to_svg().count('class="aw-cell"') == cross.n_layers * cross.n_heads


def test_matrix_thumbnails_of_a_long_source_keep_short_axes():
    tr = make_cross(l=1, h=2, tq=3, tk=100)
    m = AttentionMatrix(tr, thumb_size=16, cap=100)
    maps = unpack(m.thumbs["maps"])
    assert maps.shape == (1, 2, 3, 15)  # queries untouched, keys max-pooled by 7
    pooled = maxpool_axes(tr.attentions, 16)
    np.testing.assert_array_equal(maps, np.rint(pooled / pooled.max(axis=(-2, -1), keepdims=True) * 255))


# -- refusals: panels that need square self-attention maps --------------------------------------


def test_flow_summary_and_explorer_refuse_cross_traces(s2s):
    cross = s2s.cross
    with pytest.raises(ValueError, match=r"AttentionFlow needs square self-attention maps.*cross-attention"):
        aw.AttentionFlow(cross)
    with pytest.raises(ValueError, match=r"compare: AttentionFlow needs square"):
        aw.AttentionFlow(s2s.decoder, compare=cross)
    with pytest.raises(ValueError, match=r"HeadSummary needs a self-attention trace.*cross-attention"):
        aw.HeadSummary(cross)
    with pytest.raises(ValueError, match=r"Explorer needs a self-attention trace.*s2s.encoder"):
        aw.Explorer(cross)
    # The square stacks of the same pass work everywhere.
    aw.Explorer(s2s.encoder)
    aw.AttentionFlow(s2s.decoder)


# -- vision transformers --------------------------------------------------------------------------


def test_vit_heatmap_carries_the_image_and_the_grid(vit_trace):
    tr, image = vit_trace
    w = AttentionHeatmap(tr, token=0)
    assert w.patch_grid == [4, 4] and w.patch_offset == 1
    img = unpack(w.image)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    np.testing.assert_array_equal(img, image)
    # The image crosses as one binary buffer, never as JSON numbers.
    _state, buffer_paths, buffers = _remove_buffers(w.get_state())
    assert ["image", "data"] in buffer_paths
    assert sum(len(b) for b, p in zip(buffers, buffer_paths) if p[0] == "image") == 32 * 32 * 3
    # The strip values are what the overlay shows over the 16 patch tokens.
    vals = w.strip_values()
    np.testing.assert_allclose(vals, tr.attentions[0, 0, 0])
    w.token = 1 + 2 * 4 + 3  # patch (2, 3), as a click on it selects
    assert tr.tokens[w.token] == "p(2,3)"
    # Vision traces are not for other panels to carry.
    assert "image" not in AttentionMatrix(tr).get_state()


def test_synthetic_vision_meta_conversions():
    w = AttentionHeatmap(make_vision(rows=2, cols=3, image=np.random.default_rng(0).random((16, 24))))
    img = unpack(w.image)
    assert img.shape == (16, 24, 3) and img.dtype == np.uint8  # grey float 0..1 -> RGB uint8
    assert (img[..., 0] == img[..., 1]).all()
    # The pixels past the last whole patch were never seen by the model: cropped.
    w = AttentionHeatmap(make_vision(rows=2, cols=3, image=np.zeros((19, 30, 4), np.uint8), patch_size=(8, 8)))
    assert unpack(w.image).shape == (16, 24, 3)
    # Two special tokens ([CLS], [DIST]) before the patches.
    w = AttentionHeatmap(make_vision(rows=2, cols=2, n_special=2))
    assert w.patch_offset == 2 and w.patch_grid == [2, 2]


def test_large_images_are_subsampled(monkeypatch):
    monkeypatch.setattr(heatmap_mod, "MAX_IMAGE_SIDE", 32)
    w = AttentionHeatmap(make_vision(rows=2, cols=2, image=np.zeros((100, 64, 3), np.uint8)))
    assert unpack(w.image).shape == (25, 16, 3)


def test_vision_needs_a_grid_that_matches_the_tokens():
    tr = make_vision(rows=2, cols=3)  # 1 + 6 tokens
    img = np.zeros((16, 24, 3), np.uint8)
    bad = AttentionTrace(tokens=tr.tokens, attentions=tr.attentions,
                         meta={"patch_grid": (2, 3), "image": img, "n_special": 2})
    with pytest.raises(ValueError, match=r"2x3 grid after 2 special token\(s\) does not match the trace's 7 tokens"):
        AttentionHeatmap(bad)
    with pytest.raises(ValueError, match=r"meta\['image'\]: expected an H x W x 3 image"):
        AttentionHeatmap(make_vision(rows=2, cols=3, image=np.zeros((4, 4, 5), np.uint8)))
    # No image (trace_image(..., image=False)) or no grid: a plain heatmap.
    for meta in ({"patch_grid": (2, 3), "image": None}, {"image": img}):
        w = AttentionHeatmap(AttentionTrace(tokens=tr.tokens, attentions=tr.attentions, meta=meta))
        assert w.image == {} and w.patch_grid == []
