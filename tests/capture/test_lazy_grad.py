"""The streamed gradient-rollout route of trace_lazy(grad_rollout=True) against the in-memory
method: route_graph(aw.trace(..., gradients=True), "grad_rollout", position) on the same ids,
target and position, on small config-built models (GPT-2 base model, Llama-style GQA LM)."""

from __future__ import annotations

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets.flows.route import route_from_layers, route_graph
from attn_widgets.flows.streamed import StreamedRoute, streamed_route_from_layers

EXACT = ("layer", "query", "key", "needed", "capped")
CLOSE = ("weight", "carry", "node", "layer_total", "dropped", "total")
IDS = np.random.default_rng(0).integers(1000, 20000, 40)


def assert_same_route(got, ref, rtol=2e-6):
    assert got.method == ref.method and got.token == ref.token and got.keep == ref.keep
    for f in EXACT:
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)
    for f in CLOSE:
        a, b = getattr(got, f), getattr(ref, f)
        assert a.shape == b.shape, f
        # float32 maps and gradients, recomputed vs captured: relative to the field's scale
        # (dropped: to the layer totals it is a remainder of)
        scale = float(np.abs(ref.layer_total if f == "dropped" else b).max())
        np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(scale, 1e-300), err_msg=f)


@pytest.fixture(scope="module")
def gpt2():
    from attn_widgets.capture import long_context_model

    return long_context_model("gpt2", n_layer=3, n_head=4, n_embd=32, n_positions=64)


@pytest.fixture(scope="module")
def llama_gqa():
    import torch
    import transformers as T

    config = T.LlamaConfig(
        vocab_size=30522, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
    )
    torch.manual_seed(0)
    return T.LlamaForCausalLM(config).eval()


# -- the streamed walk itself (numpy, no model) -------------------------------------------------


def _mats(seed=1, L=4, T=30):
    rng = np.random.default_rng(seed)
    m = rng.random((L, T, T)) ** 4
    m[m < 0.3] = 0.0
    return m * np.tri(T)[None], np.ones((L, T))


@pytest.mark.parametrize("token", [29, 11])
def test_streamed_walk_equals_route_from_layers(token):
    mats, carry = _mats()
    sr = streamed_route_from_layers(mats, token, carry=carry, keep_edges=150, method="grad_rollout")
    for keep in (0.3, 0.5, 0.8, 0.95, 1.0):
        for cap in (None, 20, 400):
            ref = route_from_layers(mats, token, carry=carry, keep=keep, max_edges_per_layer=cap, method="grad_rollout")
            assert_same_route(sr.route(keep, cap), ref, rtol=1e-12)
    needed, exact = sr.needed(0.8)
    assert exact.all()


def test_streamed_walk_beyond_the_stored_edges_is_capped():
    mats, carry = _mats()
    sr = streamed_route_from_layers(mats, 29, carry=carry, keep_edges=10)
    for keep in (0.5, 0.8, 0.95):
        ref = route_from_layers(mats, 29, carry=carry, keep=keep, max_edges_per_layer=None)
        got = sr.route(keep, None)
        over = ref.needed > 10
        assert over.any()
        np.testing.assert_array_equal(got.capped, over)  # stored edges exhausted: capped
        np.testing.assert_allclose(got.node, ref.node, rtol=1e-12)
        np.testing.assert_allclose(got.layer_total, ref.layer_total, rtol=1e-12)
        # edges kept are the stored (strongest) prefix, and dropped accounts for the rest
        for layer in range(ref.n_layers):
            g = got.layer == layer
            r = ref.layer == layer
            n = int(g.sum())
            assert n == min(ref.needed[layer], 10)
            np.testing.assert_allclose(got.weight[g], ref.weight[r][:n], rtol=1e-12)
        np.testing.assert_allclose(got.dropped + np.array([got.weight[got.layer == i].sum() for i in range(4)]),
                                   ref.layer_total, rtol=1e-12)
        # needed beyond the stored edges: from the histogram, within its 2**-7 bins
        est, exact = sr.needed(keep)
        np.testing.assert_array_equal(exact, ~over)
        np.testing.assert_array_equal(est[~over], ref.needed[~over])
        assert (np.abs(est - ref.needed) <= np.ceil(ref.needed / 128) + 1).all()


# -- the capture: streamed through the backward pass ---------------------------------------------


@pytest.mark.parametrize("position", [None, 17])
def test_gpt2_base_model_route_equals_in_memory(gpt2, position):
    model, tok = gpt2
    lz = aw.trace_lazy(model, tok, IDS, grad_rollout=True, position=position)
    route = lz.grad_route
    assert isinstance(route, StreamedRoute) and route.method == "grad_rollout"
    pos = len(IDS) - 1 if position is None else position
    assert route.position == pos
    tr = aw.trace(model, tok, IDS, gradients=True, position=pos)
    assert route.target == tr.target == "norm of the mean-pooled last hidden state"
    for keep in (0.5, 0.8, 1.0):
        assert_same_route(route.route(keep), route_graph(tr, "grad_rollout", pos, keep=keep))
    # uncapped: every edge keep=1 needs is stored (keep_edges=400 > the layers' edge counts)
    full = route_graph(tr, "grad_rollout", pos, keep=0.8, max_edges_per_layer=None)
    assert_same_route(route.route(0.8, max_edges_per_layer=None), full)
    # the maps are those of a plain lazy capture
    plain = aw.trace_lazy(model, tok, IDS)
    np.testing.assert_array_equal(lz.head_map(2, "mean"), plain.head_map(2, "mean"))
    assert plain.grad_route is None


@pytest.mark.parametrize("checkpoint", [True, False])
def test_llama_gqa_logit_target_route_equals_in_memory(llama_gqa, gpt2, checkpoint):
    tok = gpt2[1]
    lz = aw.trace_lazy(llama_gqa, tok, IDS, grad_rollout=True, position=-15, checkpoint=checkpoint)
    assert lz.n_kv_heads == 2 and lz.n_heads == 6
    pos = len(IDS) - 15
    tr = aw.trace(llama_gqa, tok, IDS, gradients=True, position=pos)
    assert lz.grad_route.position == pos
    assert lz.grad_route.target == tr.target and tr.target.startswith("logit of predicted next token")
    for keep in (0.5, 0.8, 1.0):
        assert_same_route(lz.grad_route.route(keep), route_graph(tr, "grad_rollout", pos, keep=keep))


def test_float16_storage_walks_the_float32_attention(gpt2):
    model, tok = gpt2
    lz = aw.trace_lazy(model, tok, IDS, grad_rollout=True, dtype="float16")
    assert lz.dtype == "float16"
    tr = aw.trace(model, tok, IDS, gradients=True)
    assert_same_route(lz.grad_route.route(0.8), route_graph(tr, "grad_rollout", len(IDS) - 1, keep=0.8))


def test_int_and_callable_targets(llama_gqa, gpt2):
    tok = gpt2[1]
    for target in (4242, lambda out: out.logits[0, 20, 77] - out.logits[0, 20, 78]):
        lz = aw.trace_lazy(llama_gqa, tok, IDS, grad_rollout=True, target=target, position=20)
        tr = aw.trace(llama_gqa, tok, IDS, target, gradients=True, position=20)
        assert lz.grad_route.target == tr.target
        assert_same_route(lz.grad_route.route(0.8), route_graph(tr, "grad_rollout", 20, keep=0.8))


def _small_model(kind):
    import torch
    import transformers as T

    from attn_widgets.capture import long_context_model

    if kind == "gpt2_1head":  # one head: some keys get relu(G * A) = 0, the route skips rows
        return long_context_model("gpt2", n_layer=4, n_head=1, n_embd=16, n_positions=64)[0]
    if kind == "bert":  # bidirectional
        return long_context_model("bert", n_layer=3, n_head=4, n_embd=32, n_positions=64)[0]
    # a sliding window (a banded causal mask, recorded as an explicit mask)
    config = T.MistralConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             pad_token_id=0, sliding_window=6)
    torch.manual_seed(0)
    return T.MistralForCausalLM(config).eval()


@pytest.mark.parametrize("kind", ["gpt2_1head", "bert", "mistral_window"])
@pytest.mark.parametrize("rows_per_block", [None, 3])
def test_masks_skipped_rows_and_row_blocks(gpt2, kind, rows_per_block, monkeypatch):
    import attn_widgets.capture.lazy as capture_lazy

    tok = gpt2[1]
    model = _small_model(kind)
    if rows_per_block is not None:  # many row blocks: block offsets, the top-edge pool across blocks
        heads = model.config.num_attention_heads
        monkeypatch.setattr(capture_lazy, "WALK_BLOCK_VALUES", rows_per_block * heads * len(IDS))
    pos = 25
    lz = aw.trace_lazy(model, tok, IDS, grad_rollout=True, position=pos, keep_edges=30)
    if kind == "mistral_window":
        assert any(m is not None for m in lz.masks)  # the banded mask path of the kernel
    tr = aw.trace(model, tok, IDS, gradients=True, position=pos)
    assert lz.grad_route.target == tr.target
    for keep in (0.5, 0.8, 1.0):
        # a cap of keep_edges keeps every edge the stored top 30 can give: exact but for
        # `needed` beyond 30 (estimated), compared where it is exact
        got = lz.grad_route.route(keep, max_edges_per_layer=30)
        ref = route_graph(tr, "grad_rollout", pos, keep=keep, max_edges_per_layer=30)
        _, exact = lz.grad_route.needed(keep)
        np.testing.assert_array_equal(got.needed[exact], ref.needed[exact])
        got = type(got)(**{**got.__dict__, "needed": ref.needed})
        assert_same_route(got, ref)
    if kind == "gpt2_1head":
        node = lz.grad_route.route().node
        reached = [np.flatnonzero(node[i]) for i in range(1, 4)]
        assert any(r.size and r[-1] - r[0] + 1 != r.size for r in reached)  # rows with gaps


def test_called_under_no_grad_or_inference_mode(gpt2):
    import torch

    model, tok = gpt2
    ref = aw.trace_lazy(model, tok, IDS, grad_rollout=True).grad_route.route(0.8)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            got = aw.trace_lazy(model, tok, IDS, grad_rollout=True).grad_route.route(0.8)
        assert_same_route(got, ref, rtol=1e-12)


def test_frozen_parameters_still_give_the_route(gpt2):
    import copy

    model, tok = gpt2
    frozen = copy.deepcopy(model).requires_grad_(False)
    lz = aw.trace_lazy(frozen, tok, IDS, grad_rollout=True)
    tr = aw.trace(model, tok, IDS, gradients=True)
    assert_same_route(lz.grad_route.route(0.8), route_graph(tr, "grad_rollout", len(IDS) - 1, keep=0.8))


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [40, -41, 1000])
def test_position_out_of_range(gpt2, position):
    model, tok = gpt2
    with pytest.raises(ValueError, match=r"position: expected -40 <= position < 40.*received"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True, position=position)


def test_bad_arguments(gpt2):
    model, tok = gpt2
    with pytest.raises(TypeError, match="grad_rollout: expected True or False"):
        aw.trace_lazy(model, tok, IDS, grad_rollout="yes")
    with pytest.raises(ValueError, match="position: only used with grad_rollout=True"):
        aw.trace_lazy(model, tok, IDS, position=3)
    with pytest.raises(ValueError, match="target: only used with grad_rollout=True"):
        aw.trace_lazy(model, tok, IDS, target=3)
    with pytest.raises(TypeError, match="position: expected an int"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True, position=2.0)
    with pytest.raises(TypeError, match="target: expected None, an int"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True, target="cat")
    with pytest.raises(ValueError, match="keep_edges: expected an int >= 1"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True, keep_edges=0)
    with pytest.raises(ValueError, match="target: an integer target needs a model with logits"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True, target=5)


def test_model_without_gradients(gpt2):
    import torch

    from attn_widgets.capture import long_context_model

    tok = gpt2[1]
    with torch.inference_mode():  # parameters are inference tensors: no backward through them
        model, _ = long_context_model("gpt2", n_layer=2, n_head=2, n_embd=16, n_positions=64)
    with pytest.raises(ValueError, match=r"model: its parameters were created under torch.inference_mode\(\)"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True)
    assert aw.trace_lazy(model, tok, IDS).grad_route is None  # without gradients it captures


def test_forward_without_autograd_graph(gpt2, monkeypatch):
    import torch

    model, tok = gpt2
    forward = type(model).forward

    def no_grad_forward(self, *args, **kwargs):
        with torch.no_grad():
            return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", no_grad_forward)
    with pytest.raises(ValueError, match="model: the attention outputs of GPT2Model are not in the autograd graph"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True)


@pytest.mark.parametrize("block_rows", [1, 4, 50])
def test_top_edges_across_many_blocks(block_rows):
    # dense, no order by row: the top-edge pool is refilled and thresholded block after block
    rng = np.random.default_rng(5)
    mats = rng.random((3, 50, 50))
    carry = np.ones((3, 50))
    sr = streamed_route_from_layers(mats, 7, carry=carry, keep_edges=12, block_rows=block_rows)
    for keep in (0.01, 0.5, 1.0):
        ref = route_from_layers(mats, 7, carry=carry, keep=keep, max_edges_per_layer=12)
        got = sr.route(keep, max_edges_per_layer=12)
        _, exact = sr.needed(keep)
        np.testing.assert_array_equal(got.needed[exact], ref.needed[exact])
        assert_same_route(type(got)(**{**got.__dict__, "needed": ref.needed}), ref, rtol=1e-12)


@pytest.mark.parametrize("block_rows", [1, 3, 40])
def test_layer_accumulator_keeps_the_strongest_edges(block_rows):
    from attn_widgets.flows.streamed import LayerAccumulator

    rng = np.random.default_rng(block_rows)
    w = rng.random((40, 40))
    w[rng.random((40, 40)) < 0.2] = 0.5  # ties: the lowest (query, key) wins, as in route_from_layers
    acc = LayerAccumulator(15)
    for r0 in range(0, 40, block_rows):
        acc.offer_dense(np.arange(r0, min(40, r0 + block_rows)), w[r0:r0 + block_rows])
    acc.finish(w.sum(axis=0), np.zeros(40), int((w > 0).sum()), np.zeros(1, np.int64), np.zeros(1))
    order = np.lexsort((np.tile(np.arange(40), 40), np.repeat(np.arange(40), 40), -w.ravel()))[:15]
    res = acc.result
    np.testing.assert_array_equal(res["query"] * 40 + res["key"], order)
    np.testing.assert_array_equal(res["weight"], w.ravel()[order])


def test_needed_estimate_inside_one_histogram_bin():
    # every edge weight in one 2**-7 bin: the count comes from the bin's mean, not its size
    rng = np.random.default_rng(3)
    t = 40
    mats = (1.0 + rng.random((2, t, t)) * 2**-9) * np.tri(t)[None]
    carry = np.ones((2, t))
    sr = streamed_route_from_layers(mats, t - 1, carry=carry, keep_edges=5)
    for keep in (0.3, 0.5, 0.9):
        ref = route_from_layers(mats, t - 1, carry=carry, keep=keep, max_edges_per_layer=None)
        est, exact = sr.needed(keep)
        assert not exact.any()
        assert (np.abs(est - ref.needed) <= 1 + ref.needed * 2**-7).all(), (est, ref.needed)


# -- the walk's worker thread: failures surface, nothing is left behind ---------------------------


def _walk_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("attn_widgets-grad-walk") and t.is_alive()]


def _assert_restored(model):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import attn_widgets.capture.lazy as capture_lazy

    assert model.config._attn_implementation == "sdpa"
    assert not isinstance(ALL_ATTENTION_FUNCTIONS["sdpa"], capture_lazy._Recorder)
    assert not any("forward" in m.__dict__ for m in model.modules())  # checkpointing unpatched
    assert not _walk_threads()


class Boom(Exception):
    pass


@pytest.mark.parametrize("pipeline", [True, False])
@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("bad_layer", [1, 0])  # 0: the last step, after the backward's hooks
def test_a_failing_walk_step_surfaces_and_restores_the_model(gpt2, monkeypatch, pipeline, error, bad_layer):
    import attn_widgets.capture.lazy as capture_lazy

    model, tok = gpt2
    ref = aw.trace_lazy(model, tok, IDS, grad_rollout=True).grad_route.route(0.8)
    monkeypatch.setattr(capture_lazy, "WALK_PIPELINE", pipeline)
    walk_layer = capture_lazy._walk_layer
    walked = []

    def failing(builder, layer, *args, **kwargs):
        if layer == bad_layer:
            raise error("walk failed")
        walked.append(layer)
        return walk_layer(builder, layer, *args, **kwargs)

    monkeypatch.setattr(capture_lazy, "_walk_layer", failing)
    with pytest.raises(error, match="walk failed"):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True)
    assert walked == [2, 1][: 2 - bad_layer]
    _assert_restored(model)
    monkeypatch.setattr(capture_lazy, "_walk_layer", walk_layer)
    assert_same_route(aw.trace_lazy(model, tok, IDS, grad_rollout=True).grad_route.route(0.8), ref, rtol=1e-12)


def test_an_interrupted_backward_stops_the_walk_thread(gpt2, monkeypatch):
    import attn_widgets.capture.lazy as capture_lazy

    model, tok = gpt2
    monkeypatch.setattr(capture_lazy, "WALK_PIPELINE", True)
    on_grad = capture_lazy._GradWalk.on_grad
    alive = []

    def interrupted(self, layer, grad):
        if layer == 1:  # Ctrl-C in the backward, while the worker has layer 2
            alive.append(bool(_walk_threads()))
            raise KeyboardInterrupt
        return on_grad(self, layer, grad)

    monkeypatch.setattr(capture_lazy._GradWalk, "on_grad", interrupted)
    with pytest.raises(KeyboardInterrupt):
        aw.trace_lazy(model, tok, IDS, grad_rollout=True)
    assert alive == [True]  # the walk did run on its own thread
    _assert_restored(model)
